"""Bearer API-key authentication for every /v1 endpoint. Sets request.tenant and request.api_key."""

import logging
import time

from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions

from agentwatch_site.redis_guard import redis_failed, redis_skipped
from tenants.keys import KEY_PREFIX
from tenants.selectors import api_key_by_secret

logger = logging.getLogger(__name__)

TOUCH_INTERVAL_SECONDS = 60
# Schemes an HTTP client may send (safe to repeat); anything else may be a secret sent without a scheme.
KNOWN_SCHEMES = frozenset({"token", "basic", "digest", "negotiate", "ntlm", "apikey", "api-key", "key", "hoba",
                           "mutual", "aws4-hmac-sha256", "dpop", "gnap", "privatetoken", "scram-sha-256"})


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.strip():
            raise exceptions.AuthenticationFailed(
                f"Missing Authorization header. Send `Authorization: Bearer {KEY_PREFIX}…`.",
                code="missing_authorization",
            )
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer":
            raise exceptions.AuthenticationFailed(_wrong_scheme(scheme), code="invalid_auth_scheme")
        if not value.startswith("aw_"):
            raise exceptions.AuthenticationFailed(
                f"Malformed API key: AgentWatch keys start with `aw_` (for example `{KEY_PREFIX}…`).",
                code="malformed_api_key",
            )
        key = api_key_by_secret(raw_key=value)
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown API key.", code="invalid_api_key")
        now = timezone.now()
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API key has expired.", code="expired_api_key")
        request.tenant = key.tenant
        request.api_key = key
        _touch_at_most_once_a_minute(key, now)
        return (None, key)

    def authenticate_header(self, request):
        return 'Bearer realm="agentwatch"'


def _wrong_scheme(scheme: str) -> str:
    """What to say about an Authorization header without `Bearer`: never repeating it when it may be the key
    itself (the header holding the key alone)."""
    use = f"use `Authorization: Bearer {KEY_PREFIX}…`"
    if scheme.startswith("aw_"):
        return f"The Authorization header has no scheme: {use} (the word Bearer, a space, then the key)."
    if scheme.lower() in KNOWN_SCHEMES:
        return f"Wrong authorization scheme {scheme!r}: {use}."
    return f"Wrong authorization scheme: {use}."


# key id → when this process last passed the shared gate for it: spares a Redis round trip on every request.
_touched_here: dict[int, float] = {}


def _touch_at_most_once_a_minute(key, now) -> None:
    """last_used_at is written by a task, gated in the shared cache: no database write on the request path."""
    if key.last_used_at is not None and (now - key.last_used_at).total_seconds() < TOUCH_INTERVAL_SECONDS:
        return
    moment = time.monotonic()
    if moment - _touched_here.get(key.pk, -TOUCH_INTERVAL_SECONDS) < TOUCH_INTERVAL_SECONDS:
        return
    if redis_skipped():
        return  # the next request after the gap tries again
    _touched_here[key.pk] = moment
    from tenants.tasks import api_key_touch_task

    try:
        if cache.add(f"keytouch:{key.pk}", 1, timeout=TOUCH_INTERVAL_SECONDS):
            api_key_touch_task.delay(key.pk, now.isoformat())
    except Exception as exc:
        redis_failed(exc)
        logger.warning("could not schedule api key touch key_prefix=%s error=%s", key.prefix, type(exc).__name__)
