"""Webhook attempts: attempts cut short stay bounded, and old failures do not disable an endpoint."""

import datetime
import json
import signal
import socket
import ssl
import threading
import time

import pytest
import trustme
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from tenants.models import Membership, WebhookDelivery, WebhookEndpoint
from tenants.webhooks import HELD_ERROR, webhook_deliveries_due, webhook_delivery_attempt, webhook_event_emit
from tests.conftest import requires_production
from tests.fakes import WebhookReceiver
from tests.pages.conftest import member, signed_in
from tests.tenants.test_webhooks import create_endpoint


@pytest.fixture
def knobs(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0


class DripReceiver:
    """Accepts a request, then sends its response headers one byte every 0.1 s for `seconds`, then ends them (a
    200): each read finishes within the timeout, the response takes `seconds`. With `tls` (a trustme server
    context), the same over HTTPS."""

    def __init__(self, seconds: float = 60, tls: ssl.SSLContext | None = None):
        self.seconds = seconds
        self.tls = tls

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                if self.tls:
                    conn.settimeout(5)
                    conn = self.tls.wrap_socket(conn, server_side=True)
                _read_request(conn)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                until = time.monotonic() + self.seconds
                while not self.stop.is_set() and time.monotonic() < until:
                    conn.sendall(b"x")
                    time.sleep(0.1)
                conn.sendall(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            finally:
                conn.close()

    def __exit__(self, *exc):
        self.stop.set()
        self.sock.close()


def _read_request(conn) -> None:
    """The whole request, headers and body: a server that closes with some of it unread resets the connection, and
    the client may then never see the answer (over TLS the body often arrives in a record of its own)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


def silent_dns_for(monkeypatch, webhooks, host: str) -> None:
    """A DNS server that never answers for `host` (the lookup hangs); every other name (Redis, PostgreSQL) as usual."""
    real = webhooks.socket.getaddrinfo

    def getaddrinfo(name, *args, **kwargs):
        if name == host:
            time.sleep(5)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", getaddrinfo)


def pending_delivery(tenant, data: dict) -> WebhookDelivery:
    # Created inside a transaction whose commit hooks are never run here: the test makes every attempt itself.
    [delivery] = webhook_event_emit(tenant=tenant, event_type="budget.exceeded", text="over", data=data)
    return delivery


def test_an_attempt_cut_off_by_the_task_time_limit_counts_as_a_timeout(tenant, admin_api, knobs, settings,
                                                                       django_capture_on_commit_callbacks):
    settings.WEBHOOK_TIMEOUT_SECONDS = 5  # the task's limit (1.5 s here) comes first: the backstop is what's tested
    with DripReceiver() as receiver:
        create_endpoint(admin_api, receiver.url)
        with django_capture_on_commit_callbacks(execute=False):
            delivery = pending_delivery(tenant, {"n": 1})

        # What Celery's soft time limit does to the task: an exception raised from a signal handler.
        def time_limit(signum, frame):
            raise SoftTimeLimitExceeded()

        previous = signal.signal(signal.SIGALRM, time_limit)
        signal.setitimer(signal.ITIMER_REAL, 1.5)
        try:
            attempted = webhook_delivery_attempt(delivery_id=delivery.pk)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    assert attempted is not None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert "timed out" in delivery.last_error
    assert delivery.next_attempt_at is not None


@pytest.fixture
def receiver_ca(settings, tmp_path):
    """A throwaway CA the webhook sender trusts (WEBHOOK_CA_BUNDLE), and a server context it signed."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    settings.WEBHOOK_CA_BUNDLE = str(bundle)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    return server


@pytest.mark.parametrize("via", ["api", "page", "https"])
def test_a_test_send_to_a_receiver_that_trickles_its_answer_ends_within_the_timeout(tenant, admin_api, knobs, via,
                                                                                    request):
    """The admin waiting on the test button (or a script on POST …/test) gets the outcome after
    WEBHOOK_TIMEOUT_SECONDS (0.5 s here), not when the receiver stops dripping (10 s here) — over HTTPS too, where
    TLS takes the connection's socket over."""
    tls = request.getfixturevalue("receiver_ca") if via == "https" else None
    with DripReceiver(seconds=10, tls=tls) as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        started = time.monotonic()
        if via != "page":
            response = admin_api.post(f"/v1/webhooks/{endpoint['id']}/test")
        else:
            owner = member(tenant, Membership.Role.OWNER, "olivia")
            response = signed_in(owner).post(f"/settings/webhooks/{endpoint['id']}/test/")
        elapsed = time.monotonic() - started
    assert response.status_code in (200, 302), response.content
    assert elapsed < 3, elapsed
    delivery = WebhookDelivery.objects.get(endpoint_id=endpoint["id"], event_type="test")
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 1, None)
    assert delivery.last_error == "timed out: no complete response within 0.5 s"


def test_a_receiver_with_a_certificate_from_the_configured_ca_gets_its_deliveries(tenant, admin_api, knobs,
                                                                                  receiver_ca):
    """WEBHOOK_CA_BUNDLE: an on-premises receiver whose certificate an internal CA signed."""
    with DripReceiver(seconds=0, tls=receiver_ca) as receiver:  # answers 200 at once
        endpoint = create_endpoint(admin_api, receiver.url)
        delivery = admin_api.post(f"/v1/webhooks/{endpoint['id']}/test").json()
        assert (delivery["status"], delivery["response_code"]) == ("succeeded", 200), delivery["last_error"]


def test_an_attempt_still_running_is_not_due_again_before_its_task_could_be_killed(
        tenant, admin_api, knobs, monkeypatch, django_capture_on_commit_callbacks):
    """The beat retry task must not start a second, concurrent POST of a delivery whose attempt is still running
    (a receiver trickling its answer keeps it running until the task's soft time limit)."""
    import time_machine

    from tenants import webhooks

    due_while_running = []

    def post_that_runs_until_the_hard_time_limit(endpoint, payload):
        later = timezone.now() + datetime.timedelta(seconds=webhooks.ATTEMPT_TIME_LIMIT_SECONDS + 1)
        with time_machine.travel(later, tick=False):
            due_while_running.extend(webhooks.webhook_deliveries_due())
        return webhooks.Outcome(200, "", retryable=False)

    monkeypatch.setattr(webhooks, "_post", post_that_runs_until_the_hard_time_limit)
    create_endpoint(admin_api, "http://127.0.0.1:9/hook")
    with django_capture_on_commit_callbacks(execute=False):
        delivery = pending_delivery(tenant, {"n": 3})
    webhook_delivery_attempt(delivery_id=delivery.pk)
    assert due_while_running == []
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 1)


