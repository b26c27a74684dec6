"""What an operator meets starting AgentWatch: configuration errors, process settings, logs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from agentwatch_site.celery import app as celery_app
from agentwatch_site.env import env_database_url, env_redis_url, redact_url
from tests.conftest import requires_production

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, url, message", [
    ("DATABASE_URL", "garbage", "it has no scheme"),
    ("DATABASE_URL", "mysqll://u@db/aw", "unknown scheme 'mysqll'"),
    ("DATABASE_URL", "postgres://aw:p@ss@db:port/aw", "cannot be parsed"),
    ("DATABASE_URL", "postgres://aw:secret@db:5432", "must name a database"),
    ("DATABASE_URL", "sqlite://", "must name a database"),
    ("REDIS_URL", "localhost:6379", "must start with redis://"),
    ("REDIS_URL", "redis://:secret@cache:six/0", "Port could not be cast"),
    ("REDIS_URL", "redis://cache:6379/twelve", "database number 'twelve'"),
    ("REDIS_URL", "redis:///0", "names no host"),
    ("REDIS_URL", "unix:///run/redis.sock", "cannot carry the Celery broker"),
])
def test_a_bad_database_or_redis_url_names_the_problem_and_hides_the_password(monkeypatch, name, url, message):
    read = env_database_url if name == "DATABASE_URL" else env_redis_url
    monkeypatch.setenv(name, url)
    with pytest.raises(ImproperlyConfigured, match=message) as raised:
        read(name)
    assert "secret" not in str(raised.value) and "p@ss" not in str(raised.value)


def test_a_good_database_url_parses(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", " postgres://aw:secret@db:5432/aw ")
    assert env_database_url("DATABASE_URL")["NAME"] == "aw"
    monkeypatch.delenv("DATABASE_URL")
    assert env_database_url("DATABASE_URL") is None


@pytest.mark.parametrize("url", ["redis://:secret@cache:6379/12", "rediss://cache/0"])
def test_a_good_redis_url_is_kept(monkeypatch, url):
    monkeypatch.setenv("REDIS_URL", url)
    assert env_redis_url("REDIS_URL") == url


def test_redact_url_hides_a_password_even_with_an_unescaped_at_sign():
    assert redact_url("postgres://aw:p@ss/w@db:5432/aw") == "postgres://aw:***@db:5432/aw"
    assert redact_url("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("postgres://aw@db/aw") == "postgres://aw@db/aw"


def gunicorn_check_config(**env_overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    return subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--check-config",
                           "agentwatch_site.wsgi"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("GUNICORN_WORKERS", "two", "GUNICORN_WORKERS must be an integer, got 'two'"),
    ("GUNICORN_BIND", "127.0.0.1:99999",
     "GUNICORN_BIND must be HOST:PORT with a port from 1 to 65535 (or unix:PATH), got '127.0.0.1:99999'"),
    ("GUNICORN_WORKER_CLASS", "nosuch",
     "GUNICORN_WORKER_CLASS 'nosuch' cannot be loaded (not a gunicorn worker class, or its package is not installed)"),
])
def test_a_bad_gunicorn_setting_stops_gunicorn_with_one_clear_line(name, value, message):
    result = gunicorn_check_config(**{name: value})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"gunicorn.conf.py: {message}"]


def test_empty_gunicorn_settings_mean_their_defaults(monkeypatch):
    """An empty GUNICORN_BIND bound nothing while workers crash-looped; an empty worker class or access log was a
    traceback."""
    import runpy

    empty = {"GUNICORN_BIND": "", "GUNICORN_WORKER_CLASS": "", "GUNICORN_ACCESSLOG": ""}
    result = gunicorn_check_config(**empty)
    assert result.returncode == 0, result.stderr
    for name, value in empty.items():
        monkeypatch.setenv(name, value)
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert (config["bind"], config["worker_class"], config["accesslog"]) == (["0.0.0.0:8000"], "sync", None)


def test_workers_and_beat_keep_reconnecting_through_a_long_redis_outage():
    # Celery's default gives up after 100 attempts (about 45 minutes): "Unrecoverable error", the worker exits.
    assert celery_app.conf.broker_connection_max_retries is None


def test_the_celery_worker_logs_json_at_log_level_like_the_web_processes():
    """LOG_LEVEL, not Celery's --loglevel (WARNING when not given, as here), sets what the worker logs."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    env.update(LOG_JSON="1", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "agentwatch_site", "worker", "--pool=solo",
                             "--without-gossip", "--without-mingle", "--without-heartbeat"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and ready is None:
            line = proc.stdout.readline()
            if not line:
                break
            if "ready." in line:
                ready = line
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert ready is not None, "the worker never logged that it is ready"
    record = json.loads(ready)
    assert record["logger"] == "celery.apps.worker" and record["request_id"] == "-"


