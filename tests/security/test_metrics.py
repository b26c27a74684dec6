import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection
from django.test import Client

from agentwatch_site.env import env_ip_networks
from tests.conftest import PRODUCTION_MODE

ROOT = Path(__file__).resolve().parents[2]


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape() -> str:
    response = Client().get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def test_metrics_count_requests_and_events_accepted_recorded_and_rejected(tenant, telemetry_api, recording):
    before = scrape()
    assert telemetry_api.post("/v1/ingest", {"events": [{"model": "m"}, {"model": "m"}]},
                              format="json").status_code == 202
    assert telemetry_api.post("/v1/ingest", {"model": ""}, format="json").status_code == 400
    recording()
    after = scrape()
    assert metric(after, "agentwatch_events_accepted_total") - metric(before, "agentwatch_events_accepted_total") == 2
    assert metric(after, 'agentwatch_events_rejected_total{reason="invalid"}') - metric(
        before, 'agentwatch_events_rejected_total{reason="invalid"}') == 1
    assert 'agentwatch_http_requests_total{endpoint="v1/ingest",method="POST",status="202"}' in after
    assert "agentwatch_http_request_duration_seconds_bucket" in after
    assert "agentwatch_recording_queue_depth" in after and "agentwatch_ingest_lag_seconds" in after


@pytest.mark.django_db
def test_metrics_are_refused_from_other_addresses_without_the_token(settings):
    assert Client().get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    settings.METRICS_TOKEN = "s3cret-token"
    settings.METRICS_ALLOWED_IPS = []  # the default once a token is set (a same-host proxy makes every request local)
    assert Client().get("/metrics", REMOTE_ADDR="203.0.113.9",
                        HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="203.0.113.9",
                        HTTP_AUTHORIZATION="Bearer s3cret-tokeN").status_code == 403
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def allow(monkeypatch, settings, value: str) -> None:
    """METRICS_ALLOWED_IPS as the operator writes it, parsed as at start-up."""
    monkeypatch.setenv("METRICS_ALLOWED_IPS", value)
    settings.METRICS_ALLOWED_IPS = env_ip_networks("METRICS_ALLOWED_IPS", [])


@pytest.mark.django_db
@pytest.mark.parametrize("address, status", [
    ("10.1.2.3", 200), ("10.255.255.255", 200), ("::ffff:10.1.2.3", 200), ("fd00::5", 200), ("192.0.2.7", 200),
    ("11.0.0.1", 403), ("192.0.2.8", 403), ("fe80::1", 403), ("127.0.0.1", 403),
])
def test_an_address_inside_an_allowed_network_reads_metrics_without_a_token(monkeypatch, settings, address, status):
    allow(monkeypatch, settings, "10.0.0.0/8, fd00::/8,192.0.2.7")
    assert Client().get("/metrics", REMOTE_ADDR=address).status_code == status


@pytest.mark.django_db
def test_with_a_token_set_an_allowed_address_still_reads_metrics_without_it(monkeypatch, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    allow(monkeypatch, settings, "127.0.0.1,::1,10.0.0.0/8")
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    assert Client().get("/metrics", REMOTE_ADDR="203.0.113.9",
                        HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200


@pytest.mark.parametrize("value, message", [
    ("10.0.0.0/33", "METRICS_ALLOWED_IPS entry '10.0.0.0/33' is not an IP address or network"),
    ("127.0.0.1,localhost", "METRICS_ALLOWED_IPS entry 'localhost' is not an IP address or network"),
    ("10.0.0.1/8", "entry '10.0.0.1/8' is not an IP address or network (the network is 10.0.0.0/8)"),
    ("127.0.0.1:9090", "entry '127.0.0.1:9090'"),
    ("::1/129", "entry '::1/129'"),
])
def test_a_bad_allowed_address_is_refused_naming_the_entry(monkeypatch, value, message):
    monkeypatch.setenv("METRICS_ALLOWED_IPS", value)
    with pytest.raises(ImproperlyConfigured) as raised:
        env_ip_networks("METRICS_ALLOWED_IPS", [])
    assert message in str(raised.value)


def run_manage(*args, **env_overrides) -> subprocess.CompletedProcess:
    inherited = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "METRICS_TOKEN",
                 "METRICS_ALLOWED_IPS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_bad_metrics_allowed_ips_entry_stops_start_up_with_one_line():
    result = run_manage("check", METRICS_ALLOWED_IPS="127.0.0.1,10.0.0.0/33")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "manage.py: configuration error: METRICS_ALLOWED_IPS entry '10.0.0.0/33' is not an IP address or network: "
        "list addresses or CIDR networks, comma-separated (e.g. METRICS_ALLOWED_IPS=127.0.0.1,::1,10.0.0.0/8)"]


def test_with_a_token_and_no_allowed_addresses_set_only_the_token_opens_metrics():
    """Behind a reverse proxy on the same host every request comes from loopback: loopback must not be let in."""
    show = "from django.conf import settings; print([str(n) for n in settings.METRICS_ALLOWED_IPS])"
    assert run_manage("shell", "-c", show).stdout.strip().splitlines()[-1] == "['127.0.0.1/32', '::1/128']"
    assert run_manage("shell", "-c", show, METRICS_TOKEN="t").stdout.strip().splitlines()[-1] == "[]"


def test_events_set_aside_are_a_gauge_read_from_the_database(tenant, telemetry_api):
    """Whichever process answers the scrape (a gunicorn worker never sees the Celery worker's counters)."""
    from usage.models import UsageEvent

    assert telemetry_api.post("/v1/ingest", {"events": [{"model": "m"}, {"model": "m"}, {"model": "m"}]},
                              format="json").status_code == 202
    assert metric(scrape(), "agentwatch_quarantined_events ") == 0
    UsageEvent.objects.filter(pk__in=UsageEvent.objects.order_by("id").values("id")[:2]).update(
        record_error="CostOverflow: test")
    assert metric(scrape(), "agentwatch_quarantined_events ") == 2



def test_a_database_outage_shows_as_database_down_with_unknown_gauges_not_stale_ones(tenant, telemetry_api):
    from usage.models import UsageEvent

    assert telemetry_api.post("/v1/ingest", {"model": "m"}, format="json").status_code == 202
    UsageEvent.objects.update(record_error="CostOverflow: test")
    before = scrape()
    assert metric(before, "agentwatch_database_up ") == 1
    assert metric(before, "agentwatch_quarantined_events ") == 1

    def refuse(execute, sql, params, many, context):
        raise OperationalError("connection refused")

    with connection.execute_wrapper(refuse):
        during = scrape()
    assert metric(during, "agentwatch_database_up ") == 0
    for gauge in ("agentwatch_ingest_lag_seconds ", "agentwatch_recording_queue_depth ",
                  "agentwatch_quarantined_events "):
        assert math.isnan(metric(during, gauge)), gauge  # unknown, not last scrape's value nor 0
    assert "agentwatch_http_requests_total" in during  # the rest is still served
    after = scrape()
    assert metric(after, "agentwatch_database_up ") == 1
    assert metric(after, "agentwatch_ingest_lag_seconds ") >= 0


@pytest.mark.django_db
def test_redis_up_is_read_at_each_scrape(settings):
    if PRODUCTION_MODE:
        assert metric(scrape(), "agentwatch_redis_up ") == 1
    else:
        assert math.isnan(metric(scrape(), "agentwatch_redis_up "))  # no Redis in the embedded mode
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}
    assert metric(scrape(), "agentwatch_redis_up ") == 0
