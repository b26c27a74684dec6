"""Parse configuration from the environment; a bad value fails loudly at start-up."""

import ipaddress
import math
import os
import re
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def env_ip_networks(name: str, default: list[str]) -> list[IPNetwork]:
    """Comma-separated addresses and networks (IPv4 or IPv6, `10.0.0.5`, `10.0.0.0/8`, `fd00::/8`); an address is a
    network of one. A typo would silently match nothing, so every entry must parse."""
    networks = []
    for entry in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as exc:
            hint = ""
            if "has host bits set" in str(exc):
                hint = f" (the network is {ipaddress.ip_network(entry, strict=False)})"
            raise ImproperlyConfigured(
                f"{name} entry {entry!r} is not an IP address or network{hint}: list addresses or CIDR networks, "
                f"comma-separated (e.g. {name}=127.0.0.1,::1,10.0.0.0/8)") from None
    return networks


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, so an error message never shows a credential."""
    # Greedy up to the last "@": a password may hold an unescaped "@" or "/".
    return re.sub(r"(://[^/:@]*:).*@", r"\1***@", url)


def env_database_url(name: str, **options) -> dict | None:
    """The Django DATABASES entry for a database URL (dj-database-url), or None when the variable is unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    expected = f"expected e.g. postgres://user:password@host:5432/dbname, got {redact_url(raw)!r}"
    if "://" not in raw:
        raise ImproperlyConfigured(f"{name} is not a database URL: it has no scheme; {expected}")
    try:
        config = dj_database_url.parse(raw, **options)
    except dj_database_url.UnknownSchemeError:
        raise ImproperlyConfigured(f"{name} has an unknown scheme {raw.split('://')[0]!r} (use postgres:// or "
                                   f"sqlite://); {expected}") from None
    except ValueError:
        raise ImproperlyConfigured(f"{name} cannot be parsed (a port that is not a number, or a character in the "
                                   f"user or password that must be %-escaped); {expected}") from None
    if not config.get("NAME") or config["NAME"] == ":memory:":
        raise ImproperlyConfigured(f"{name} must name a database (postgres://user:password@host:5432/dbname, or "
                                   f"sqlite:////absolute/path.sqlite3), got {redact_url(raw)!r}")
    return config


def env_redis_url(name: str) -> str:
    """A Redis URL (redis:// or rediss://), checked now rather than on the first request; "" when unset. A unix://
    socket is refused: the cache could use it, but the Celery broker (kombu) has no such transport, so the worker
    and beat would fail to start and every wake-up would fail to publish."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    problem = None
    try:
        parsed = urlsplit(raw)
        if parsed.scheme == "unix":
            problem = "a unix:// socket cannot carry the Celery broker; reach Redis over TCP (redis:// or rediss://)"
        elif parsed.scheme not in ("redis", "rediss"):
            problem = "it must start with redis:// or rediss://"
        elif not parsed.hostname:
            problem = "it names no host"
        else:
            parsed.port  # noqa: B018 - raises ValueError on a port that is not a number in range
            db = parsed.path.strip("/")
            if db and not db.isdigit():
                problem = f"the database number {db!r} is not a number"
    except ValueError as exc:
        problem = str(exc)
    if problem:
        raise ImproperlyConfigured(f"{name} is not a Redis URL: {problem}; expected e.g. redis://host:6379/0, got "
                                   f"{redact_url(raw)!r}")
    return raw


LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def env_log_level(name: str, default: str) -> str:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.upper() not in LOG_LEVELS:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return raw.upper()


# What Django matches against the Host header: "*", a name or IPv4 address, ".example.com" for a domain and its
# subdomains, or "[ipv6]". Anything else — a scheme, a port, a path, a "*." wildcard, a trailing dot — silently
# matches nothing, and every request would get 400.
_ALLOWED_HOST = re.compile(r"^(\*|\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])$")


def check_allowed_hosts(name: str, hosts: list[str]) -> list[str]:
    for host in hosts:
        valid = bool(_ALLOWED_HOST.match(host))
        if valid and host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                valid = False
        if not valid:
            raise ImproperlyConfigured(
                f"{name} entry {host!r} is not a host name Django can match: list names or addresses, "
                f"comma-separated, without a scheme, port, path or trailing dot; '.example.com' for a domain and its "
                f"subdomains (not '*.example.com'), IPv6 in brackets ('[::1]'), international names in their "
                f"xn-- form (e.g. {name}=agentwatch.example.com,10.0.0.5)."
            )
    return hosts


def settings_or_exit(program: str) -> None:
    """Load the settings now, or stop `program` with the one line that says which environment variable is wrong
    (ImproperlyConfigured at settings import), rather than a traceback with the line at its end."""
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 - loads the settings module
    except ImproperlyConfigured as exc:
        raise SystemExit(f"{program}: configuration error: {exc}") from None
