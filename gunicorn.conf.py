"""gunicorn settings for production. Override with GUNICORN_* environment variables or CLI flags."""

import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys

from gunicorn import glogging, util

HERE = os.path.dirname(os.path.abspath(__file__))


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


def _env_text(name: str, default: str | None) -> str | None:
    """Unset or empty is the default (an empty GUNICORN_BIND bound nothing while workers crash-looped)."""
    return os.environ.get(name, "").strip() or default


def _bind(raw: str) -> list[str]:
    """HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N, comma-separated; a port out of range is one clear line."""
    addresses = [part.strip() for part in raw.split(",") if part.strip()]
    for address in addresses:
        if address.startswith(("unix:", "fd://")):
            continue
        port = address.rpartition(":")[2] if ":" in address.rpartition("]")[2] else "8000"
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise SystemExit(f"gunicorn.conf.py: GUNICORN_BIND must be HOST:PORT with a port from 1 to 65535 "
                             f"(or unix:PATH), got {address!r}")
    return addresses


def _worker_class(name: str) -> str:
    try:
        util.load_class(name, default="gunicorn.workers.sync.SyncWorker", section="gunicorn.workers")
    except (ImportError, RuntimeError, AttributeError, ValueError):
        raise SystemExit(f"gunicorn.conf.py: GUNICORN_WORKER_CLASS {name!r} cannot be loaded (not a gunicorn worker "
                         "class, or its package is not installed)") from None
    return name


bind = _bind(_env_text("GUNICORN_BIND", "0.0.0.0:8000"))
workers = _env_int("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1)
threads = _env_int("GUNICORN_THREADS", 1)
worker_class = _worker_class(_env_text("GUNICORN_WORKER_CLASS", "sync"))
timeout = _env_int("GUNICORN_TIMEOUT", 30, minimum=0)
graceful_timeout = 20
keepalive = 5
# Request limits: an oversized request line or header is refused by gunicorn itself (400/431), never a 5xx.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = _env_text("GUNICORN_ACCESSLOG", None)
loglevel = os.environ.get("LOG_LEVEL", "info").strip().lower() or "info"  # until on_starting has read the settings

# The master never imports the project: workers import it fresh (a HUP reload picks up new code and settings), and
# `--env`/`raw_env` values, applied after this file is read, reach it. The settings are checked in a child
# interpreter instead, in on_starting (after `--env` is applied, before binding or forking): a bad environment
# variable stops gunicorn with one line saying which, not every worker failing to boot with a traceback.
_CHECK_SETTINGS = """
import json
from agentwatch_site.env import settings_or_exit
settings_or_exit("gunicorn")
from django.conf import settings
print(json.dumps({"level": settings.LOG_LEVEL, "json": settings.LOG_JSON}))
"""


def _checked_settings() -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE",
                                                                   "agentwatch_site.settings")}
    result = subprocess.run([sys.executable, "-c", _CHECK_SETTINGS], cwd=HERE, env=env, capture_output=True,
                            text=True, timeout=120)
    if result.returncode:
        lines = result.stderr.strip().splitlines()
        raise SystemExit(lines[-1] if lines else f"gunicorn: the settings check exited {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _formatters():
    """agentwatch_site/logging.py loaded on its own (it imports only the standard library), not as part of the
    project package."""
    spec = importlib.util.spec_from_file_location("agentwatch_gunicorn_log_format",
                                                  os.path.join(HERE, "agentwatch_site", "logging.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Logger(glogging.Logger):
    """gunicorn's own lines (workers booting and exiting, timeouts, refused requests) in the format of every other
    line — JSON with DEBUG off — at LOG_LEVEL, once on_starting has read the settings; their request id is "-".
    gunicorn's handlers stay (stderr, or --error-logfile, syslog); only their format and level change. The access
    log, off unless GUNICORN_ACCESSLOG names a file or "-", keeps gunicorn's format."""

    settings_read: dict | None = None

    def setup(self, cfg):
        super().setup(cfg)
        read = type(self).settings_read
        if read is None:
            return
        log_format = _formatters()
        formatter = log_format.JsonFormatter() if read["json"] else log_format.KeyValueFormatter()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)
        self.error_log.setLevel(read["level"])


logger_class = Logger


def on_starting(server):
    type(server.log).settings_read = _checked_settings()
    server.log.setup(server.cfg)


def on_reload(server):
    """HUP: the workers about to start will read the settings again, so they are checked again."""
    on_starting(server)
# gunicorn's control socket (for `gunicornc`) defaults to one path per user, so a second gunicorn on the machine
# would take it over from the first: off unless the operator names a path for this instance.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
control_socket_disable = not control_socket
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def _switched_off(name: str) -> bool:
    """As agentwatch_site.env.env_bool reads a boolean: empty is false too."""
    raw = os.environ.get(name)
    return raw is not None and raw.strip().lower() in {"0", "false", "no", "off", ""}


# Which proxy headers make gunicorn call a request HTTPS (from FORWARDED_ALLOW_IPS): X-Forwarded-Proto, the one
# header Django is told to trust (settings.SECURE_PROXY_SSL_HEADER), and none when SECURE_PROXY_SSL_HEADER is off.
# gunicorn's default also trusts X-Forwarded-Ssl and X-Forwarded-Protocol, which a proxy setting only
# X-Forwarded-Proto passes on from the client unchanged. (Without HTTPS, Django takes the scheme from gunicorn.)
secure_scheme_headers = {} if _switched_off("SECURE_PROXY_SSL_HEADER") else {"X-FORWARDED-PROTO": "https"}


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
          "The request line (method, path and query string) is too long"),
    417: ("invalid_request_error", "expectation_failed", "The Expect header cannot be met"),
    431: ("invalid_request_error", "headers_too_large", "Too many request headers, or one too large"),
    501: ("invalid_request_error", "unsupported_transfer_coding", "This transfer coding is not supported"),
}
_MESSAGE_MAX = 300


def write_json_error(sock, status_int, reason, mesg):
    kind, code, summary = _ERROR_CODES.get(
        status_int, ("api_error", "internal_error", "The server could not answer this request"))
    message = f"{summary}: {mesg}" if mesg else f"{summary}."
    if len(message) > _MESSAGE_MAX:
        message = message[:_MESSAGE_MAX - 1] + "…"
    # No request id: the request never reached the application ("-", as in the logs).
    body = json.dumps({"error": {"type": kind, "code": code, "message": message, "request_id": "-"}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = write_json_error
