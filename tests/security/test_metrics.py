import pytest
from django.test import Client


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
    assert Client().get("/metrics", REMOTE_ADDR="203.0.113.9",
                        HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_events_set_aside_are_a_gauge_read_from_the_database(tenant, telemetry_api):
    """Whichever process answers the scrape (a gunicorn worker never sees the Celery worker's counters)."""
    from usage.models import UsageEvent

    assert telemetry_api.post("/v1/ingest", {"events": [{"model": "m"}, {"model": "m"}, {"model": "m"}]},
                              format="json").status_code == 202
    assert metric(scrape(), "agentwatch_quarantined_events ") == 0
    UsageEvent.objects.filter(pk__in=UsageEvent.objects.order_by("id").values("id")[:2]).update(
        record_error="CostOverflow: test")
    assert metric(scrape(), "agentwatch_quarantined_events ") == 2

