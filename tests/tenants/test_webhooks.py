"""Webhooks against a local receiver: signatures, retries with backoff, the delivery log, SSRF refusal."""

import datetime
import hashlib
import hmac
import json
import time

import pytest
from django.utils import timezone

from tenants.models import WebhookDelivery, WebhookEndpoint
from tenants.tasks import retry_due_webhook_deliveries
from tenants.webhooks import webhook_deliveries_due, webhook_delivery_attempt, webhook_event_emit
from tests.conftest import PRODUCTION_MODE, WorkerProcess, requires_production, subprocess_env
from tests.fakes import WebhookReceiver
from usage.models import Anomaly, UsageEvent

# The same knobs for the embedded configuration (settings) and the worker process (environment).
KNOBS = {"WEBHOOK_RETRY_BASE_SECONDS": 0.05, "WEBHOOK_TIMEOUT_SECONDS": 0.5, "WEBHOOK_MAX_ATTEMPTS": 3}


@pytest.fixture
def allow_private(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def deliveries(settings, transactional_db, allow_private):
    """Deliveries are sent the way the configuration sends them: eagerly in-process (embedded, where a retry
    comes due at once), or by a real Celery worker process (production). Returns a wait function."""
    for name, value in KNOBS.items():
        setattr(settings, name, value)
    # Eager tasks run a scheduled retry at once, so it must be due at once.
    settings.WEBHOOK_RETRY_BASE_SECONDS = KNOBS["WEBHOOK_RETRY_BASE_SECONDS"] if PRODUCTION_MODE else 0
    worker = None
    if PRODUCTION_MODE:
        worker = WorkerProcess(name="webhooks", env=subprocess_env(**KNOBS)).start()
    yield wait_for
    if worker:
        worker.stop()


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def create_endpoint(api, url: str, event_types=("budget.exceeded", "anomaly.detected"), **extra) -> dict:
    response = api.post("/v1/webhooks", {"url": url, "event_types": list(event_types), **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def finished(delivery_id: int):
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    return delivery if delivery.status != WebhookDelivery.Status.PENDING else None


def verify(secret: str, request: dict) -> bool:
    """What a receiver does (the README shows the same)."""
    timestamp = request["headers"]["X-AgentWatch-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"]["X-AgentWatch-Signature"], f"sha256={expected}")


# --- Endpoints API --------------------------------------------------------------------------------------------

def test_secret_is_shown_once_at_creation(admin_api, allow_private):
    created = create_endpoint(admin_api, "https://hooks.example.com/agentwatch", description="Slack #spend")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
    assert created["enabled"] is True and created["event_types"] == ["budget.exceeded", "anomaly.detected"]
    listed = admin_api.get("/v1/webhooks").json()["results"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0] and listed[0]["description"] == "Slack #spend"
    assert "secret" not in admin_api.get(f"/v1/webhooks/{created['id']}").json()


def test_bad_endpoints_are_refused_with_field_errors(admin_api, allow_private):
    for body, field in [
        ({"url": "ftp://example.com/x", "event_types": ["budget.exceeded"]}, "url"),
        ({"url": "not a url", "event_types": ["budget.exceeded"]}, "url"),
        ({"url": "https://example.com/x", "event_types": ["budget.melted"]}, "event_types[0]"),
        ({"url": "https://example.com/x", "event_types": []}, "event_types"),
        ({"url": "https://example.com/x"}, "event_types"),
        ({"url": "http://127.0.0.1:0/x", "event_types": ["budget.exceeded"]}, "url"),
        ({"url": "https://example.com:0/x", "event_types": ["budget.exceeded"]}, "url"),
    ]:
        response = admin_api.post("/v1/webhooks", body, format="json")
        assert response.status_code == 400, body
        assert field in response.json()["error"]["fields"], response.json()
    # A lone surrogate, which the choice error repeats: shown escaped, not a 500.
    response = admin_api.post("/v1/webhooks", data=b'{"url": "https://example.com/x", "event_types": ["\\udfff"]}',
                              content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["event_types[0]"] == ['"\\udfff" is not a valid choice.']
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.1.2.3/hook", "http://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/hook", "http://0.0.0.0/hook",
])
def test_urls_resolving_to_internal_addresses_are_refused(admin_api, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = admin_api.post("/v1/webhooks", {"url": url, "event_types": ["budget.exceeded"]}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "webhook_url_refused" and "WEBHOOK_ALLOW_PRIVATE" in error["fields"]["url"][0]


def test_a_url_that_turned_internal_is_refused_at_send_time(admin_api, settings, allow_private):
    with WebhookReceiver() as receiver:
        endpoint = create_endpoint(admin_api, receiver.url + "/hook")
        settings.WEBHOOK_ALLOW_PRIVATE = False
        result = admin_api.post(f"/v1/webhooks/{endpoint['id']}/test").json()
    assert result["status"] == "failed" and result["last_error"].startswith("refused:")
    assert receiver.requests == []


def test_telemetry_keys_cannot_manage_webhooks(tenant, telemetry_api):
    assert telemetry_api.get("/v1/webhooks").status_code == 403
    assert telemetry_api.post("/v1/webhooks", {}, format="json").status_code == 403


def test_another_tenants_webhook_is_not_found(admin_api, other_admin_api, allow_private):
    endpoint = create_endpoint(admin_api, "https://hooks.example.com/a")
    base = f"/v1/webhooks/{endpoint['id']}"
    assert other_admin_api.get("/v1/webhooks").json()["results"] == []
    assert other_admin_api.get(base).status_code == 404
    assert other_admin_api.post(f"{base}/test").status_code == 404
    assert other_admin_api.get(f"{base}/deliveries").status_code == 404
    assert other_admin_api.delete(base).status_code == 404
    assert other_admin_api.patch(base, {"enabled": False}, format="json").status_code == 404
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).enabled is True


def test_delete_removes_the_endpoint(admin_api, allow_private):
    endpoint = create_endpoint(admin_api, "https://hooks.example.com/a")
    assert admin_api.delete(f"/v1/webhooks/{endpoint['id']}").status_code == 204
    assert admin_api.get(f"/v1/webhooks/{endpoint['id']}").status_code == 404


# --- Sending --------------------------------------------------------------------------------------------------

def test_test_send_is_signed_with_the_secret(admin_api, allow_private):
    with WebhookReceiver() as receiver:
        endpoint = create_endpoint(admin_api, receiver.url + "/hook")
        response = admin_api.post(f"/v1/webhooks/{endpoint['id']}/test")
    assert response.status_code == 200
    result = response.json()
    assert (result["status"], result["attempts"], result["response_code"]) == ("succeeded", 1, 200)
    [request] = receiver.requests
    assert verify(endpoint["secret"], request)
    assert not verify("whsec_wrong", request)
    headers = request["headers"]
    assert headers["X-AgentWatch-Event"] == "test" and headers["Content-Type"] == "application/json"
    assert abs(int(headers["X-AgentWatch-Timestamp"]) - time.time()) < 30
    body = json.loads(request["body"])
    assert set(body) == {"id", "type", "created_at", "text", "data"}
    assert body["type"] == "test" and body["id"] == result["event_id"] and body["text"]


def test_event_goes_to_subscribed_enabled_endpoints_once(tenant, admin_api, deliveries):
    with WebhookReceiver() as subscribed, WebhookReceiver() as other_type, WebhookReceiver() as disabled:
        endpoint = create_endpoint(admin_api, subscribed.url, ["budget.exceeded"])
        create_endpoint(admin_api, other_type.url, ["anomaly.detected"])
        create_endpoint(admin_api, disabled.url, ["budget.exceeded"], enabled=False)
        data = {"team": "search", "month": "2026-11", "pct_used": 104.2}
        first = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="Team search is over budget.",
                                   data=data)
        again = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="Team search is over budget.",
                                   data=data)
        assert [d.pk for d in first] == [d.pk for d in again] and len(first) == 1
        deliveries(lambda: finished(first[0].pk))
        time.sleep(0.3)
    assert len(subscribed.requests) == 1 and other_type.requests == [] and disabled.requests == []
    request = subscribed.requests[0]
    assert verify(endpoint["secret"], request)
    body = json.loads(request["body"])
    assert (body["type"], body["text"], body["data"]) == ("budget.exceeded", "Team search is over budget.", data)
    assert request["headers"]["X-AgentWatch-Event"] == "budget.exceeded"


