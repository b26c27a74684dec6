"""Log formatting: key=value lines in development, one JSON object per line in production.

Every line carries the id of the request it belongs to (or "-" outside a request).
"""

import functools
import json
import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "request_id"}


class WarningWithoutTraceback(logging.Filter):
    """For a logger whose errors are the client's doing (django.security.DisallowedHost: every scanner sending a
    wrong Host header): one WARNING line instead of an ERROR with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


# Tasks that run every few seconds (beat's sweep and webhook retries) or after nearly every post (the recording
# wake-up, an API key's last use, the alert check after a batch): Celery's "received" and "succeeded" lines for them
# at INFO would be most of a worker's log and hide the rest.
ROUTINE_TASKS = frozenset({
    "usage.tasks.record_pending_events", "usage.tasks.sweep_unrecorded_events",
    "tenants.tasks.retry_due_webhook_deliveries", "tenants.tasks.api_key_touch_task",
    "budgets.tasks.budget_alerts_check",
})


class RoutineTasksAtDebug(logging.Filter):
    """For Celery's task lines — celery.worker.strategy's "received", celery.app.trace's "succeeded", celery.beat's
    "Sending due task" — about ROUTINE_TASKS: DEBUG lines, shown only at LOG_LEVEL=DEBUG. Every other line (a
    retry, which Celery logs at INFO too; a failure) is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno != logging.INFO or record.msg not in _routine_messages()
                or not _names_routine_task(record.args)):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


@functools.cache
def _routine_messages() -> frozenset[str]:
    from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS  # only where Celery logs: not at import

    return frozenset({LOG_RECEIVED, LOG_SUCCESS, "Scheduler: Sending due task %s (%s)"})


def _names_routine_task(args) -> bool:
    if isinstance(args, dict):  # celery.app.trace and celery.worker.strategy pass the task's context
        return args.get("name") in ROUTINE_TASKS
    return isinstance(args, tuple) and any(isinstance(arg, str) and arg in ROUTINE_TASKS for arg in args)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def _extra_fields(record: logging.LogRecord) -> dict:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRS}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname,
            record.name,
            f"request_id={getattr(record, 'request_id', '-')}",
            record.getMessage(),
        ]
        parts += [f"{key}={value}" for key, value in _extra_fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        payload.update(_extra_fields(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
