"""/readyz, the readiness probe: 503 only when this process cannot serve (the database is unreachable). Redis down
or workers lagging are reported but pass, while /healthz (monitoring, alerts) still turns 503 on them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[1]

REDIS_CLOSED_PORT = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_unreachable(settings):
    settings.REDIS_URL = REDIS_CLOSED_PORT
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": REDIS_CLOSED_PORT,
                                   "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}


@pytest.fixture
def database_unreachable():
    def refuse(execute, sql, params, many, context):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    with connection.execute_wrapper(refuse):
        yield


@pytest.mark.django_db
def test_readyz_is_200_without_auth_when_the_database_answers():
    response = Client().get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["ingest"] == "ok"
    assert "failed" not in body
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_stays_200_when_redis_is_unreachable_while_healthz_is_503(redis_unreachable):
    ready = Client().get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["status"] == "ok"
    assert ready.json()["checks"]["redis"] == "unavailable"  # reported, not failed
    health = Client().get("/healthz")
    assert health.status_code == 503
    assert health.json()["failed"] == ["redis"]


def test_readyz_stays_200_when_recording_lags_while_healthz_is_503(tenant, settings):
    from usage.models import UsageEvent

    settings.INGEST_LAG_THRESHOLD_SECONDS = 60
    UsageEvent.objects.create(tenant=tenant, event_id="stuck", model="gpt-4o", timestamp=timezone.now(),
                              received_at=timezone.now() - timezone.timedelta(seconds=120))
    ready = Client().get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"]["ingest"] == "lagging"
    assert ready.json()["checks"]["ingest_lag_seconds"] >= 120
    health = Client().get("/healthz")
    assert health.status_code == 503
    assert health.json()["failed"] == ["ingest"]


@pytest.mark.django_db
def test_readyz_is_503_naming_the_database_when_it_cannot_be_reached(database_unreachable, caplog):
    with caplog.at_level("WARNING", logger="agentwatch_site.views"):
        response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "unavailable"
    assert body["failed"] == ["database"]
    assert "no-store" in response["Cache-Control"]
    assert any("readyz database check failed" in r.getMessage() and "Connection refused" in r.getMessage()
               for r in caplog.records)


def test_readyz_is_answered_over_plain_http_with_https_on(tmp_path):
    """The orchestrator probes the process over plain HTTP: no redirect to HTTPS (pages are redirected)."""
    inherited = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env.update(HTTPS="1", AGENTWATCH_VAR_DIR=str(tmp_path))
    probe = "from django.test import Client; print([Client().get(p).status_code for p in ('/readyz', '/login/')])"
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", probe], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[200, 301]"
