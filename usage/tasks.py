import datetime
import logging
import time

from celery import current_app, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection

from agentwatch_site.metrics import EVENTS_QUARANTINED, EVENTS_RECORDED
from usage.services.ingest import WAKE_KEY, WAKE_SKIP_SECONDS, WAKE_TTL_SECONDS
from usage.services.recording import (
    RecordResult,
    events_record_isolating,
    events_record_pending,
    time_limit_inside,
)

logger = logging.getLogger(__name__)

RECORD_LOOP_SECONDS = 60
# After a small batch, wait this long before claiming again: a trickle of single-event posts is then recorded in
# batches (one transaction and one set of roll-up statements for many events) at the cost of a little lag.
RECORD_COALESCE_SECONDS = 0.1
SMALL_BATCH = 200
# A woken run keeps claiming for at least this long after it cleared the wake flag, empty claims included: a web
# process that saw the flag set skips its own wake-ups for WAKE_SKIP_SECONDS (shorter), and relies on this run's
# last claim coming after its events' commit (usage.services.ingest.recorder_wake).
RECORD_LINGER_SECONDS = 0.25


def _dispatch_followups(result: RecordResult) -> None:
    """After the recording transaction committed: budget alerts (budgets app) and anomaly webhooks."""
    by_month: dict[tuple[int, datetime.date], list[int]] = {}
    for tenant_id, team_id, month in result.teams_touched:
        by_month.setdefault((tenant_id, month), []).append(team_id)
    try:
        for (tenant_id, month), team_ids in sorted(by_month.items()):
            current_app.tasks["budgets.tasks.budget_alerts_check"].delay(tenant_id, sorted(team_ids),
                                                                         month.isoformat())
    except Exception:
        # The events are recorded either way; a lost follow-up is logged, never a reason to stop recording.
        logger.exception("could not dispatch recording follow-ups")
    try:
        for anomaly_id in result.anomalies:
            anomaly_notify.delay(anomaly_id)
    except Exception:
        logger.exception("could not dispatch anomaly webhooks")


assert WAKE_SKIP_SECONDS < RECORD_LINGER_SECONDS, "a skipped wake-up must fall inside the run's linger"


def record_until_done(*, max_seconds: float = RECORD_LOOP_SECONDS, linger: float = 0.0) -> int:
    """Record pending events batch by batch until none is left (or time is up: the next wake-up goes on).
    With `linger`, an empty claim ends the run only if it started at least that long after the run did."""
    started = time.monotonic()
    deadline = started + max_seconds
    eager = settings.CELERY_TASK_ALWAYS_EAGER
    total = 0
    while (claim_started := time.monotonic()) < deadline:
        try:
            result = events_record_pending()
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            if time_limit_inside(exc):
                # Not the batch's fault: the connection is dropped (so is the transaction) and the run ends as at
                # any time limit; the next run records the batch.
                connection.close()
                raise SoftTimeLimitExceeded() from exc
            if isinstance(exc, OperationalError):
                # A deadlock or serialisation failure rolled the whole batch back; nothing was counted. Try again.
                logger.warning("recording batch rolled back, retrying error=%s", exc)
                time.sleep(0.05)
                continue
            # Retrying the same batch would fail forever: narrow it down instead.
            logger.exception("recording batch failed; recording the oldest events in smaller batches to find why")
            result = events_record_isolating(deadline=deadline)
            if not result.recorded and not result.quarantined:
                break  # nothing recorded: left pending for a later run (and the lag alarm), no hot loop
        if result.quarantined:
            EVENTS_QUARANTINED.inc(len(result.quarantined))
        if not result.recorded and not result.quarantined:
            if eager or claim_started - started >= linger:
                break
            time.sleep(RECORD_COALESCE_SECONDS)
            continue
        total += result.recorded
        EVENTS_RECORDED.inc(result.recorded)
        _dispatch_followups(result)
        if result.recorded < SMALL_BATCH and not eager:
            time.sleep(RECORD_COALESCE_SECONDS)
    else:
        # Out of time with events still coming: the run has not made the last claim that posts which skipped
        # their wake-up rely on, so it queues the next run itself.
        _wake_next_run()
    return total


def _wake_next_run() -> None:
    try:
        if cache.add(WAKE_KEY, 1, timeout=WAKE_TTL_SECONDS):
            record_pending_events.delay()
    except Exception as exc:
        logger.warning("could not queue the next recording run; the sweep will record the events error=%s",
                       type(exc).__name__)


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240, ignore_result=True)
def record_pending_events() -> int:
    """Woken by ingestion. Clears the wake flag first, so any event committed after this point wakes another,
    or (a post that skipped its wake-up, having seen the flag) is claimed by this run before it ends."""
    try:
        cache.delete(WAKE_KEY)
    except Exception as exc:
        logger.warning("could not clear the wake flag error=%s", type(exc).__name__)
    return record_until_done(linger=RECORD_LINGER_SECONDS)


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240, ignore_result=True)
def sweep_unrecorded_events() -> int:
    """Beat, every few seconds: records whatever a lost wake-up (e.g. Redis down at ingest time) missed."""
    recorded = record_until_done()
    if recorded:
        logger.info("sweep recorded events count=%s", recorded)
    return recorded


@shared_task(acks_late=True, time_limit=60, ignore_result=True)
def anomaly_notify(anomaly_id: int) -> None:
    from usage.services.anomalies import anomaly_notify as notify

    notify(anomaly_id=anomaly_id)


@shared_task(acks_late=True, time_limit=600, ignore_result=True)
def expire_sessions() -> int:
    """Beat, hourly: delete session states idle for 24 hours (their events stay)."""
    from usage.services.retention import session_states_expire

    deleted = session_states_expire()
    if deleted:
        logger.info("expired session states count=%s", deleted)
    return deleted


@shared_task(acks_late=True, time_limit=300, ignore_result=True)
def detect_spend_spikes() -> int:
    """Beat, every 15 minutes: last full hour per team against its 7-day hourly baseline. Also re-sends the
    webhooks of recent anomalies whose notification was lost."""
    from usage.services.anomalies import anomalies_notify_recent, spend_spikes_detect

    opened = spend_spikes_detect()
    anomalies_notify_recent()
    return len(opened)


@shared_task(acks_late=False, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60, ignore_result=True)
def purge_expired_events() -> int:
    """Beat, daily: retention purge. Not acks_late: a purge cut short is simply resumed by the next day's run."""
    from usage.services.retention import PurgeAlreadyRunning, purge_expired

    try:
        return purge_expired().events_deleted
    except PurgeAlreadyRunning:
        logger.warning("retention purge skipped: another purge is running")
        return 0