def test_a_delivery_whose_last_attempt_never_finished_fails_instead_of_being_retried_forever(
        tenant, admin_api, knobs, django_capture_on_commit_callbacks):
    with WebhookReceiver() as receiver:
        create_endpoint(admin_api, receiver.url)
        with django_capture_on_commit_callbacks(execute=False):
            delivery = pending_delivery(tenant, {"n": 2})
        # The worker making the 3rd (last) attempt was killed mid-way: the claim counted it, nothing recorded it.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            attempts=3, next_attempt_at=timezone.now() - datetime.timedelta(seconds=1))
        assert webhook_delivery_attempt(delivery_id=delivery.pk) is None
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 3, None)
    assert "did not finish" in delivery.last_error


def test_a_test_event_is_never_attempted_twice(tenant, admin_api, knobs):
    with WebhookReceiver() as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        delivery = WebhookDelivery.objects.create(
            tenant=tenant, endpoint_id=endpoint["id"], event_id="evt_test", event_type="test",
            payload={"id": "evt_test", "type": "test", "text": "t", "data": {}}, attempts=1,
        )
        assert webhook_delivery_attempt(delivery_id=delivery.pk) is None
    assert receiver.requests == []
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "failed"


def test_one_failure_long_after_an_old_one_does_not_disable_the_endpoint(tenant, admin_api, knobs,
                                                                        django_capture_on_commit_callbacks):
    with WebhookReceiver(statuses=[503]) as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        # The receiver was down for a while three weeks ago; nothing was sent since.
        weeks_ago = timezone.now() - datetime.timedelta(days=21)
        WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(failing_since=weeks_ago, last_failed_at=weeks_ago)
        with django_capture_on_commit_callbacks(execute=False):
            delivery = pending_delivery(tenant, {"n": 3})
        webhook_delivery_attempt(delivery_id=delivery.pk)  # one 503: a blip
        row = WebhookEndpoint.objects.get(pk=endpoint["id"])
        assert row.enabled and row.disabled_reason == ""
        assert row.failing_since > weeks_ago
        # The retry goes through.
        webhook_delivery_attempt(delivery_id=delivery.pk)
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "succeeded"
    assert len(receiver.requests) == 2


