"""POST /v1/ingest: validate a body as aw-sdk 1.0.1 sends it (or a batch), make it durable, wake a worker.

Validation is hand-written rather than a DRF serializer: a 1,000-event batch is validated in about a
millisecond this way, and this is the hottest path of the product. The rules are documented in the OpenAPI
schema (usage.api.IngestEventDoc) and tested rule by rule.
"""

import datetime
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from agentwatch_site.db import connection_lost
from agentwatch_site.errors import InvalidRequest, validation_error
from agentwatch_site.redis_guard import redis_failed, redis_skipped
from agentwatch_site.text import CONTROL_CHARACTERS, shows_nothing
from tenants.models import Team, Tenant
from usage.models import UsageEvent
from usage.services.bulk import CHUNK_ROWS, insert_rows

logger = logging.getLogger(__name__)

MAX_COUNT = 1_000_000_000
MAX_METADATA_BYTES = 4096
MAX_RISKS = 32
FUTURE_TOLERANCE = datetime.timedelta(minutes=5)
EARLIEST = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
RISK_TAG = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
WAKE_KEY = "ingest:wake"
WAKE_TTL_SECONDS = 5
# A process that saw the wake flag set knows a recording run is queued or starting: for this long after, its
# posts skip the Redis round trip. Safe because a run lingers longer (usage.tasks.RECORD_LINGER_SECONDS).
WAKE_SKIP_SECONDS = 0.1


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes):
    if not body:
        raise InvalidRequest("Request body is empty; send a JSON object.", code="invalid_json")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not valid UTF-8.", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("Request body is nested too deeply.", code="invalid_json") from None
    except ValueError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}", code="invalid_json") from None


@dataclass
class _Checker:
    raw: dict
    path: str
    errors: dict

    def fail(self, field: str, message: str) -> None:
        self.errors.setdefault(f"{self.path}{field}", []).append(message)

    def text(self, field: str, *, max_length: int, required: bool = False, printable: bool = False) -> str:
        value = self.raw.get(field)
        if value is None or value == "":
            if required:
                self.fail(field, "This field is required.")
            return ""
        if not isinstance(value, str):
            self.fail(field, "Must be a string.")
            return ""
        if required and not value.strip():
            self.fail(field, "Must not be empty.")
            return ""
        if len(value) > max_length:
            self.fail(field, f"Must be at most {max_length} characters (got {len(value)}).")
            return ""
        if printable and not value.isprintable():
            self.fail(field, "Must contain printable characters only.")
            return ""
        if CONTROL_CHARACTERS.search(value):
            self.fail(field, "Must not contain control characters.")
            return ""
        if _SURROGATE.search(value):
            self.fail(field, "Must be valid UTF-8 text.")
            return ""
        return value

    def count(self, field: str, *, negative_is_zero: bool = False) -> int | None:
        value = self.raw.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "Must be an integer.")
            return None
        if negative_is_zero and -MAX_COUNT <= value < 0:
            return 0
        if value < 0 or value > MAX_COUNT:
            self.fail(field, f"Must be between 0 and {MAX_COUNT}.")
            return None
        return value


def _parse_timestamp(check: _Checker, now: datetime.datetime) -> datetime.datetime:
    value = check.raw.get("timestamp")
    if value is None:
        return now
    if not isinstance(value, str) or len(value) > 64:
        check.fail("timestamp", "Must be an ISO 8601 date-time string.")
        return now
    if value[-1:] == "z":
        value = value[:-1] + "Z"  # RFC 3339 allows a lowercase z (and t, which fromisoformat takes already)
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        check.fail("timestamp", "Must be an ISO 8601 date-time, e.g. 2026-11-25T09:30:00Z.")
        return now
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    try:
        parsed = parsed.astimezone(datetime.UTC)
    except (OverflowError, ValueError):
        check.fail("timestamp", "Is out of range.")
        return now
    if parsed > now + FUTURE_TOLERANCE:
        check.fail("timestamp", "Must not be more than 5 minutes in the future.")
    elif parsed < EARLIEST:
        check.fail("timestamp", "Must not be before 2000-01-01.")
    return parsed


