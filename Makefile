# AgentWatch — `make run` (demo server) and `make test` (the whole suite) do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint migrate up web worker beat bench clean require-production

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py seed_demo
	@echo "Serving AgentWatch on http://$(HOST):$(PORT)/ (Ctrl-C stops it)"
	$(PY) manage.py runserver $(HOST):$(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run --verbosity 1

# Runs on the configuration the environment selects: embedded by default; PostgreSQL + Redis with a real
# Celery worker when DATABASE_URL and REDIS_URL are set (see .ci/run). PYTEST_ARGS narrows it.
test: lint
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m pytest $(PYTEST_ARGS)

# Production process set (needs DATABASE_URL and REDIS_URL): gunicorn, a Celery worker and Celery beat.
# Without REDIS_URL a worker and beat would start on an in-process broker no other process can reach, and
# without DATABASE_URL each would have its own SQLite file: refuse rather than run a set that does nothing.
require-production:
	@test -n "$$DATABASE_URL" || { echo "DATABASE_URL is not set: the production processes need PostgreSQL (see README, Production set-up)."; exit 1; }
	@test -n "$$REDIS_URL" || { echo "REDIS_URL is not set: the Celery worker and beat need Redis (see README, Production set-up)."; exit 1; }

up: require-production migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(VENV)/bin/honcho start -f Procfile

web: install
	$(VENV)/bin/gunicorn -c gunicorn.conf.py agentwatch_site.wsgi

# One worker for both queues; the Procfile runs one per queue (WORKER_QUEUES=celery, and =webhooks WORKER_NAME=webhooks)
# so a slow webhook receiver cannot delay recording.
WORKER_QUEUES ?= celery,webhooks
WORKER_NAME ?= celery
worker: require-production install
	$(VENV)/bin/celery -A agentwatch_site worker -Q $(WORKER_QUEUES) -n $(WORKER_NAME)@%h

# Beat's schedule file lives in AGENTWATCH_VAR_DIR (default var/, as for the embedded database).
beat: require-production install
	mkdir -p "$${AGENTWATCH_VAR_DIR:-var}"
	$(VENV)/bin/celery -A agentwatch_site beat --schedule "$${AGENTWATCH_VAR_DIR:-var}/celerybeat-schedule"

# Every benchmark in turn against the local PostgreSQL and Redis (needs wrk: apt-get install wrk). Long: pages
# and retention each generate 1,000,000 events. BENCH_ARGS=--write records the figures in bench/RESULTS.md.
BENCH_ARGS ?=
bench: install
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk"; exit 1; }
	$(PY) bench/ingest.py --worker-concurrency 2 $(BENCH_ARGS)
	$(PY) bench/budget_check.py $(BENCH_ARGS)
	$(PY) bench/pages.py $(BENCH_ARGS)
	$(PY) bench/retention.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var test-artifacts