def test_failures_throughout_24_hours_still_disable_the_endpoint(tenant, admin_api, knobs,
                                                                 django_capture_on_commit_callbacks):
    with WebhookReceiver(statuses=[500]) as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        day_ago = timezone.now() - datetime.timedelta(hours=24, minutes=5)
        WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(
            failing_since=day_ago, last_failed_at=timezone.now() - datetime.timedelta(hours=1))
        with django_capture_on_commit_callbacks(execute=False):
            delivery = pending_delivery(tenant, {"n": 4})
        webhook_delivery_attempt(delivery_id=delivery.pk)
    row = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert not row.enabled and "24 hours" in row.disabled_reason


def test_a_delivery_caught_by_its_endpoints_automatic_disable_is_held_and_sent_once_re_enabled(
        tenant, admin_api, knobs, django_capture_on_commit_callbacks):
    """Two alerts of one batch: the first one's failure disables the endpoint (24 hours of failures), and the
    second must not be dropped unsent: it waits, uses no attempt, and goes out when the endpoint is enabled."""
    with WebhookReceiver(statuses=[500]) as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(
            failing_since=timezone.now() - datetime.timedelta(hours=25),
            last_failed_at=timezone.now() - datetime.timedelta(hours=1))
        with django_capture_on_commit_callbacks(execute=False):
            threshold = pending_delivery(tenant, {"level": "threshold"})
            exceeded = pending_delivery(tenant, {"level": "exceeded"})
        webhook_delivery_attempt(delivery_id=threshold.pk)
        assert not WebhookEndpoint.objects.get(pk=endpoint["id"]).enabled
        assert webhook_delivery_attempt(delivery_id=exceeded.pk) is None
        held = WebhookDelivery.objects.get(pk=exceeded.pk)
        assert (held.status, held.attempts, held.last_error) == ("pending", 0, HELD_ERROR)
        assert exceeded.pk not in webhook_deliveries_due()
        assert len(receiver.requests) == 1

        with django_capture_on_commit_callbacks(execute=False) as enqueued:
            assert admin_api.patch(f"/v1/webhooks/{endpoint['id']}", {"enabled": True},
                                   format="json").status_code == 200
        # Re-enabling queues the held one at once (the retry scan would also find it, now that it is due);
        # the worker's attempts are made here.
        assert len(enqueued) == 1 and exceeded.pk in webhook_deliveries_due()
        webhook_delivery_attempt(delivery_id=exceeded.pk)
        assert WebhookDelivery.objects.get(pk=exceeded.pk).status == "succeeded"
        webhook_delivery_attempt(delivery_id=threshold.pk)
    assert WebhookDelivery.objects.get(pk=threshold.pk).status == "succeeded"
    sent = [json.loads(r["body"])["data"]["level"] for r in receiver.requests]
    assert sorted(sent) == ["exceeded", "threshold", "threshold"]


def test_a_delivery_held_for_more_than_a_week_is_given_up_not_sent_on_re_enable(
        tenant, admin_api, knobs, django_capture_on_commit_callbacks):
    with WebhookReceiver() as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        with django_capture_on_commit_callbacks(execute=False):
            old = pending_delivery(tenant, {"level": "old"})
            recent = pending_delivery(tenant, {"level": "recent"})
        WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(enabled=False, disabled_reason="by the tenant")
        for delivery in (old, recent):
            assert webhook_delivery_attempt(delivery_id=delivery.pk) is None  # held
        WebhookDelivery.objects.filter(pk=old.pk).update(created_at=timezone.now() - datetime.timedelta(days=8))
        with django_capture_on_commit_callbacks(execute=False) as enqueued:
            assert admin_api.patch(f"/v1/webhooks/{endpoint['id']}", {"enabled": True},
                                   format="json").status_code == 200
        assert len(enqueued) == 1
        webhook_delivery_attempt(delivery_id=recent.pk)
        assert webhook_delivery_attempt(delivery_id=old.pk) is None
    given_up = WebhookDelivery.objects.get(pk=old.pk)
    assert given_up.status == "failed" and "more than 7 days" in given_up.last_error and given_up.attempts == 0
    assert [json.loads(r["body"])["data"]["level"] for r in receiver.requests] == ["recent"]


