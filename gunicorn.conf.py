"""gunicorn settings for production. Override with GUNICORN_* environment variables or CLI flags."""

import json
import logging
import multiprocessing
import os
import sys

from gunicorn import glogging, util

# The settings are loaded here, in the master, before it binds or forks: a bad environment variable stops gunicorn
# with one line saying which, instead of every worker failing to boot with a traceback.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentwatch_site.settings")
from agentwatch_site.env import settings_or_exit  # noqa: E402

settings_or_exit("gunicorn")
from django.conf import settings  # noqa: E402


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
loglevel = settings.LOG_LEVEL.lower()


class Logger(glogging.Logger):
    """gunicorn's own lines (starting, booting and exiting workers, timeouts) in the format of every other line
    (settings.LOGGING's: JSON with DEBUG off, with the request id field) at LOG_LEVEL. The access log, off unless
    GUNICORN_ACCESSLOG names a file or "-", keeps gunicorn's format."""

    def setup(self, cfg):
        super().setup(cfg)
        from agentwatch_site.logging import JsonFormatter, KeyValueFormatter, RequestIdFilter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter() if settings.LOG_JSON else KeyValueFormatter())
        handler.addFilter(RequestIdFilter())
        for old in list(self.error_log.handlers):
            self.error_log.removeHandler(old)
        self.error_log.addHandler(handler)


logger_class = Logger
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


# What gunicorn answers itself, before the request reaches Django (a request line or headers over the limits above,
# a malformed request line, a bad chunked body): the API's error envelope instead of gunicorn's HTML page, so a
# client reading `error.code` is never handed HTML. Every gunicorn worker class answers these through
# util.write_error; the status and reason are gunicorn's own.
_ERROR_CODES = {
    400: ("invalid_request_error", "malformed_request", "The request could not be read as HTTP"),
    403: ("permission_error", "forbidden", "The request was refused"),
    414: ("invalid_request_error", "request_line_too_long",
          f"The request line (method, path and query string) is over {limit_request_line} bytes"),
    417: ("invalid_request_error", "expectation_failed", "The Expect header cannot be met"),
    431: ("invalid_request_error", "headers_too_large",
          f"Too many request headers (at most {limit_request_fields}) or one over {limit_request_field_size} bytes"),
    501: ("invalid_request_error", "unsupported_transfer_coding", "This transfer coding is not supported"),
}
_MESSAGE_MAX = 300


def write_json_error(sock, status_int, reason, mesg):
    kind, code, summary = _ERROR_CODES.get(
        status_int, ("api_error", "internal_error", "The server could not answer this request"))
    message = f"{summary}: {mesg}" if mesg else f"{summary}."
    if len(message) > _MESSAGE_MAX:
        message = message[:_MESSAGE_MAX - 1] + "…"
    body = json.dumps({"error": {"type": kind, "code": code, "message": message, "request_id": None}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = write_json_error
