"""Who sent a request, as seen through the reverse proxies in front of gunicorn."""

import functools
import ipaddress
import logging

from django.conf import settings

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def _is_proxy_address(address: str) -> bool:
    """Loopback or private: where a reverse proxy in front of gunicorn connects from (the same host, or the
    internal network of a load balancer). A client on the internet has neither."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private


def client_ip(request) -> str:
    """The client's address. Behind TRUSTED_PROXY_COUNT reverse proxies that each append the address they received
    the request from to X-Forwarded-For (nginx's `$proxy_add_x_forwarded_for`), it is the entry that many places
    from the right: entries further left came from the client itself and can say anything. The header is read only
    from a proxy's address (loopback or private): a client reaching gunicorn directly cannot pick its own. Otherwise
    (or with too few entries) it is the socket's own address."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    hops = settings.TRUSTED_PROXY_COUNT
    if not hops or not _is_proxy_address(remote):
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < hops:
        return remote
    return forwarded[-hops][:100]


_warned_about_proxy = False


def client_ip_is_a_proxys(request) -> bool:
    """Whether client_ip() is evidently a proxy's address rather than the client's: a request forwarded by a proxy
    (X-Forwarded-For, from a loopback or private address) while TRUSTED_PROXY_COUNT is 0. Every client then shares
    that one address, so limits counted per address would be limits for everyone. Warns once per process."""
    global _warned_about_proxy
    if settings.TRUSTED_PROXY_COUNT or "HTTP_X_FORWARDED_FOR" not in request.META:
        return False
    if not _is_proxy_address(request.META.get("REMOTE_ADDR") or ""):
        return False
    if not _warned_about_proxy:
        _warned_about_proxy = True
        logger.warning("requests arrive through a proxy (X-Forwarded-For from %s) but TRUSTED_PROXY_COUNT is 0: "
                       "sign-in failures cannot be told apart by client address; set TRUSTED_PROXY_COUNT (README)",
                       request.META.get("REMOTE_ADDR"))
    return True
