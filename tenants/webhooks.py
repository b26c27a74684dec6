"""Webhooks: endpoints, signed deliveries, retries with backoff, and the SSRF guard.

A delivery is one event for one endpoint. It is sent by the `tenants.tasks.webhook_deliver` task; each attempt is
claimed with a conditional UPDATE (status pending and due), so a redelivered task or the beat retry cannot send
the same attempt twice. The body is `{"id", "type", "created_at", "text", "data"}`, signed as
`X-AgentWatch-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>`.
"""

import contextlib
import datetime
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from agentwatch_site.errors import InvalidRequest
from tenants.models import Tenant, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

EVENT_TYPES = tuple(WebhookEndpoint.EventType.values)
TEST_EVENT = "test"
HELD_ERROR = "held: the endpoint is disabled; sent when it is enabled again"
# A delivery held longer than this is given up when its endpoint is enabled again (a month-old alert is noise).
HELD_AT_MOST = datetime.timedelta(days=7)
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
USER_AGENT = "AgentWatch-Webhooks/1.0"
# An endpoint whose deliveries have failed (with no success in between) for this long is disabled.
FAILING_DISABLE_AFTER = datetime.timedelta(hours=24)
# Failures further apart than this are not one failing period (retries of one delivery are at most an hour apart).
FAILING_GAP = datetime.timedelta(hours=6)
MAX_BACKOFF_SECONDS = 3600
# The delivery task's limits (tenants.tasks.webhook_deliver): a backstop behind each attempt's own deadlines
# (WEBHOOK_TIMEOUT_SECONDS for the DNS lookup, and as much for the exchange: see _resolve and _Deadline).
ATTEMPT_SOFT_TIME_LIMIT_SECONDS = 45
ATTEMPT_TIME_LIMIT_SECONDS = 60
RETRY_SCAN_LIMIT = 500
# 4xx answers that mean "not now" rather than "never": a request timeout, and too many requests (Slack's and most
# chat services' answer to a burst of alerts). Retried with the same backoff as a 5xx.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


@dataclass(frozen=True)
class Target:
    """Where to connect: the URL with its host replaced by the checked address (so a second DNS answer
    cannot point the request elsewhere), plus the Host header and TLS server name of the original URL."""

    url: str
    host_header: str | None = None
    sni_hostname: str | None = None


@dataclass(frozen=True)
class Outcome:
    response_code: int | None
    error: str
    retryable: bool

    @property
    def ok(self) -> bool:
        return self.response_code is not None and 200 <= self.response_code < 300


class WebhookUrlRefused(InvalidRequest):
    code = "webhook_url_refused"

    def __init__(self, message: str):
        super().__init__(message, fields={"url": [message]})


class WebhookHostUnresolved(WebhookUrlRefused):
    """The URL's host did not resolve (now): refused when an endpoint is saved, retried when a delivery is sent
    (a DNS outage passes)."""


# --- URLs and the SSRF guard --------------------------------------------------------------------------------

def _refusal_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if address.is_multicast or address.is_unspecified or address.is_reserved or not address.is_global:
        return "non-public"
    return None


