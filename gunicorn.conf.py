"""gunicorn settings for production. Override with GUNICORN_* environment variables or CLI flags."""

import multiprocessing
import os


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    """A bad value stops gunicorn with one clear line, not a traceback from inside its config loader."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"gunicorn.conf.py: {name} must be at least {minimum}, got {value}")
    return value


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = _env_int("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1)
threads = _env_int("GUNICORN_THREADS", 1)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
timeout = _env_int("GUNICORN_TIMEOUT", 30, minimum=0)
graceful_timeout = 20
keepalive = 5
# Request limits: an oversized request line or header is refused by gunicorn itself (400/431), never a 5xx.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = os.environ.get("GUNICORN_ACCESSLOG", None)
# gunicorn's control socket (for `gunicornc`) defaults to one path per user, so a second gunicorn on the machine
# would take it over from the first: off unless the operator names a path for this instance.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
control_socket_disable = not control_socket
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def child_exit(server, worker):
    """With PROMETHEUS_MULTIPROC_DIR set, forget a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
