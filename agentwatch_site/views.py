import logging
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
from agentwatch_site.middleware import is_api_path

logger = logging.getLogger(__name__)


def _detail(exc: Exception) -> str:
    """What went wrong, for the operator reading the log ("connection refused" at which host and port)."""
    return redact_url(" ".join(str(exc).split()))[:300]


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any failure means "not ready"
        logger.warning("healthz database check failed error=%s detail=%s", type(exc).__name__, _detail(exc))
        return "unavailable"


def _check_redis() -> str:
    try:
        client = cache._cache.get_client(write=True)
        client.ping()
        return "ok"
    except Exception as exc:
        logger.warning("healthz redis check failed error=%s detail=%s", type(exc).__name__, _detail(exc))
        return "unavailable"


@never_cache
def healthz(request):
    """Readiness: the database, Redis (when configured) and how far recording lags behind ingestion."""
    from usage.selectors import ingest_lag_seconds, quarantined_event_count

    started = time.monotonic()
    checks: dict[str, object] = {"database": _check_database()}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis()
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


def handler404(request, exception=None):
    if is_api_path(request.path):
        return json_error(status=404, type="not_found_error", code="not_found", message="Not found.")
    return render(request, "404.html", status=404)


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
    if is_api_path(request.path):
        if isinstance(exception, DisallowedHost):
            return json_error(status=400, type="invalid_request_error", code="disallowed_host",
                              message="This server does not answer to the host name in the Host header (the "
                                      "operator lists the names it answers to in ALLOWED_HOSTS).")
        return json_error(status=400, type="invalid_request_error", code="bad_request", message="Bad request.")
    return render(request, "400.html", status=400)


def metrics(request):
    """Prometheus scrape endpoint: a bearer METRICS_TOKEN when set, else loopback (or METRICS_ALLOWED_IPS) only."""
    import hmac

    from agentwatch_site.metrics import metrics_view

    token = settings.METRICS_TOKEN
    if token:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        allowed = hmac.compare_digest(supplied.encode(), token.encode())
    else:
        allowed = request.META.get("REMOTE_ADDR") in settings.METRICS_ALLOWED_IPS
    if not allowed:
        return json_error(status=403, type="permission_error", code="metrics_forbidden",
                          message="Metrics need the METRICS_TOKEN bearer token or an allowed address.")
    return metrics_view(request)