def test_names_cannot_ping_a_slack_channel_or_hide_a_link(tenant, admin_api, deliveries):
    # Session ids and team names come from any telemetry key; Slack reads <!channel> and <url|label> in `text`.
    name = "<!channel> <https://evil.example/login|re-authenticate> & co"
    with WebhookReceiver() as receiver:
        create_endpoint(admin_api, receiver.url, ["budget.exceeded"])
        sent = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text=f"Team {name} is over budget.",
                                  data={"team": name})
        deliveries(lambda: finished(sent[0].pk))
    body = json.loads(receiver.requests[0]["body"])
    assert body["text"] == ("Team &lt;!channel&gt; &lt;https://evil.example/login|re-authenticate&gt; &amp; co "
                            "is over budget.")
    assert body["data"] == {"team": name}


def test_receiver_failing_twice_gets_three_attempts_and_the_log_says_so(tenant, admin_api, deliveries):
    with WebhookReceiver(statuses=[500, 503]) as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        [delivery] = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="over", data={"n": 1})
        delivery = deliveries(lambda: finished(delivery.pk))
    assert len(receiver.requests) == 3
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 3, 200)
    # Each attempt is signed afresh and carries the same event.
    assert all(verify(endpoint["secret"], r) for r in receiver.requests)
    assert len({json.loads(r["body"])["id"] for r in receiver.requests}) == 1
    [logged] = admin_api.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["results"]
    assert (logged["status"], logged["attempts"], logged["response_code"]) == ("succeeded", 3, 200)
    assert logged["delivered_at"] is not None and logged["event_type"] == "budget.exceeded"


