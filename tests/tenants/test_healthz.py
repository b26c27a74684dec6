import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import PRODUCTION_MODE


@pytest.mark.django_db
def test_healthz_is_200_without_auth_when_dependencies_are_up():
    response = Client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["ingest_lag_seconds"] == 0
    if PRODUCTION_MODE:
        assert body["checks"]["redis"] == "ok"


@pytest.mark.django_db
def test_healthz_is_503_naming_redis_when_redis_is_unreachable(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"] == "unavailable"
    assert body["failed"] == ["redis"]


def test_healthz_is_503_when_recording_lags(tenant, settings):
    from usage.models import UsageEvent

    settings.INGEST_LAG_THRESHOLD_SECONDS = 60
    UsageEvent.objects.create(tenant=tenant, event_id="stuck", model="gpt-4o", timestamp=timezone.now(),
                              received_at=timezone.now() - timezone.timedelta(seconds=120))
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["ingest"] == "lagging"
    assert response.json()["checks"]["ingest_lag_seconds"] >= 120


def test_livez_is_200():
    assert Client().get("/livez").json() == {"status": "ok"}


@pytest.mark.django_db
def test_healthz_logs_why_a_dependency_failed(settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}
    with caplog.at_level("WARNING", logger="agentwatch_site.views"):
        assert Client().get("/healthz").status_code == 503
    line = next(r.getMessage() for r in caplog.records if "redis check failed" in r.getMessage())
    assert "127.0.0.1:1" in line  # where it tried, not just the exception's class
