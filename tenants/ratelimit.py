"""Per-tenant, per-minute request limits in two buckets, counted atomically in the shared cache.

In production the cache is Redis and every gunicorn worker counts in one shared counter per tenant, bucket and
minute (DRF's stock throttles read, then write, and can be overrun). Each hit is numbered 1, 2, 3, … across all
processes, and a hit is allowed while its number is within the limit, so never more than the limit gets
through. A process claims its numbers in leases (one INCRBY for several hits) when the limit is far away:
at most 1/1000 of the limit and 50 numbers at a time, one at a time for a limit under 2,000 — so a tenant
sending 1,000 requests/s costs 20 Redis round trips a second, not 1,000. The price: numbers a process leased and
did not use before the minute ended are lost to the others, so a tenant may be refused up to 0.1 % of its limit
per process early (only when its traffic stops reaching some processes), and /v1/me counts leased numbers as
used. If the cache is unreachable, each process counts the tenant's hits on its own and holds them to the limit,
and the failure is logged: a tenant within its limit loses no telemetry (losing telemetry is worse than a missed
limit), and a runaway one is still stopped, at no more than the limit per process. After a timeout (a hung Redis)
the process counts on its own without asking Redis for REDIS_BACKOFF_SECONDS (agentwatch_site/redis_guard.py).
"""

import logging
import threading
import time
from dataclasses import dataclass

from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from agentwatch_site.redis_guard import redis_failed, redis_skipped
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
    if redis_skipped():
        count = _count_here(tenant.pk, bucket, window)
    else:
        try:
            count = _next_number(tenant.pk, bucket, window, limit)
        except Exception as exc:
            redis_failed(exc)
            logger.warning("rate limiter unavailable, counting in this process tenant=%s error=%s",
                           tenant.slug, type(exc).__name__)
            count = _count_here(tenant.pk, bucket, window)
    return RateDecision(allowed=count <= limit, limit=limit, count=count, retry_after=retry_after)


LEASE_FRACTION = 1000  # a lease is at most limit / LEASE_FRACTION numbers …
LEASE_MAX = 50  # … and at most this many


@dataclass
class _Lease:
    window: int
    next: int  # the next number this process may hand out
    last: int  # the last number of the lease (inclusive)


_leases: dict[tuple[int, str], _Lease] = {}
_leases_lock = threading.Lock()


def _next_number(tenant_id: int, bucket: str, window: int, limit: int) -> int:
    """This hit's number in the tenant's shared count for the window, from this process's lease when it has one
    left, else from a new lease (one Redis round trip, outside the lock: a slow Redis call holds up no other
    thread; two threads leasing at once both get disjoint numbers, and the lease kept is the later one)."""
    key = (tenant_id, bucket)
    with _leases_lock:
        lease = _leases.get(key)
        if lease is not None and lease.window == window and lease.next <= lease.last:
            lease.next += 1
            return lease.next - 1
        seen = lease.last if lease is not None and lease.window == window else 0
    size = max(1, min(LEASE_MAX, (limit - seen) // LEASE_FRACTION))
    last = _incr_with_expiry(f"rl:{tenant_id}:{bucket}:{window}", size)
    with _leases_lock:
        _leases[key] = _Lease(window=window, next=last - size + 2, last=last)
    return last - size + 1


_counted_here: dict[tuple[int, str], tuple[int, int]] = {}  # (tenant, bucket) → (window, hits) while Redis is away


def _count_here(tenant_id: int, bucket: str, window: int) -> int:
    """This hit's number in this process's own count for the window, used while the shared count cannot be
    reached."""
    key = (tenant_id, bucket)
    with _leases_lock:
        counted_window, hits = _counted_here.get(key, (window, 0))
        hits = hits + 1 if counted_window == window else 1
        _counted_here[key] = (window, hits)
    return hits


def rate_limit_leases_forget() -> None:
    """Drop this process's leases and own counts (tests do, after clearing the shared counters)."""
    with _leases_lock:
        _leases.clear()
        _counted_here.clear()


# INCRBY, and on the window's first hit its expiry, as one atomic script: one round trip and one integer reply, and
# a counter can never be left without an expiry (any Redis version; EVALSHA, loaded again if Redis restarted).
_INCR_WITH_EXPIRY_LUA = (
    "local n = redis.call('INCRBY', KEYS[1], ARGV[2]) "
    "if n == tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return n"
)
_incr_script = None


def _incr_with_expiry(key: str, amount: int = 1) -> int:
    """Atomically add `amount` hits in the shared cache and return the new count (a Lua script on Redis; add +
    incr elsewhere)."""
    global _incr_script
    client_getter = getattr(getattr(cache, "_cache", None), "get_client", None)
    if client_getter is not None:
        client = client_getter(write=True)
        if _incr_script is None:
            _incr_script = client.register_script(_INCR_WITH_EXPIRY_LUA)
        return int(_incr_script(keys=[cache.make_key(key)], args=[WINDOW_SECONDS + 5, amount], client=client))
    if cache.add(key, amount, timeout=WINDOW_SECONDS + 5):
        return amount
    try:
        return cache.incr(key, amount)
    except ValueError:  # expired between add and incr
        cache.add(key, amount, timeout=WINDOW_SECONDS + 5)
        return amount


def rate_limit_peek(*, tenant: Tenant, bucket: str) -> RateDecision:
    """The count so far, without counting: the shared one, or this process's own while Redis cannot be reached."""
    limit = limit_for(tenant, bucket)
    window, retry_after = _window(time.time())
    try:
        if redis_skipped():
            raise ConnectionError("skipping Redis after a timeout")
        count = int(cache.get(f"rl:{tenant.pk}:{bucket}:{window}") or 0)
    except Exception:
        with _leases_lock:
            counted_window, hits = _counted_here.get((tenant.pk, bucket), (window, 0))
        count = hits if counted_window == window else 0
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