def test_a_400_is_not_retried(tenant, admin_api, deliveries):
    with WebhookReceiver(statuses=[400]) as receiver:
        create_endpoint(admin_api, receiver.url)
        [delivery] = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="over", data={"n": 2})
        delivery = deliveries(lambda: finished(delivery.pk))
        time.sleep(0.3)
    assert len(receiver.requests) == 1
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 1, 400)
    assert "400" in delivery.last_error and "not retried" in delivery.last_error


def test_attempts_are_bounded_and_timeouts_are_retried(tenant, admin_api, deliveries):
    with WebhookReceiver(delay_seconds=1.5) as receiver:
        create_endpoint(admin_api, receiver.url)
        [delivery] = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="over", data={"n": 3})
        delivery = deliveries(lambda: finished(delivery.pk), timeout=30)
    assert len(receiver.requests) == 3
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 3, None)
    assert "timed out" in delivery.last_error


def test_connection_errors_are_retried_and_logged(tenant, admin_api, deliveries):
    with WebhookReceiver() as receiver:
        url = receiver.url
    create_endpoint(admin_api, url)  # nothing listens there any more
    [delivery] = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="over", data={"n": 4})
    delivery = deliveries(lambda: finished(delivery.pk))
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert delivery.last_error.startswith("connection error")


def test_endpoint_failing_for_24_hours_is_disabled_with_a_reason(tenant, admin_api, allow_private):
    with WebhookReceiver(statuses=[500, 500]) as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        admin_api.post(f"/v1/webhooks/{endpoint['id']}/test")
        row = WebhookEndpoint.objects.get(pk=endpoint["id"])
        assert row.enabled and row.failing_since is not None
        row.failing_since = timezone.now() - datetime.timedelta(hours=24, minutes=5)
        row.save()
        admin_api.post(f"/v1/webhooks/{endpoint['id']}/test")
    shown = admin_api.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert shown["enabled"] is False and "24 hours" in shown["disabled_reason"]
    assert webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="x", data={}) == []
    # Re-enabling clears the state.
    shown = admin_api.patch(f"/v1/webhooks/{endpoint['id']}", {"enabled": True}, format="json").json()
    assert shown["enabled"] is True and shown["disabled_reason"] == "" and shown["failing_since"] is None


def test_a_success_clears_the_failing_state(tenant, admin_api, allow_private):
    with WebhookReceiver(statuses=[500]) as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        admin_api.post(f"/v1/webhooks/{endpoint['id']}/test")
        assert WebhookEndpoint.objects.get(pk=endpoint["id"]).failing_since is not None
        admin_api.post(f"/v1/webhooks/{endpoint['id']}/test")
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).failing_since is None


def test_lost_enqueues_are_sent_by_the_retry_task(tenant, admin_api, allow_private, django_capture_on_commit_callbacks):
    with WebhookReceiver() as receiver:
        create_endpoint(admin_api, receiver.url)
        # Inside a transaction whose on-commit callbacks are dropped: as if the broker had been down.
        with django_capture_on_commit_callbacks(execute=False):
            [delivery] = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="x", data={"n": 5})
        assert webhook_deliveries_due() == [delivery.pk]
        if PRODUCTION_MODE:
            webhook_delivery_attempt(delivery_id=delivery.pk)  # the task would be queued for a worker
        else:
            assert retry_due_webhook_deliveries() == 1
    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "succeeded"


