"""Retention: delete usage events older than each tenant's retention_days, in bounded batches.

Each batch is one short autocommitted DELETE of at most `batch_size` rows, so no long lock and no long
transaction; ingestion and recording go on meanwhile. Roll-ups (daily, hourly), alerts and anomalies are kept,
so spend history survives. Session states idle past their expiry are deleted too, and so are finished webhook
deliveries (their payloads) older than the tenant's retention; pending ones are left to the retry loop. One purge
at a time: a lock in the shared cache (Redis in production), refreshed between batches.
"""

import datetime
import logging
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.cache import cache
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from agentwatch_site.errors import Conflict, ServiceUnavailable
from tenants.models import Tenant, WebhookDelivery
from usage.models import PurgeRun, SessionState, UsageEvent

logger = logging.getLogger(__name__)

PURGE_BATCH_SIZE = 5000
# After each batch the purge rests as long as the batch took: half the database's attention at most, so the
# ingestion and recording going on meanwhile keep their latency (the purge has all day).
PURGE_PAUSE_RATIO = 1.0
PURGE_LOCK_KEY = "retention:purge-lock"
# Long enough for any purge between two refreshes; a crashed purge's lock expires by itself.
PURGE_LOCK_TTL_SECONDS = 15 * 60
# What stops `manage.py purge_expired` part-way (systemd, Kubernetes, `kill`), releasing the lock on the way out.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGHUP})


class PurgeAlreadyRunning(Conflict):
    code = "purge_running"


@contextmanager
def purge_lock() -> Iterator[Callable[[], None]]:
    """Held for the whole purge; yields a function that extends the lease. Raises PurgeAlreadyRunning.

    A stop signal (purge_expired's handlers for STOP_SIGNALS raise in the middle of the purge) waits while the lock
    is being taken or released, so it is never taken and then left behind."""
    token = secrets.token_hex(8)
    with _stop_signals_held():
        try:
            acquired = cache.add(PURGE_LOCK_KEY, token, timeout=PURGE_LOCK_TTL_SECONDS)
        except Exception as exc:
            raise ServiceUnavailable(f"Cannot take the purge lock: the cache is unavailable ({type(exc).__name__}).",
                                     code="cache_unavailable") from None
        if not acquired:
            raise PurgeAlreadyRunning("A retention purge is already running; this one did not start. Try again "
                                      "when it has finished.")

    def refresh() -> None:
        try:
            cache.touch(PURGE_LOCK_KEY, timeout=PURGE_LOCK_TTL_SECONDS)
        except Exception as exc:
            logger.warning("could not refresh the purge lock error=%s", type(exc).__name__)

    try:
        yield refresh
    finally:
        with _stop_signals_held():
            try:
                if cache.get(PURGE_LOCK_KEY) == token:
                    cache.delete(PURGE_LOCK_KEY)
            except Exception as exc:
                logger.warning("could not release the purge lock (it expires by itself) error=%s",
                               type(exc).__name__)


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """STOP_SIGNALS arriving inside are delivered on the way out."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _say(progress: Callable[[str], None] | None, message: str) -> None:
    """To the command's output when run by hand (`manage.py purge_expired`), else to the log (the beat task):
    a terminal shows each line once."""
    if progress:
        progress(message)
    else:
        logger.info(message)


def purge_expired(*, dry_run: bool = False, batch_size: int = PURGE_BATCH_SIZE,
                  pause_ratio: float = PURGE_PAUSE_RATIO, now: datetime.datetime | None = None,
                  progress: Callable[[str], None] | None = None) -> PurgeRun:
    """Purge every tenant's expired events and idle session states; records and returns a PurgeRun."""
    now = now or timezone.now()
    with purge_lock() as refresh:
        run = PurgeRun.objects.create(started_at=timezone.now(), dry_run=dry_run)
        for tenant in Tenant.objects.order_by("id"):
            cutoff = now - datetime.timedelta(days=tenant.retention_days)
            started = time.monotonic()
            if dry_run:
                deleted = expired_events(tenant, cutoff).count()
            else:
                deleted = _delete_expired_events(tenant, cutoff, batch_size=batch_size, pause_ratio=pause_ratio,
                                                 refresh=refresh, progress=progress)
            deliveries = _delete_old_deliveries(tenant, cutoff, batch_size=batch_size, dry_run=dry_run,
                                                refresh=refresh)
            run.per_tenant[tenant.slug] = {"events": deleted, "webhook_deliveries": deliveries,
                                           "cutoff": cutoff.isoformat()}
            run.events_deleted += deleted
            if deleted or deliveries:
                verb = "would delete" if dry_run else "deleted"
                _say(progress, f"tenant={tenant.slug} {verb} events={deleted} webhook_deliveries={deliveries} "
                               f"older_than={cutoff:%Y-%m-%d %H:%M} seconds={time.monotonic() - started:.2f}")
            run.save(update_fields=["per_tenant", "events_deleted"])
        run.sessions_deleted = session_states_expire(now=now, dry_run=dry_run, batch_size=batch_size)
        run.finished_at = timezone.now()
        run.save(update_fields=["sessions_deleted", "finished_at"])
    deliveries = sum(row.get("webhook_deliveries", 0) for row in run.per_tenant.values())
    _say(progress, f"purge {'dry run ' if dry_run else ''}done events={run.events_deleted} "
                   f"sessions={run.sessions_deleted} webhook_deliveries={deliveries} tenants={len(run.per_tenant)}")
    return run