def test_a_delivery_whose_host_does_not_resolve_now_is_retried_not_failed(tenant, admin_api, knobs, settings,
                                                                          django_capture_on_commit_callbacks):
    """A DNS outage at the receiver's side passes: the delivery waits for its next attempt (the URL was checked
    when the endpoint was saved)."""
    create_endpoint(admin_api, "http://receiver.invalid/hook")  # saved while private hosts were allowed
    settings.WEBHOOK_ALLOW_PRIVATE = False  # now the host is looked up before each attempt
    with django_capture_on_commit_callbacks(execute=False):
        delivery = pending_delivery(tenant, {"n": 4})
    webhook_delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.next_attempt_at is not None
    assert "receiver.invalid" in delivery.last_error and "resolve" in delivery.last_error


def test_a_dns_server_that_does_not_answer_holds_an_endpoint_save_for_the_timeout_only(admin_api, knobs, settings,
                                                                                       monkeypatch):
    from tenants import webhooks

    settings.WEBHOOK_ALLOW_PRIVATE = False
    silent_dns_for(monkeypatch, webhooks, "hooks.example.com")
    started = time.monotonic()
    body = {"url": "https://hooks.example.com/in", "event_types": ["budget.exceeded"]}
    response = admin_api.post("/v1/webhooks", body, format="json")
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"]["url"] == [
        "Webhook URL host 'hooks.example.com' did not resolve within 0.5 s."]
    assert elapsed < 2, elapsed


@pytest.mark.parametrize("status", [429, 408])
def test_a_receiver_saying_not_now_gets_the_delivery_again(tenant, admin_api, knobs, status,
                                                           django_capture_on_commit_callbacks):
    """Slack answers a burst of messages with 429: failing the delivery at once lost the alert."""
    with WebhookReceiver(statuses=[status]) as receiver:
        create_endpoint(admin_api, receiver.url)
        with django_capture_on_commit_callbacks(execute=False):
            delivery = pending_delivery(tenant, {"n": 5})
        webhook_delivery_attempt(delivery_id=delivery.pk)
        first = WebhookDelivery.objects.get(pk=delivery.pk)
        assert (first.status, first.response_code) == ("pending", status)
        assert first.next_attempt_at is not None
        webhook_delivery_attempt(delivery_id=delivery.pk)
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "succeeded"
    assert len(receiver.requests) == 2


def test_with_private_hosts_allowed_a_dns_server_that_does_not_answer_holds_an_attempt_for_the_timeout_only(
        tenant, admin_api, knobs, monkeypatch, django_capture_on_commit_callbacks):
    """Saving such an endpoint looks nothing up, but each attempt does, within WEBHOOK_TIMEOUT_SECONDS: left to
    the HTTP client, the lookup held the worker (and with one worker for both queues, recording) for 45 s."""
    from tenants import webhooks

    create_endpoint(admin_api, "http://receiver.internal.example/hook")
    with django_capture_on_commit_callbacks(execute=False):
        delivery = pending_delivery(tenant, {"n": 6})
    silent_dns_for(monkeypatch, webhooks, "receiver.internal.example")
    started = time.monotonic()
    webhook_delivery_attempt(delivery_id=delivery.pk)
    assert time.monotonic() - started < 2
    delivery.refresh_from_db()
    assert delivery.status == "pending" and "did not resolve within 0.5 s" in delivery.last_error


@requires_production
@pytest.mark.django_db(transaction=True)
def test_an_endpoint_deleted_during_an_attempt_ends_it_quietly(tenant, admin_api, knobs, caplog,
                                                               django_capture_on_commit_callbacks):
    """Its deliveries go with it: the attempt has nothing left to record, which is not an error."""
    from django.db import connection

    def delete_endpoint():  # an admin in another request, while the receiver takes its time
        WebhookEndpoint.objects.filter(pk=endpoint["id"]).delete()
        connection.close()

    with WebhookReceiver(delay_seconds=0.5) as receiver:
        endpoint = create_endpoint(admin_api, receiver.url)
        with django_capture_on_commit_callbacks(execute=False):
            delivery = pending_delivery(tenant, {"n": 7})
        deleter = threading.Timer(0.2, delete_endpoint)
        deleter.start()
        assert webhook_delivery_attempt(delivery_id=delivery.pk) is None
        deleter.join()
    assert not WebhookDelivery.objects.filter(pk=delivery.pk).exists()
    assert "deleted during an attempt" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= 40]