def validate_event(raw, *, path: str, errors: dict, now: datetime.datetime) -> dict | None:
    """One event → clean field values, or None with messages added to `errors` under `path`."""
    if not isinstance(raw, dict):
        errors.setdefault(path or "non_field_errors", []).append("Each event must be a JSON object.")
        return None
    before = len(errors)
    check = _Checker(raw=raw, path=f"{path}." if path else "", errors=errors)
    clean = {
        # Trimmed as the Pricing page trims a price's model: "gpt-4o " is gpt-4o, priced and rolled up as such.
        "model": check.text("model", max_length=200, required=True).strip(),
        "provider": check.text("provider", max_length=50),
        "prompt_tokens": check.count("prompt_tokens") or 0,
        "completion_tokens": check.count("completion_tokens") or 0,
        # aw-sdk times a call with time.time(): a clock stepped back during the call gives a negative latency.
        # The call's tokens and spend must still count, so that is stored as 0 rather than refused.
        "latency_ms": check.count("latency_ms", negative_is_zero=True) or 0,
        "team_name": check.text("team", max_length=100),
        "project": check.text("project", max_length=200),
        "session_id": check.text("session_id", max_length=200, printable=True),
        "iteration_index": check.count("iteration_index"),
        "customer_id": check.text("customer_id", max_length=200),
        "user_id": check.text("user_id", max_length=200),
        "feature_id": check.text("feature_id", max_length=200),
        "event_id": check.text("event_id", max_length=100, printable=True),
        "timestamp": _parse_timestamp(check, now),
    }
    if clean["team_name"] and shows_nothing(clean["team_name"]):
        check.fail("team", "Must not be blank (or only invisible characters).")
    clean["team_name"] = Team.clean_name(clean["team_name"])

    risks = raw.get("identified_risks")
    if risks is None:
        clean["identified_risks"] = []
    elif not isinstance(risks, list) or len(risks) > MAX_RISKS:
        check.fail("identified_risks", f"Must be a list of at most {MAX_RISKS} risk tags.")
    else:
        tags = []
        for tag in risks:
            if not isinstance(tag, str) or not RISK_TAG.match(tag):
                check.fail("identified_risks", "Each risk tag must match ^[A-Z][A-Z0-9_]{0,63}$ (e.g. PII_EMAIL).")
                break
            if tag not in tags:
                tags.append(tag)
        clean["identified_risks"] = tags

    status = raw.get("status")
    if status is None:
        clean["status"] = UsageEvent.Status.OK
    elif status not in UsageEvent.Status.values:
        check.fail("status", "Must be 'ok' or 'error'.")
    else:
        clean["status"] = status

    metadata = raw.get("metadata")
    if metadata is None:
        clean["metadata"] = {}
    elif not isinstance(metadata, dict):
        check.fail("metadata", "Must be a JSON object.")
    else:
        try:
            dumped = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
            size = len(dumped.encode("utf-8"))
        except (ValueError, RecursionError):  # NaN/Infinity (e.g. 1e999), lone surrogates, absurd nesting
            check.fail("metadata", "Must be a JSON object of finite numbers and valid UTF-8 text.")
        else:
            if size > MAX_METADATA_BYTES:
                check.fail("metadata", f"Must be at most {MAX_METADATA_BYTES} bytes as JSON.")
            elif "\x00" in dumped or "\\u0000" in dumped:
                check.fail("metadata", "Must not contain null characters.")
            else:
                clean["metadata"] = metadata
    return clean if len(errors) == before else None


def parse_ingest_body(data, *, now: datetime.datetime) -> list[dict]:
    """A single event object or {"events": [...]}; any invalid event rejects the whole batch."""
    if not isinstance(data, dict):
        raise InvalidRequest("Body must be a JSON object: one event, or {\"events\": [...]}.", code="invalid_body")
    errors: dict[str, list[str]] = {}
    if "events" in data and data["events"] is not None:
        events = data["events"]
        if not isinstance(events, list):
            raise validation_error({"events": ["Must be a list of event objects."]})
        if not events:
            raise validation_error({"events": ["Must contain at least one event."]})
        if len(events) > settings.INGEST_MAX_BATCH:
            raise validation_error(
                {"events": [f"At most {settings.INGEST_MAX_BATCH} events per request (got {len(events)})."]}
            )
        cleaned = [validate_event(raw, path=f"events[{i}]", errors=errors, now=now) for i, raw in enumerate(events)]
    else:
        cleaned = [validate_event(data, path="", errors=errors, now=now)]
    if errors:
        raise validation_error(errors)
    return cleaned