def test_runaway_loop_sends_one_anomaly_detected_webhook(transactional_db, tenant, admin_api, telemetry_api,
                                                         recording, allow_private):
    with WebhookReceiver() as receiver:
        endpoint = create_endpoint(admin_api, receiver.url, ["anomaly.detected"])
        for index, tokens in enumerate([1000, 1500, 2200, 3200, 4600], start=1):
            event = {"model": "gpt-4o", "prompt_tokens": tokens, "session_id": "loop-1", "iteration_index": index,
                     "team": "agents"}
            assert telemetry_api.post("/v1/ingest", event, format="json").status_code == 202
        recording()
        wait_for(lambda: WebhookDelivery.objects.filter(status="succeeded").exists())
        time.sleep(0.3)
    [anomaly] = Anomaly.objects.filter(tenant=tenant)
    [request] = receiver.requests  # re-detections update the anomaly without sending again
    assert verify(endpoint["secret"], request)
    body = json.loads(request["body"])
    assert body["type"] == "anomaly.detected" and body["id"] == f"anomaly_{anomaly.pk}"
    assert body["data"]["kind"] == "runaway_loop" and body["data"]["session_id"] == "loop-1"
    assert body["data"]["team"] == "agents"
    assert "runaway loop" in body["text"] and "loop-1" in body["text"]



def test_anomaly_webhooks_lost_with_the_broker_are_sent_by_the_beat(tenant, admin_api, deliveries):
    from usage.tasks import detect_spend_spikes

    with WebhookReceiver() as receiver:
        create_endpoint(admin_api, receiver.url, ["anomaly.detected"])
        now = timezone.now()
        # Opened while its notification task could not be queued: no delivery exists.
        anomaly = Anomaly.objects.create(tenant=tenant, kind="runaway_loop", session_id="lost", first_seen=now,
                                         last_seen=now, details={"prompt_tokens": [1, 2, 3, 5],
                                                                 "ratios": [2, 1.5, 1.67]})
        detect_spend_spikes()
        detect_spend_spikes()
        delivery = deliveries(lambda: WebhookDelivery.objects.filter(event_id=f"anomaly_{anomaly.pk}",
                                                                     status="succeeded").first())
        time.sleep(0.3)
    assert len(receiver.requests) == 1 and delivery.attempts == 1


def test_an_endpoint_added_later_is_not_sent_the_anomalies_opened_before_it(tenant, admin_api, deliveries):
    from usage.tasks import detect_spend_spikes

    earlier = timezone.now() - datetime.timedelta(minutes=30)
    Anomaly.objects.create(tenant=tenant, kind="runaway_loop", session_id="old-loop", first_seen=earlier,
                           last_seen=earlier, details={"prompt_tokens": [1, 2, 3, 5], "ratios": [2, 1.5, 1.67]})
    with WebhookReceiver() as receiver:
        create_endpoint(admin_api, receiver.url, ["anomaly.detected"])
        detect_spend_spikes()  # the catch-up of recent anomalies' webhooks
        time.sleep(0.5)
    assert receiver.requests == []
    assert not WebhookDelivery.objects.exists()


@requires_production
def test_a_hanging_receiver_does_not_delay_recording_with_a_worker_per_queue(transactional_db, tenant, admin_api,
                                                                             telemetry_api, allow_private):
    """The Procfile's process set: one worker records, another delivers webhooks. Ten deliveries to a receiver
    that never answers in time (2 s each) keep the webhooks worker busy for 20 s; an event posted meanwhile is
    still recorded at once."""
    env = subprocess_env(WEBHOOK_TIMEOUT_SECONDS=2, WEBHOOK_RETRY_BASE_SECONDS=60)
    recorder = WorkerProcess(name="queue-celery", concurrency=1, env=env, queues="celery").start()
    sender = WorkerProcess(name="queue-webhooks", concurrency=1, env=env, queues="webhooks").start()
    try:
        with WebhookReceiver(delay_seconds=5) as receiver:
            create_endpoint(admin_api, receiver.url, ["budget.exceeded"])
            for n in range(10):
                webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text=f"Team t{n} is over budget.",
                                   data={"team": f"t{n}"})
            wait_for(lambda: receiver.requests, timeout=10)  # the webhooks worker is now stuck on the receiver
            posted = time.monotonic()
            body = {"event_id": "during-hang", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
            assert telemetry_api.post("/v1/ingest", body, format="json").status_code == 202
            wait_for(lambda: UsageEvent.objects.filter(event_id="during-hang", recorded_at__isnull=False).exists(),
                     timeout=15)
            assert time.monotonic() - posted < 5
            assert len(receiver.requests) < 10  # the deliveries were indeed still queued
    finally:
        recorder.stop()
        sender.stop()
