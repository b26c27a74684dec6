"""Per-tenant, per-minute request limits in two buckets, counted atomically in the shared cache.

In production the cache is Redis: `add` is SET NX EX and `incr` is INCRBY, so every gunicorn worker shares one
exact count (DRF's stock throttles read, then write, and can be overrun). If the cache is unreachable the
request is let through and the failure logged: losing telemetry is worse than a missed limit.
"""

import logging
import time
from dataclasses import dataclass

from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from tenants.models import Tenant

logger = logging.getLogger(__name__)

ADMIN = "admin"
TELEMETRY = "telemetry"
WINDOW_SECONDS = 60


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    count: int
    retry_after: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit == 0 else max(0, self.limit - self.count)


def limit_for(tenant: Tenant, bucket: str) -> int:
    return tenant.telemetry_rate_limit_per_minute if bucket == TELEMETRY else tenant.admin_rate_limit_per_minute


def _window(now: float) -> tuple[int, int]:
    window = int(now // WINDOW_SECONDS)
    retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
    return window, retry_after


def rate_limit_hit(*, tenant: Tenant, bucket: str) -> RateDecision:
    limit = limit_for(tenant, bucket)
    window, retry_after = _window(time.time())
    if limit == 0:
        return RateDecision(allowed=True, limit=0, count=0, retry_after=retry_after)
    key = f"rl:{tenant.pk}:{bucket}:{window}"
    try:
        count = _incr_with_expiry(key)
    except Exception as exc:
        logger.warning("rate limiter unavailable, letting request through tenant=%s error=%s",
                       tenant.slug, type(exc).__name__)
        return RateDecision(allowed=True, limit=limit, count=0, retry_after=retry_after)
    return RateDecision(allowed=count <= limit, limit=limit, count=count, retry_after=retry_after)


def _incr_with_expiry(key: str) -> int:
    """Atomically count one hit. On Redis: SET NX EX (the window's expiry, set once) and INCR in one MULTI/EXEC
    round trip — any Redis version, and the counter can never be left without an expiry."""
    client_getter = getattr(getattr(cache, "_cache", None), "get_client", None)
    if client_getter is not None:
        pipe = client_getter(write=True).pipeline(transaction=True)
        full_key = cache.make_key(key)
        pipe.set(full_key, 0, ex=WINDOW_SECONDS + 5, nx=True)
        pipe.incr(full_key)
        return int(pipe.execute()[1])
    if cache.add(key, 1, timeout=WINDOW_SECONDS + 5):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=WINDOW_SECONDS + 5)
        return 1


def rate_limit_peek(*, tenant: Tenant, bucket: str) -> RateDecision:
    limit = limit_for(tenant, bucket)
    window, retry_after = _window(time.time())
    try:
        count = int(cache.get(f"rl:{tenant.pk}:{bucket}:{window}") or 0)
    except Exception:
        count = 0
    return RateDecision(allowed=limit == 0 or count < limit, limit=limit, count=count, retry_after=retry_after)


class TenantRateThrottle(BaseThrottle):
    """Counts the request in the view's bucket (`rate_limit_bucket`, default admin)."""

    def allow_request(self, request, view):
        tenant = getattr(request, "tenant", None)
        if tenant is None:
            return True
        bucket = getattr(view, "rate_limit_bucket", ADMIN)
        decision = rate_limit_hit(tenant=tenant, bucket=bucket)
        request.rate_decision = decision
        self.decision = decision
        if not decision.allowed and bucket == TELEMETRY:
            from tenants.services import rejected_telemetry_count

            rejected_telemetry_count(tenant=tenant, reason="rate_limited")
        return decision.allowed

    def wait(self):
        return self.decision.retry_after
