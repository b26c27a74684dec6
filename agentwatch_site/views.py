import hmac
import ipaddress
import logging
import re
import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import DisallowedHost, PermissionDenied
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from agentwatch_site.env import redact_url
from agentwatch_site.errors import json_error
from agentwatch_site.middleware import PROBE_PATHS, is_api_path

logger = logging.getLogger(__name__)


def _detail(exc: Exception) -> str:
    """What went wrong, for the operator reading the log ("connection refused" at which host and port)."""
    return redact_url(" ".join(str(exc).split()))[:300]


def _check_database(probe: str) -> str:
    """One round trip; an unreachable server fails within DB_CONNECT_TIMEOUT (settings.py)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any failure means "not ready"
        logger.warning("%s database check failed error=%s detail=%s", probe, type(exc).__name__, _detail(exc))
        return "unavailable"


def _check_redis(probe: str) -> str:
    try:
        client = cache._cache.get_client(write=True)
        client.ping()
        return "ok"
    except Exception as exc:
        logger.warning("%s redis check failed error=%s detail=%s", probe, type(exc).__name__, _detail(exc))
        return "unavailable"


@never_cache
def healthz(request):
    """Monitoring and alerts, not a readiness probe (that is readyz): the database, Redis (when configured) and how
    far recording lags behind ingestion; 503 naming whichever is wrong."""
    from usage.selectors import ingest_lag_seconds, quarantined_event_count

    started = time.monotonic()
    checks: dict[str, object] = {"database": _check_database("healthz")}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis("healthz")
    healthy = all(value == "ok" for value in checks.values())
    if checks["database"] == "ok":
        lag = ingest_lag_seconds()
        checks["ingest_lag_seconds"] = lag
        # Informational: events set aside (manage.py quarantined_events); they hold nothing up.
        checks["quarantined_events"] = quarantined_event_count()
        if lag > settings.INGEST_LAG_THRESHOLD_SECONDS:
            checks["ingest"] = "lagging"
            healthy = False
        else:
            checks["ingest"] = "ok"
    body = {"status": "ok" if healthy else "unavailable", "checks": checks,
            "duration_ms": round((time.monotonic() - started) * 1000, 1)}
    if not healthy:
        body["failed"] = sorted(name for name, value in checks.items()
                                if isinstance(value, str) and value not in ("ok",))
    return JsonResponse(body, status=200 if healthy else 503)


@never_cache
def livez(request):
    """Liveness: the process answers; no dependency is checked."""
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    """Readiness: 503 only when this process cannot serve requests, i.e. cannot reach the database. Redis down and
    ingest lag are reported but pass: ingest and budget checks go on without Redis, and a lag is the workers', not
    this process's; failing every pod at once on them would take the whole service out of the load balancer, and
    aw-sdk drops its events (it posts once) and fails open on budget checks while nothing answers."""
    from agentwatch_site.redis_guard import redis_skipped
    from usage.selectors import ingest_lag_seconds

    started = time.monotonic()
    checks: dict[str, object] = {"database": _check_database("readyz")}
    if settings.REDIS_URL:
        # After a Redis timeout this process skips Redis for a few seconds (redis_guard): so does the probe.
        checks["redis"] = "unavailable" if redis_skipped() else _check_redis("readyz")
    ready = checks["database"] == "ok"
    if ready:
        try:
            lag = ingest_lag_seconds()
        except Exception as exc:  # informational here: the database answered, so the process can serve
            logger.warning("readyz ingest lag read failed error=%s detail=%s", type(exc).__name__, _detail(exc))
            checks["ingest"] = "unknown"
        else:
            checks["ingest_lag_seconds"] = lag
            checks["ingest"] = "lagging" if lag > settings.INGEST_LAG_THRESHOLD_SECONDS else "ok"
    body = {"status": "ok" if ready else "unavailable", "checks": checks,
            "duration_ms": round((time.monotonic() - started) * 1000, 1)}
    if not ready:
        body["failed"] = ["database"]
    return JsonResponse(body, status=200 if ready else 503)


def handler404(request, exception=None):
    if is_api_path(request.path):
        return json_error(status=404, type="not_found_error", code="not_found", message="Not found.")
    meant = _meant_api_path(request.path)
    if meant is not None:
        # A base URL with a trailing slash (`https://host/` + `/v1/ingest`) or a capital V: a client reading JSON
        # gets the envelope, and whoever reads it the path that works.
        return json_error(status=404, type="not_found_error", code="not_found",
                          message=f"No API endpoint at {request.path}; API paths start with a single /v1/ "
                                  f"(lower case): {meant}")
    return render(request, "404.html", status=404)


def _meant_api_path(path: str) -> str | None:
    """The API path a mistyped one was meant to be: repeated slashes collapsed, `V1` in lower case."""
    collapsed = re.sub(r"/{2,}", "/", path)
    if is_api_path(collapsed[:3].lower() + collapsed[3:]):
        return "/v1" + collapsed[3:]
    return None


def handler500(request):
    if is_api_path(request.path):
        return json_error(status=500, type="api_error", code="internal_error",
                          message="Internal server error; the request id identifies it in the server logs.")
    return render(request, "500.html", status=500)


def handler403(request, exception=None):
    if is_api_path(request.path):
        return json_error(status=403, type="permission_error", code="permission_denied",
                          message="You do not have permission to do this.")
    # The reason a dashboard view gave (tenants.views.member_required), else the general one.
    reason = str(exception) if isinstance(exception, PermissionDenied) and str(exception) else ""
    return render(request, "403.html", {"reason": reason}, status=403)


def handler400(request, exception=None):
    if is_api_path(request.path) or request.path in PROBE_PATHS:
        if isinstance(exception, DisallowedHost):
            return json_error(status=400, type="invalid_request_error", code="disallowed_host",
                              message="This server does not answer to the host name in the Host header (the "
                                      "operator lists the names it answers to in ALLOWED_HOSTS).")
        return json_error(status=400, type="invalid_request_error", code="bad_request", message="Bad request.")
    return render(request, "400.html", status=400)


def _metrics_address_allowed(remote_addr: str | None) -> bool:
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    # A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d.
    candidates = [address, getattr(address, "ipv4_mapped", None) or address]
    return any(candidate in network for network in settings.METRICS_ALLOWED_IPS for candidate in candidates)


def _metrics_token_matches(request) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return False
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(supplied.encode(), token.encode())


def metrics(request):
    """Prometheus scrape endpoint: from an address in METRICS_ALLOWED_IPS, or with the bearer METRICS_TOKEN."""
    from agentwatch_site.metrics import metrics_view

    allowed = _metrics_address_allowed(request.META.get("REMOTE_ADDR")) or _metrics_token_matches(request)
    if not allowed:
        return json_error(status=403, type="permission_error", code="metrics_forbidden",
                          message="Metrics need the METRICS_TOKEN bearer token or an allowed address.")
    return metrics_view(request)