@pytest.mark.parametrize("target", ["up", "worker", "beat"])
def test_make_refuses_to_start_the_production_processes_without_redis(target):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MAKEFLAGS")}
    env["DATABASE_URL"] = "postgres://aw@db:5432/aw"
    result = subprocess.run(["make", "--no-print-directory", target], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "REDIS_URL is not set" in result.stdout


FROZEN_IN_A_TRANSACTION = """
import sys, time
from django.db import connection, transaction
try:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(424242)")
        print("locked", flush=True)
        time.sleep(4)  # a frozen worker: no statement, the transaction open
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    print("still open", flush=True)
except Exception as exc:
    print("ended", type(exc).__name__, flush=True)
"""


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_a_process_frozen_in_a_transaction_loses_its_locks_after_the_idle_timeout():
    """A worker host that stops mid-transaction would hold a team's roll-up rows until its connection died, and
    every other worker recording for the team would wait. PostgreSQL ends the transaction after
    DB_IDLE_IN_TRANSACTION_TIMEOUT seconds of idleness (60 by default; 1 here)."""
    import psycopg

    from tests.conftest import database_url_for_subprocess, psycopg_params

    # The test database: an advisory lock is per database.
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DB_IDLE_IN_TRANSACTION_TIMEOUT": "1"}
    frozen = subprocess.Popen([sys.executable, "manage.py", "shell", "--no-imports", "-c", FROZEN_IN_A_TRANSACTION],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert frozen.stdout.readline().strip() == "locked"
        with psycopg.connect(**psycopg_params(), autocommit=True) as other:
            started = time.monotonic()
            while not other.execute("SELECT pg_try_advisory_lock(424242)").fetchone()[0]:
                assert time.monotonic() - started < 3.5, "the frozen transaction still holds its lock"
                time.sleep(0.1)
            other.execute("SELECT pg_advisory_unlock(424242)")
        assert frozen.stdout.readline().split()[0] == "ended"
    finally:
        frozen.kill()
        frozen.wait()


@requires_production
@pytest.mark.django_db(transaction=True)
def test_the_worker_logs_routine_tasks_at_debug_and_the_rest_at_info():
    """The sweep runs every 5 s and the recording wake-up after nearly every post: their "received"/"succeeded"
    lines were most of a worker's log at INFO. They are DEBUG lines now (shown with LOG_LEVEL=DEBUG, as here);
    other tasks' lines stay INFO."""
    from tests.conftest import WorkerProcess, subprocess_env
    from usage.tasks import detect_spend_spikes, sweep_unrecorded_events

    worker = WorkerProcess(name="debuglog", env=subprocess_env(LOG_LEVEL="DEBUG")).start()
    try:
        sweep_unrecorded_events.delay()
        detect_spend_spikes.delay()
        deadline = time.monotonic() + 30
        while True:
            lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
            done = {(r["level"], r["message"].split("[")[0]) for r in lines if "succeeded in" in r["message"]}
            if {("DEBUG", "Task usage.tasks.sweep_unrecorded_events"),
                    ("INFO", "Task usage.tasks.detect_spend_spikes")} <= done:
                break
            assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        worker.stop()
    received = {(r["level"], r["message"].split("[")[0]) for r in lines if r["message"].endswith("received")}
    assert {("DEBUG", "Task usage.tasks.sweep_unrecorded_events"),
            ("INFO", "Task usage.tasks.detect_spend_spikes")} <= received