def webhook_url_check(url: str, *, for_delivery: bool = False) -> Target:
    """Refuse what is not http(s) and, unless WEBHOOK_ALLOW_PRIVATE, hosts resolving to loopback, private or
    link-local addresses. Returns where to connect (the host pinned to the checked address).

    With WEBHOOK_ALLOW_PRIVATE there is nothing to refuse, so saving an endpoint looks nothing up; a delivery still
    resolves the host here, within WEBHOOK_TIMEOUT_SECONDS, and connects to that address: left to httpx, a DNS
    server that does not answer held the attempt (and the worker) until the task's time limit."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlRefused("Webhook URL is malformed.") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlRefused("Webhook URL must start with http:// or https://.")
    host = parts.hostname
    if not host:
        raise WebhookUrlRefused("Webhook URL has no host.")
    if parts.username or parts.password:
        raise WebhookUrlRefused("Webhook URL must not contain a user name or password.")
    if port == 0:
        raise WebhookUrlRefused("Webhook URL port must be between 1 and 65535.")
    if settings.WEBHOOK_ALLOW_PRIVATE and not for_delivery:
        return Target(url=url)
    port = port or (443 if parts.scheme == "https" else 80)
    infos = _resolve(host, port)
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        reason = None if settings.WEBHOOK_ALLOW_PRIVATE else _refusal_reason(address)
        if reason:
            raise WebhookUrlRefused(
                f"Webhook URL host {host!r} resolves to {address}, a {reason} address; only public addresses "
                f"are allowed (the operator can set WEBHOOK_ALLOW_PRIVATE=1)."
            )
        addresses.append(address)
    pinned = httpx.URL(url).copy_with(host=str(addresses[0]))
    return Target(
        url=str(pinned),
        host_header=parts.netloc.rpartition("@")[2],
        sni_hostname=host if parts.scheme == "https" else None,
    )


def _resolve(host: str, port: int) -> list:
    """getaddrinfo, waiting at most WEBHOOK_TIMEOUT_SECONDS: the C resolver has no deadline of its own, and a
    DNS server that does not answer would hold the admin's request (or the attempt) for its retries. A lookup
    given up on finishes in its daemon thread."""
    seconds = settings.WEBHOOK_TIMEOUT_SECONDS
    outcome: dict = {}

    def lookup():
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            outcome["error"] = exc

    thread = threading.Thread(target=lookup, name="webhook-dns", daemon=True)
    thread.start()
    thread.join(seconds)
    if "infos" in outcome:
        return outcome["infos"]
    if thread.is_alive():
        raise WebhookHostUnresolved(f"Webhook URL host {host!r} did not resolve within {seconds:g} s.")
    raise WebhookHostUnresolved(f"Webhook URL host {host!r} does not resolve.")


# --- Endpoints ------------------------------------------------------------------------------------------------

def _check_event_types(event_types: list[str]) -> list[str]:
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if unknown or not event_types:
        message = f"Event types must be a non-empty list of: {', '.join(EVENT_TYPES)}."
        raise InvalidRequest(message, code="validation_error", fields={"event_types": [message]})
    return sorted(set(event_types), key=EVENT_TYPES.index)


def webhook_endpoint_create(*, tenant: Tenant, url: str, event_types: list[str], description: str = "",
                            enabled: bool = True) -> tuple[WebhookEndpoint, str]:
    """Returns the endpoint and its secret, which the API shows once."""
    webhook_url_check(url)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url=url, description=description, secret=secret,
        event_types=_check_event_types(event_types), enabled=enabled,
    )
    logger.info("webhook endpoint created tenant=%s endpoint_id=%s", tenant.slug, endpoint.pk)
    return endpoint, secret


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, **changes) -> WebhookEndpoint:
    """Change url, description, event_types or enabled. Re-enabling clears the automatic-disable state."""
    if "url" in changes:
        webhook_url_check(changes["url"])
        endpoint.url = changes["url"]
    if "description" in changes:
        endpoint.description = changes["description"]
    if "event_types" in changes:
        endpoint.event_types = _check_event_types(changes["event_types"])
    released = False
    if "enabled" in changes:
        if changes["enabled"] and not endpoint.enabled:
            endpoint.failing_since = None
            endpoint.disabled_reason = ""
            released = True
        endpoint.enabled = changes["enabled"]
    endpoint.save()
    if released:
        # Deliveries held while it was disabled go out now (the retry scan would find them within a minute),
        # unless they are too old to still mean anything: those are given up.
        held = WebhookDelivery.objects.filter(endpoint=endpoint, status=WebhookDelivery.Status.PENDING,
                                              next_attempt_at__isnull=True)
        stale = held.filter(created_at__lt=timezone.now() - HELD_AT_MOST)
        stale.update(status=WebhookDelivery.Status.FAILED, last_error=(
            f"not sent: held for more than {HELD_AT_MOST.days} days while the endpoint was disabled"))
        for delivery_id in held.values_list("pk", flat=True):
            _enqueue_after_commit(delivery_id)
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()


def webhook_endpoint_list(*, tenant: Tenant):
    return WebhookEndpoint.objects.for_tenant(tenant).order_by("-created_at", "-id")


def webhook_delivery_list(*, endpoint: WebhookEndpoint):
    return WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-id")


# --- Emitting events ------------------------------------------------------------------------------------------

def _derived_event_id(tenant: Tenant, event_type: str, data: dict) -> str:
    """The same event emitted twice (a redelivered task) gets the same id, so it is delivered once."""
    canonical = json.dumps([tenant.pk, event_type, data], sort_keys=True, separators=(",", ":"), default=str)
    return "evt_" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _enqueue_after_commit(delivery_id: int) -> None:
    def send():
        from tenants.tasks import webhook_deliver

        try:
            webhook_deliver.delay(delivery_id)
        except Exception as exc:
            logger.warning("could not enqueue webhook delivery; the retry task will send it delivery_id=%s "
                           "error=%s", delivery_id, type(exc).__name__)

    transaction.on_commit(send)


def slack_text(text: str) -> str:
    """`text` as Slack's message formatting expects it: `&`, `<` and `>` escaped, so a session id or team name
    such as `<!channel>` or `<https://evil|log in>` shows as typed instead of pinging a channel or hiding a
    link. (Names and ids are in `data` unescaped.)"""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_event_emit(*, tenant: Tenant, event_type: str, text: str, data: dict, event_id: str | None = None,
                       occurred_at: datetime.datetime | None = None) -> list[WebhookDelivery]:
    """One delivery per enabled endpoint subscribed to `event_type` (and, given `occurred_at`, created by then: an
    anomaly opened before an endpoint was added is not sent to it, even when it is detected again later);
    idempotent per endpoint and event id (by default derived from the type and data). New deliveries are sent by
    a task after the commit."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    event_id = event_id or _derived_event_id(tenant, event_type, data)
    endpoints = WebhookEndpoint.objects.for_tenant(tenant).filter(enabled=True).order_by("id")
    if occurred_at is not None:
        endpoints = endpoints.filter(created_at__lte=occurred_at)
    endpoints = [e for e in endpoints if event_type in e.event_types]
    if not endpoints:
        return []
    payload = {"id": event_id, "type": event_type, "created_at": timezone.now().isoformat(),
               "text": slack_text(text), "data": data}
    deliveries = []
    with transaction.atomic():
        for endpoint in endpoints:
            delivery, created = WebhookDelivery.objects.get_or_create(
                endpoint=endpoint, event_id=event_id,
                defaults={"tenant": tenant, "event_type": event_type, "payload": payload},
            )
            deliveries.append(delivery)
            if created:
                _enqueue_after_commit(delivery.pk)
    return deliveries


