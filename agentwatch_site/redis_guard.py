"""Skip Redis for a while once it stops answering.

A hung Redis (a server that accepts connections but never replies, a blackholed network) costs every Redis call
its full socket timeout (REDIS_SOCKET_TIMEOUT), and a telemetry request makes up to four optional ones in a row
(the rate-limit lease, the remembered session limit, the key's last-use touch, the recorder wake-up): 1–2 s, past
aw-sdk's own timeout, so agents either fail open unchecked or raise. After one call times out, this process skips
those calls for REDIS_BACKOFF_SECONDS and takes each one's fallback at once — the rate limit is counted in
the process, the beat sweep records the events, the touch and the remembered limit wait — then lets the next call
try again.

Only timeouts open the gap: a refused connection (Redis down or restarting) fails in well under a millisecond,
so those calls keep trying and resume the moment Redis is back. Only calls that have a fallback are guarded."""

import time

import redis.exceptions
from django.conf import settings

_skip_until = float("-inf")


def redis_skipped() -> bool:
    """True while this process is skipping optional Redis calls after a timeout."""
    return time.monotonic() < _skip_until


def redis_failed(exc: BaseException) -> None:
    """Note a failed optional Redis call: a timeout starts a gap of REDIS_BACKOFF_SECONDS."""
    global _skip_until
    # kombu (a task publish) re-raises the Redis timeout as its own OperationalError: look at the cause too.
    if any(isinstance(error, (redis.exceptions.TimeoutError, TimeoutError)) for error in (exc, exc.__cause__)):
        _skip_until = time.monotonic() + settings.REDIS_BACKOFF_SECONDS


def redis_guard_reset() -> None:
    """Forget a gap (tests)."""
    global _skip_until
    _skip_until = float("-inf")