def expired_events(tenant: Tenant, cutoff: datetime.datetime):
    """The events a purge at `cutoff` deletes for `tenant`."""
    # An event not yet recorded is never purged: its spend must reach the roll-ups first. Neither is one set aside
    # (quarantined): it is kept until it is retried (manage.py quarantined_events --retry) and counted.
    return UsageEvent.objects.filter(tenant=tenant, timestamp__lt=cutoff, recorded_at__isnull=False, record_error="")


# PostgreSQL: one statement per batch. The batch's rows are found through the (tenant, timestamp, id) index,
# deleted by their physical address (a TID scan: no second lookup through the primary key), and the statement
# returns the last key, where the next batch starts. Table and column names are fixed here, values parameters.
PG_DELETE_BATCH = """
WITH batch AS (
    SELECT ctid, id, "timestamp" FROM usage_usageevent
    WHERE tenant_id = %s AND "timestamp" < %s AND recorded_at IS NOT NULL AND record_error = ''
      AND ("timestamp", id) > (%s, %s)
    ORDER BY "timestamp", id
    LIMIT %s
), gone AS (
    DELETE FROM usage_usageevent WHERE ctid = ANY(ARRAY(SELECT ctid FROM batch)) RETURNING 1
)
SELECT b."timestamp", b.id, (SELECT count(*) FROM gone) FROM batch b ORDER BY b."timestamp" DESC, b.id DESC LIMIT 1
"""
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _delete_batch(tenant: Tenant, cutoff: datetime.datetime, after: tuple, batch_size: int) -> tuple[int, tuple]:
    """Delete up to batch_size expired events after key `after` (autocommitted); returns (deleted, last key)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(PG_DELETE_BATCH, [tenant.pk, cutoff, after[0], after[1], batch_size])
            row = cursor.fetchone()
        return (row[2], (row[0], row[1])) if row else (0, after)
    batch = expired_events(tenant, cutoff).filter(Q(timestamp__gt=after[0]) | Q(timestamp=after[0], id__gt=after[1]))
    keys = list(batch.order_by("timestamp", "id").values_list("timestamp", "id")[:batch_size])
    if not keys:
        return 0, after
    # No cascades or signals on events, so this is one DELETE … WHERE id IN (…).
    count, _ = UsageEvent.objects.filter(pk__in=[pk for _, pk in keys]).delete()
    return count, keys[-1]


def _delete_expired_events(tenant: Tenant, cutoff: datetime.datetime, *, batch_size: int, pause_ratio: float,
                           refresh: Callable[[], None], progress: Callable[[str], None] | None) -> int:
    """Walks the (tenant, timestamp, id) index in key order, so each batch starts where the last one ended
    instead of stepping over the index entries of rows already deleted."""
    deleted = 0
    after = (EPOCH, 0)
    last_report = time.monotonic()
    while True:
        batch_started = time.monotonic()
        count, after = _delete_batch(tenant, cutoff, after, batch_size)
        if not count:
            return deleted
        deleted += count
        refresh()
        if pause_ratio > 0:
            time.sleep((time.monotonic() - batch_started) * pause_ratio)
        if progress and time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            _say(progress, f"tenant={tenant.slug} deleted so far events={deleted} up_to={after[0]:%Y-%m-%d %H:%M}")


def _delete_old_deliveries(tenant: Tenant, cutoff: datetime.datetime, *, batch_size: int, dry_run: bool,
                           refresh: Callable[[], None]) -> int:
    """Finished webhook deliveries created before the cutoff, in batches walking the primary key (each batch
    starts where the last one ended), refreshing the purge lock after each."""
    old = WebhookDelivery.objects.for_tenant(tenant).filter(created_at__lt=cutoff).exclude(
        status=WebhookDelivery.Status.PENDING)
    if dry_run:
        return old.count()
    deleted, after = 0, 0
    while ids := list(old.filter(id__gt=after).order_by("id").values_list("id", flat=True)[:batch_size]):
        count, _ = WebhookDelivery.objects.filter(pk__in=ids).delete()
        deleted, after = deleted + count, ids[-1]
        refresh()
    return deleted


def session_states_expire(*, now: datetime.datetime | None = None, dry_run: bool = False,
                          batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete session states idle past their expiry (24 h); their events stay. A later call with the same id
    starts from zero either way."""
    now = now or timezone.now()
    expired = SessionState.objects.filter(expires_at__lte=now)
    if dry_run:
        return expired.count()
    deleted = 0
    while True:
        ids = list(expired.order_by("expires_at", "id").values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        count, _ = SessionState.objects.filter(pk__in=ids, expires_at__lte=now).delete()
        deleted += count