def webhook_test_send(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `test` event, attempted once right away (no retries); the delivery shows what happened."""
    payload = {
        "id": "evt_" + secrets.token_hex(16), "type": TEST_EVENT, "created_at": timezone.now().isoformat(),
        "text": slack_text(f"AgentWatch test event for {endpoint.description or endpoint.url}."),
        "data": {"endpoint_id": endpoint.pk},
    }
    delivery = WebhookDelivery.objects.create(
        tenant_id=endpoint.tenant_id, endpoint=endpoint, event_id=payload["id"], event_type=TEST_EVENT,
        payload=payload,
    )
    return webhook_delivery_attempt(delivery_id=delivery.pk, max_attempts=1) or delivery


# --- Sending --------------------------------------------------------------------------------------------------

def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class _Deadline:
    """Cuts one HTTP exchange off after `seconds` in all. httpx's timeout bounds each network read, so a receiver
    that sends its answer (or its TLS handshake) a byte at a time would otherwise hold the attempt — and, for a
    test send, the web request — for as long as it likes. httpcore's `trace` extension hands over the connection's
    socket once it is connected; the deadline keeps a duplicate of it (TLS takes the original over) and a timer
    shuts the connection down through it: the blocked read returns and httpx raises."""

    def __init__(self, seconds: float):
        self.fired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict) -> None:
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket").dup()
        with self._lock:
            self._socket = sock
            if self.fired:
                self._shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._socket is not None:
                self._shut(self._socket)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the exchange ended meanwhile
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


@functools.cache
def _tls_context_for(ca_bundle: str) -> ssl.SSLContext:
    # Loading a CA bundle costs milliseconds: once per process and bundle.
    return ssl.create_default_context(cafile=ca_bundle or certifi.where())


def _tls_context() -> ssl.SSLContext:
    """Receivers' certificates are checked against WEBHOOK_CA_BUNDLE (a PEM file: an on-premises receiver's
    internal CA), else the public CAs httpx uses by default (certifi)."""
    return _tls_context_for(settings.WEBHOOK_CA_BUNDLE)


def _post(endpoint: WebhookEndpoint, payload: dict) -> Outcome:
    try:
        target = webhook_url_check(endpoint.url, for_delivery=True)
    except WebhookHostUnresolved as exc:
        return Outcome(None, exc.message, retryable=True)
    except WebhookUrlRefused as exc:
        return Outcome(None, f"refused: {exc.message}", retryable=False)
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-AgentWatch-Event": payload["type"],
        "X-AgentWatch-Timestamp": timestamp,
        "X-AgentWatch-Signature": webhook_signature(secret=endpoint.secret, timestamp=timestamp, body=body),
    }
    if target.host_header:
        headers["Host"] = target.host_header
    seconds = settings.WEBHOOK_TIMEOUT_SECONDS
    deadline = _Deadline(seconds)
    extensions = {"trace": deadline.trace}
    if target.sni_hostname:
        extensions["sni_hostname"] = target.sni_hostname
    try:
        # No redirects (a 3xx could point at an internal address), no proxies from the environment, and the
        # response body is never read: only the status matters.
        client = httpx.Client(timeout=seconds, follow_redirects=False, trust_env=False, verify=_tls_context())
        with client, client.stream("POST", target.url, content=body, headers=headers,
                                   extensions=extensions) as response:
            code = response.status_code
    except httpx.TimeoutException:
        return Outcome(None, f"timed out after {seconds:g} s", retryable=True)
    except SoftTimeLimitExceeded:
        # The task's time limit, behind the deadline. Recorded as a timeout, so the attempt counts and is retried.
        return Outcome(None, "timed out: no complete response before the task's time limit", retryable=True)
    except httpx.HTTPError as exc:
        if deadline.fired:
            return Outcome(None, f"timed out: no complete response within {seconds:g} s", retryable=True)
        return Outcome(None, f"connection error: {type(exc).__name__}: {exc}"[:500], retryable=True)
    finally:
        deadline.cancel()
    if 200 <= code < 300:
        return Outcome(code, "", retryable=False)
    if code >= 500 or code in RETRYABLE_CLIENT_ERRORS:
        return Outcome(code, f"HTTP {code} from the receiver", retryable=True)
    return Outcome(code, f"HTTP {code} from the receiver (not retried)", retryable=False)


def retry_delay_seconds(attempts: int) -> float:
    """Exponential backoff with jitter: base × 2^(attempts-1), capped, then a random 50-100 % of it."""
    delay = min(MAX_BACKOFF_SECONDS, settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)


def webhook_delivery_attempt(*, delivery_id: int, max_attempts: int | None = None) -> WebhookDelivery | None:
    """Make one attempt if the delivery is pending and due; None when it is not (done, or another worker has
    it). Records the outcome and, after a retryable failure, when to try again.

    A delivery whose endpoint was disabled after it was created (by the tenant, or automatically after 24 hours
    of failures: often by its sibling's attempt a moment before) is held, not failed and no attempt used: it stays
    pending, out of the retry scan, and goes out when the endpoint is enabled again."""
    max_attempts = max_attempts or settings.WEBHOOK_MAX_ATTEMPTS
    now = timezone.now()
    # The lease outlives the attempt (the HTTP timeout, and the task's hard time limit for a receiver that trickles
    # its answer), so no second attempt starts while one runs; if this worker dies mid-attempt, the retry task
    # takes it over after the lease.
    lease = now + datetime.timedelta(
        seconds=max(settings.WEBHOOK_TIMEOUT_SECONDS * 2, ATTEMPT_TIME_LIMIT_SECONDS) + 30)
    due = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    held = due.filter(endpoint__enabled=False).exclude(event_type=TEST_EVENT)
    if held.update(next_attempt_at=None, last_error=HELD_ERROR):
        logger.info("webhook delivery held: endpoint disabled delivery_id=%s", delivery_id)
        return None
    # A test event gets one attempt, wherever it is retried from.
    used_up = Q(attempts__gte=max_attempts) | Q(event_type=TEST_EVENT, attempts__gte=1)
    # Still enabled at the claim (it may be disabled since the hold check above: then the next scan holds it).
    claimed = due.exclude(used_up).filter(Q(endpoint__enabled=True) | Q(event_type=TEST_EVENT)).update(
        attempts=F("attempts") + 1, next_attempt_at=lease)
    if not claimed:
        # Its last attempt never finished (the worker died or was killed at its time limit): no attempt is left.
        if due.filter(used_up).update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None,
                                      last_error="gave up: the last attempt did not finish"):
            logger.warning("webhook delivery failed: its last attempt did not finish delivery_id=%s", delivery_id)
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint", "endpoint__tenant").get(pk=delivery_id)
    endpoint = delivery.endpoint
    outcome = _post(endpoint, delivery.payload)
    finished = timezone.now()
    delivery.response_code = outcome.response_code
    delivery.last_error = outcome.error
    if outcome.ok:
        delivery.status = WebhookDelivery.Status.SUCCEEDED
        delivery.delivered_at = finished
        delivery.next_attempt_at = None
    elif outcome.retryable and delivery.attempts < max_attempts:
        delivery.next_attempt_at = finished + datetime.timedelta(seconds=retry_delay_seconds(delivery.attempts))
    else:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.next_attempt_at = None
    recorded = WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=delivery.status, response_code=delivery.response_code, last_error=delivery.last_error,
        delivered_at=delivery.delivered_at, next_attempt_at=delivery.next_attempt_at)
    if not recorded:
        # The endpoint was deleted during the attempt, and its deliveries with it: nothing left to record.
        logger.info("webhook endpoint deleted during an attempt endpoint_id=%s delivery_id=%s", endpoint.pk,
                    delivery.pk)
        return None
    logger.info("webhook attempt tenant=%s endpoint_id=%s delivery_id=%s event=%s attempt=%s status=%s code=%s",
                endpoint.tenant.slug, endpoint.pk, delivery.pk, delivery.event_type, delivery.attempts,
                delivery.status, outcome.response_code)
    if endpoint.enabled:
        _endpoint_health(endpoint, ok=outcome.ok, error=outcome.error, now=finished)
    return delivery


def _endpoint_health(endpoint: WebhookEndpoint, *, ok: bool, error: str, now: datetime.datetime) -> None:
    endpoints = WebhookEndpoint.objects.filter(pk=endpoint.pk)
    if ok:
        endpoints.filter(failing_since__isnull=False).update(failing_since=None)
        return
    # A failure after a long quiet spell (no attempt failed for FAILING_GAP, e.g. no events to send) starts a new
    # failing period: one blip weeks after an old failure must not count as 24 hours of failures.
    endpoints.filter(
        Q(failing_since__isnull=True) | Q(last_failed_at__isnull=True) | Q(last_failed_at__lt=now - FAILING_GAP)
    ).update(failing_since=now)
    endpoints.update(last_failed_at=now)
    disabled = endpoints.filter(enabled=True, failing_since__lte=now - FAILING_DISABLE_AFTER).update(
        enabled=False,
        disabled_reason=f"Disabled automatically: deliveries failed for 24 hours (last error: {error})"[:200],
    )
    if disabled:
        logger.warning("webhook endpoint disabled after 24 h of failures tenant=%s endpoint_id=%s",
                       endpoint.tenant.slug, endpoint.pk)


def webhook_deliveries_due(*, limit: int = RETRY_SCAN_LIMIT) -> list[int]:
    """Pending deliveries whose next attempt is due, or that were never attempted (a lost enqueue)."""
    now = timezone.now()
    return list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .exclude(Q(endpoint__enabled=False) & ~Q(event_type=TEST_EVENT))  # held until the endpoint is enabled
        .order_by("id").values_list("id", flat=True)[:limit]
    )
