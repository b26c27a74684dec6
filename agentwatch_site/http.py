"""Who sent a request, as seen through the reverse proxies in front of gunicorn."""

from django.conf import settings


def client_ip(request) -> str:
    """The client's address. Behind TRUSTED_PROXY_COUNT reverse proxies that each append the address they received
    the request from to X-Forwarded-For (nginx's `$proxy_add_x_forwarded_for`), it is the entry that many places
    from the right: entries further left came from the client itself and can say anything. Without a proxy (or
    with too few entries, a request that did not come through them) it is the socket's own address."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    hops = settings.TRUSTED_PROXY_COUNT
    if not hops:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < hops:
        return remote
    return forwarded[-hops][:100]