def event_batch_ingest(*, tenant: Tenant, events: list[dict], received_at: datetime.datetime) -> list[str]:
    """Insert the events in one statement and commit; a repeated (tenant, event_id) is a no-op, within the
    batch too. Returns the distinct event ids (client-supplied or assigned here). A connection lost under the
    INSERT is replaced and the INSERT run once more (aw-sdk sends each event once: a 503 would lose it)."""
    rows = []
    event_ids = []
    seen = set()
    for clean in events:
        event_id = clean.pop("event_id") or uuid.uuid4().hex
        if event_id in seen:
            continue
        seen.add(event_id)
        event_ids.append(event_id)
        rows.append({**clean, "tenant_id": tenant.pk, "event_id": event_id, "received_at": received_at})
    db = connections[DEFAULT_DB_ALIAS]
    if db.in_atomic_block:  # the caller's transaction: it decides what happens on an error
        _insert(rows)
        return event_ids
    # The connection the INSERT starts on: a pooled one found dead is replaced here, first, so that failing to
    # connect (an outage) is not taken for a connection lost under the INSERT and tried again.
    db.close_if_health_check_failed()
    db.ensure_connection()
    opened = db.connection
    try:
        _insert(rows)
    except Exception as exc:
        if not connection_lost(exc, opened=opened):
            raise
        # The connection ended under the INSERT (a restart, a failover, a terminated backend), before or after
        # its commit. The same rows with the same event ids again, on a new connection: a commit that happened
        # makes them conflicts, which are skipped, so nothing is stored twice or lost, and the answer is the same.
        logger.warning("database connection lost during ingest; inserting the %d events again error=%s",
                       len(rows), str(exc).strip()[:200])
        db.close()
        _insert(rows)
    return event_ids


def _insert(rows: list[dict]) -> None:
    if len(rows) <= CHUNK_ROWS:
        insert_rows(UsageEvent, rows)  # one statement: atomic, and committed when it returns (autocommit)
    else:
        with transaction.atomic():
            insert_rows(UsageEvent, rows)


# When this process last saw the wake flag set (by itself or another), by its clock taken before asking Redis.
_run_known_at = float("-inf")
_clock = time.monotonic


def recorder_wake() -> None:
    """Ask a worker to record pending events, at most one queued wake-up at a time (the worker clears the
    flag before it starts claiming, so nothing committed before that is missed). Never raises: with Redis down
    the beat sweep records the events instead.

    One Redis round trip per post was a tenth of the request's cost under load, so a process that saw the flag
    set less than WAKE_SKIP_SECONDS ago does not ask again: the run that flag announces clears it after that
    moment and then keeps claiming for RECORD_LINGER_SECONDS (longer), so its last claim comes after this
    event's commit and records it; a run that runs out of time queues the next one itself. One case is left to
    the beat sweep (5 s): the process that set the flag failed to publish the task (a broker outage) while
    others saw the flag."""
    global _run_known_at
    from usage.tasks import record_pending_events

    eager = settings.CELERY_TASK_ALWAYS_EAGER
    asked = _clock()
    if not eager and (asked - _run_known_at < WAKE_SKIP_SECONDS or redis_skipped()):
        return
    flagged = False
    try:
        flagged = cache.add(WAKE_KEY, 1, timeout=WAKE_TTL_SECONDS)
        if flagged:
            record_pending_events.delay()
        _run_known_at = asked
    except Exception as exc:
        redis_failed(exc)
        logger.warning("could not wake the recorder; the sweep will record the events error=%s",
                       type(exc).__name__)
        if flagged:
            # The flag is set but no wake-up went out: let the next request try again (e.g. Redis just came back).
            try:
                cache.delete(WAKE_KEY)
            except Exception:
                logger.debug("could not clear the wake flag")


def recorder_wake_forget() -> None:
    """Forget the flag this process saw (tests: each starts with an empty cache and a new worker)."""
    global _run_known_at
    _run_known_at = float("-inf")
