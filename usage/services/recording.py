"""Recording: claim unrecorded events, price them, mark them recorded and update session state and roll-ups —
all in ONE transaction, so each accepted event is counted exactly once even when a task is delivered twice,
two workers race, or a worker dies mid-batch (its transaction rolls back and the rows are claimed again).
"""

import datetime
import hashlib
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.db.models import Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from agentwatch_site import db
from agentwatch_site.dates import hour_floor, month_start, tenant_day
from agentwatch_site.money import quantize
from tenants.models import Team, Tenant
from tenants.services import team_get_or_create
from usage.models import Anomaly, DailySpend, HourlySpend, MonthlyTeamSpend, SessionState, UsageEvent
from usage.selectors import quarantined_event_list
from usage.services.bulk import update_rows
from usage.services.loops import runaway_loop_window
from usage.services.pricing import COST_QUANTUM, event_cost, price_table

logger = logging.getLogger(__name__)

RECORD_BATCH_SIZE = 5000
SESSION_TTL = datetime.timedelta(hours=24)
RECENT_PROMPTS_KEPT = 5
# The largest money value a money column (numeric(20,10): costs, spend, limits) can hold, exclusive.
MAX_STORED_MONEY = Decimal(10) ** 10


def last_limit_cache_key(tenant_id: int, session_id: str) -> str:
    """Where budget-check leaves the last limit a session asked with (hashed: ids may hold any character)."""
    return f"lastlimit:{tenant_id}:{hashlib.sha256(session_id.encode()).hexdigest()[:32]}"


@dataclass
class RecordResult:
    recorded: int = 0
    # (tenant_id, team_id, month) whose spend moved — the month of the events, in the tenant's time zone, which is
    # not the current one for events sent before the month turned: budget alerts are checked for that month.
    teams_touched: set[tuple[int, int, datetime.date]] = field(default_factory=set)
    # Anomaly ids opened or re-detected in this batch: webhooks go out for them.
    anomalies: list[int] = field(default_factory=list)
    # Events set aside (quarantined) instead of counted.
    quarantined: list[int] = field(default_factory=list)

    def add(self, other: "RecordResult") -> None:
        self.recorded += other.recorded
        self.teams_touched |= other.teams_touched
        self.anomalies.extend(other.anomalies)
        self.quarantined.extend(other.quarantined)


def events_record_pending(*, limit: int = RECORD_BATCH_SIZE, event_ids: list[int] | None = None) -> RecordResult:
    """Record up to `limit` pending events (oldest first; only those of `event_ids` when given) in one
    transaction.

    The statements run in the order that keeps two workers apart: the claimed events (locked by this worker
    alone) are priced and written first; the rows workers share — session states, then daily and hourly
    roll-ups, the most shared — are locked last, each set in key order, so they are held only until the commit
    and another worker meanwhile writes its own events."""
    result = RecordResult()
    with transaction.atomic():
        # Recording never reads the JSON columns: not loading them saves a JSON parse per column and event.
        pending = (UsageEvent.objects.filter(recorded_at__isnull=True).defer("metadata", "identified_risks")
                   .order_by("id"))
        if event_ids is not None:
            pending = pending.filter(id__in=event_ids)
        if connection.features.has_select_for_update_skip_locked:
            # Rows another worker is recording are skipped, not waited for; ours stay locked until commit.
            pending = pending.select_for_update(skip_locked=True)
        with _walking_the_unrecorded_index():
            events = list(pending[:limit])
        if not events:
            return result
        now = timezone.now()
        by_tenant: dict[int, list[UsageEvent]] = defaultdict(list)
        for event in events:
            by_tenant[event.tenant_id].append(event)
        tenants = Tenant.objects.in_bulk(list(by_tenant))
        order = sorted(by_tenant)
        respelled: list[UsageEvent] = []
        for tenant_id in order:
            respelled += _price(tenants[tenant_id], by_tenant[tenant_id], now=now, result=result)
        if result.quarantined:
            # Events whose cost cannot be stored are set aside here, and the rest of the batch is counted.
            events = [e for e in events if not e.record_error]
            by_tenant = {tenant_id: [e for e in group if not e.record_error] for tenant_id, group in by_tenant.items()}
            if not events:
                return result
        update_rows(UsageEvent, ["recorded_at", "cost_usd", "priced_by", "team"], events)
        # An event sent with another spelling of its team's name ("Payments" for `payments`) is listed as counted.
        if respelled:
            update_rows(UsageEvent, ["team_name"], respelled)
        for tenant_id in order:
            _update_sessions(tenants[tenant_id], [e for e in by_tenant[tenant_id] if e.session_id], now=now,
                             result=result)
        for tenant_id in order:
            _roll_up_daily(tenants[tenant_id], by_tenant[tenant_id])
        for tenant_id in order:
            _roll_up_hourly(tenants[tenant_id], by_tenant[tenant_id])
        result.recorded = len(events)
    return result


# The isolating pass (below) looks at this many of the oldest pending events: at most about twice as many
# transactions when all of them fail, and a poison event is found in ⌈log2(window)⌉ + 1 halvings.
ISOLATE_WINDOW = 64
# At most this many events are set aside per isolating pass: more than that failing one by one while others record
# looks like a fault of the code, not of the events, and is better left pending (the lag alarm fires) than hidden.
QUARANTINE_MAX_PER_PASS = 10


def events_record_isolating(*, window: int = ISOLATE_WINDOW, deadline: float | None = None) -> RecordResult:
    """After a batch failed with an error that retrying will not cure (not a lost race, not an outage): record the
    oldest `window` pending events in halves, then halves of the half that failed, down to single events, so one
    event that cannot be recorded (a poison event) does not hold up every event behind it.

    An event that fails alone, twice, is set aside (quarantined: `recorded_at` and `record_error` set, never
    counted), but only when others in the same pass were recorded, and at most QUARANTINE_MAX_PER_PASS. If every
    event fails, the fault is not in the events: nothing is set aside, they stay pending, and the ingest-lag
    health check turns red. A lost race or an outage (OperationalError) ends the pass with what it recorded so
    far; so does the `deadline` (time.monotonic()). `manage.py quarantined_events --retry` puts quarantined
    events back once the cause is fixed."""
    ids = list(UsageEvent.objects.filter(recorded_at__isnull=True).order_by("id")
               .values_list("id", flat=True)[:window])
    total = RecordResult()
    failing: list[tuple[int, Exception]] = []
    try:
        _record_or_split(ids, total, failing, deadline)
    except OperationalError as exc:
        logger.warning("isolating pass rolled back, ending it error=%s", exc)
        return total
    if failing and total.recorded == 0:
        logger.error("recording fails for every pending event tried (%s); none set aside, they stay pending",
                     len(ids))
        return total
    for event_id, error in failing[:QUARANTINE_MAX_PER_PASS]:
        if event_quarantine(event_id=event_id, error=f"{type(error).__name__}: {error}"):
            total.quarantined.append(event_id)
    return total


def time_limit_inside(exc: BaseException | None) -> bool:
    """Celery's soft time limit is a signal: raised while a query waits (on a lock), the rollback that follows
    fails on the busy connection, and that error is what surfaces. It is the run's time running out, not the
    events' fault: the caller drops the connection (and so the transaction) and ends the run."""
    while exc is not None:
        if isinstance(exc, SoftTimeLimitExceeded):
            return True
        exc = exc.__context__
    return False


def _record_or_split(ids: list[int], total: RecordResult, failing: list[tuple[int, Exception]],
                     deadline: float | None) -> None:
    if not ids or (deadline is not None and time.monotonic() >= deadline):
        return  # out of time: what is left stays pending for the next run
    attempts = 2 if len(ids) == 1 else 1
    for attempt in range(attempts):
        try:
            result = events_record_pending(limit=len(ids), event_ids=ids)
        except (OperationalError, SoftTimeLimitExceeded):
            raise  # a lost race, an outage or the task's time limit: not the events' fault
        except Exception as exc:  # noqa: BLE001 - any other failure is narrowed down to the events causing it
            if time_limit_inside(exc):
                connection.close()  # the rollback failed on the busy connection (see time_limit_inside)
                raise SoftTimeLimitExceeded() from exc
            if attempt + 1 < attempts:
                continue
            if len(ids) == 1:
                failing.append((ids[0], exc))
                return
            middle = len(ids) // 2
            _record_or_split(ids[:middle], total, failing, deadline)
            _record_or_split(ids[middle:], total, failing, deadline)
            return
        total.add(result)
        return


def event_quarantine(*, event_id: int, error: str, now: datetime.datetime | None = None) -> bool:
    """Set one pending event aside with its error (see events_record_isolating). False if it was recorded or set
    aside meanwhile."""
    message = error.strip()[:500] or "unknown error"
    updated = UsageEvent.objects.filter(pk=event_id, recorded_at__isnull=True).update(
        recorded_at=now or timezone.now(), record_error=message, cost_usd=None, priced_by="")
    if updated:
        logger.error("event set aside (quarantined): recording it fails id=%s error=%s", event_id, message)
    return bool(updated)


def events_quarantine_retry(*, tenant: Tenant | None = None) -> int:
    """Put quarantined events back in the queue (after the cause was fixed); the next run records them."""
    return quarantined_event_list(tenant=tenant).update(recorded_at=None, record_error="", cost_usd=None, priced_by="")


@contextmanager
def _walking_the_unrecorded_index():
    """On PostgreSQL, the claim walks the partial index of unrecorded events in id order. Every recorded event
    leaves a dead entry in that index until VACUUM; a plain index scan marks the entries it finds dead so later
    claims skip them, while the bitmap scan the planner otherwise picks (small LIMIT, few rows expected) visits
    every one of them again on each claim: at 70,000 dead entries, 11 ms instead of 0.3 ms per claim, and worse
    as the table grows between autovacuums. Local to this transaction, and only for the claim."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        # One round trip each way (two statements, no parameters: the simple query protocol).
        cursor.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")
        yield
        cursor.execute("SET LOCAL enable_bitmapscan TO DEFAULT; SET LOCAL enable_seqscan TO DEFAULT")


def _price(tenant: Tenant, events: list[UsageEvent], *, now, result: RecordResult) -> list[UsageEvent]:
    """Fix each event's cost and team; returns the events whose team name was re-spelled to the team's own."""
    teams = _resolve_teams(tenant, events)
    respelled = []
    prices = price_table(tenant=tenant, models={e.model for e in events}) if tenant.cost_mode == "catalog" else {}
    for event in events:
        event.cost_usd, event.priced_by = event_cost(event, cost_mode=tenant.cost_mode, prices=prices)
        if event.cost_usd >= MAX_STORED_MONEY:
            # PostgreSQL would refuse it (numeric overflow) and fail the whole batch; SQLite would store it and then
            # fail every later read of the session's spend. It cannot be counted: it is set aside, alone.
            event.record_error = (f"CostOverflow: cost {event.cost_usd:.2f} USD is more than a money value can "
                                  f"hold (< {MAX_STORED_MONEY:,} USD); check the price of {event.model!r}")[:500]
            event_quarantine(event_id=event.pk, error=event.record_error, now=now)
            result.quarantined.append(event.pk)
            continue
        event.recorded_at = now
        if event.team_name:
            team = teams[Team.clean_name(event.team_name)]
            event.team = team
            if event.team_name != team.name:
                event.team_name = team.name
                respelled.append(event)
            if event.cost_usd:
                result.teams_touched.add((tenant.pk, team.pk, month_start(tenant_day(tenant, event.timestamp))))
    return respelled


def _resolve_teams(tenant: Tenant, events: list[UsageEvent]) -> dict[str, Team]:
    """The team of each spelling in the batch (keyed by the trimmed name: events accepted before team names were
    trimmed at ingest may still carry the spaces). A team named but not yet known is created on first sight. Which
    spellings name one team is the database's lower() to say, as for the teams' unique constraint (Python's
    lower() differs for some letters: "ΣΑΣ" and "σας" are two teams)."""
    teams = {}
    for name in sorted({Team.clean_name(event.team_name) for event in events if event.team_name}):
        teams[name], _ = team_get_or_create(tenant=tenant, name=name)
    return teams


def _upsert_increment(table: str, key_columns: list[str], sum_columns: list[str], rows: list[tuple]) -> None:
    """INSERT … ON CONFLICT DO UPDATE SET col = col + excluded.col (PostgreSQL and SQLite alike).
    Rows are sorted by key so concurrent workers take row locks in the same order (no deadlocks)."""
    if not rows:
        return
    columns = key_columns + sum_columns
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = ", ".join(f"{col} = {table}.{col} + excluded.{col}" for col in sum_columns)
    rows = sorted(rows, key=lambda row: tuple(str(v) for v in row[: len(key_columns)]))
    for start in range(0, len(rows), 500):
        chunk = rows[start:start + 500]
        # Table and column names come from the models above, never from input; values are parameters.
        values = ", ".join([placeholders] * len(chunk))
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values} "  # noqa: S608
            f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET {updates}"
        )
        params = [value for row in chunk for value in row]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def _roll_up_daily(tenant: Tenant, events: list[UsageEvent]) -> None:
    """The daily roll-ups, and the month totals per team (MonthlyTeamSpend) the budget checks read."""
    totals: dict[tuple, list] = {}
    for event in events:
        key = (tenant_day(tenant, event.timestamp), event.team_name, event.project, event.model)
        bucket = totals.setdefault(key, [0, 0, 0, Decimal("0")])
        bucket[0] += 1
        bucket[1] += event.prompt_tokens
        bucket[2] += event.completion_tokens
        bucket[3] += event.cost_usd
    _upsert_increment(
        DailySpend._meta.db_table,
        ["tenant_id", "day", "team_name", "project", "model"],
        ["events", "prompt_tokens", "completion_tokens", "cost_usd"],
        [(tenant.pk, *key, *values) for key, values in totals.items()],
    )
    months: dict[tuple, list] = {}
    for (day, team_name, _project, _model), (count, _prompt, _completion, cost) in totals.items():
        bucket = months.setdefault((month_start(day), team_name), [0, Decimal("0")])
        bucket[0] += count
        bucket[1] += cost
    _upsert_increment(
        MonthlyTeamSpend._meta.db_table,
        ["tenant_id", "month", "team_name"],
        ["events", "cost_usd"],
        [(tenant.pk, *key, *values) for key, values in months.items()],
    )


def month_spend_rebuild() -> int:
    """Recompute every MonthlyTeamSpend row from the daily roll-ups (absolute totals) and return how many there
    are. For an upgrade during which workers still on the old code recorded events after migration 0004 filled
    the table, or a daily row deleted by hand. On PostgreSQL a SHARE lock on the daily roll-ups keeps recording
    from committing meanwhile (recorders wait for it, then carry on)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {connection.ops.quote_name(DailySpend._meta.db_table)} IN SHARE MODE")
        MonthlyTeamSpend.objects.all().delete()
        totals = (DailySpend.objects.annotate(month=TruncMonth("day")).values("tenant_id", "month", "team_name")
                  .annotate(total_events=Sum("events"), total_cost=Sum("cost_usd")).order_by())
        rows = MonthlyTeamSpend.objects.bulk_create(
            [MonthlyTeamSpend(tenant_id=row["tenant_id"], month=row["month"], team_name=row["team_name"],
                              events=row["total_events"], cost_usd=row["total_cost"]) for row in totals.iterator()],
            batch_size=1000,
        )
    return len(rows)


def _roll_up_hourly(tenant: Tenant, events: list[UsageEvent]) -> None:
    totals: dict[tuple, list] = {}
    for event in events:
        key = (hour_floor(event.timestamp), event.team_name)
        bucket = totals.setdefault(key, [0, Decimal("0")])
        bucket[0] += 1
        bucket[1] += event.cost_usd
    _upsert_increment(
        HourlySpend._meta.db_table,
        ["tenant_id", "hour", "team_name"],
        ["events", "cost_usd"],
        [(tenant.pk, *key, *values) for key, values in totals.items()],
    )


def _update_sessions(tenant: Tenant, events: list[UsageEvent], *, now, result: RecordResult) -> None:
    if not events:
        return
    by_session: dict[str, list[UsageEvent]] = defaultdict(list)
    for event in events:
        by_session[event.session_id].append(event)
    session_ids = sorted(by_session)
    # Activity is dated by receipt, not by when a worker got to it (a sweep after an outage is late), so the
    # 24-hour idle rule and "iteration already counted" (received since the session started) hold either way.
    started = {sid: min(e.received_at for e in batch) for sid, batch in by_session.items()}
    active = {sid: max(e.received_at for e in batch) for sid, batch in by_session.items()}

    def insert_new(sids: list[str]) -> None:
        SessionState.objects.bulk_create(
            [SessionState(tenant=tenant, session_id=sid, first_seen=started[sid], last_seen=active[sid],
                          expires_at=active[sid] + SESSION_TTL) for sid in sids],
            ignore_conflicts=True,
        )

    insert_new(session_ids)
    # The row lock serialises workers recording the same session; the state below is computed under it.
    states = _locked_session_states(tenant, session_ids)
    missing = [sid for sid in session_ids if sid not in states]
    if missing:
        # expire_sessions deleted them between the insert above and the locked read: create them again.
        insert_new(missing)
        states.update(_locked_session_states(tenant, missing))
    for session_id in session_ids:
        state = states[session_id]
        if state.events and state.expires_at <= started[session_id]:
            _reset_session(state, started=started[session_id])
        elif started[session_id] < state.first_seen:
            state.first_seen = started[session_id]  # two workers recorded its first events out of order
    seen_iterations = _recorded_iterations(tenant, by_session, since={sid: states[sid].first_seen
                                                                      for sid in session_ids})
    last_limits = _last_limits(tenant, session_ids)
    # The latest loop anomaly per session, open or acknowledged (an acknowledged run must not reopen itself).
    latest_loops = {a.session_id: a for a in Anomaly.objects.filter(
        tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP, session_id__in=session_ids).order_by("id")}

    for session_id in session_ids:
        state = states[session_id]
        batch = by_session[session_id]
        known = seen_iterations.get(session_id, set())
        new_iterations = set()
        for event in sorted(batch, key=lambda e: (e.iteration_index is None, e.iteration_index or 0, e.pk)):
            state.spent_usd += event.cost_usd
            state.prompt_tokens += event.prompt_tokens
            state.completion_tokens += event.completion_tokens
            state.events += 1
            if event.team_id:
                state.team_id = event.team_id
            if event.project:
                state.project = event.project
            if event.iteration_index is not None:
                if event.iteration_index not in known:
                    new_iterations.add(event.iteration_index)
                _remember_prompt(state, event.iteration_index, event.prompt_tokens)
        state.iterations += len(new_iterations)
        state.last_seen = max(state.last_seen, active[session_id])
        state.expires_at = state.last_seen + SESSION_TTL
        if session_id in last_limits:
            state.last_limit_usd = last_limits[session_id]
        anomaly_id = _detect_runaway_loop(tenant, state, latest_loops.get(session_id), now=now)
        if anomaly_id:
            result.anomalies.append(anomaly_id)
    update_rows(
        SessionState,
        ["spent_usd", "prompt_tokens", "completion_tokens", "events", "iterations", "recent_prompts", "team",
         "project", "first_seen", "last_seen", "expires_at", "last_limit_usd"],
        [states[sid] for sid in session_ids],
    )


def _locked_session_states(tenant: Tenant, session_ids: list[str]) -> dict[str, SessionState]:
    states = SessionState.objects.filter(tenant=tenant, session_id__in=session_ids).order_by("session_id")
    if connection.features.has_select_for_update:
        states = states.select_for_update()
    return {state.session_id: state for state in states}


def _reset_session(state: SessionState, *, started) -> None:
    """Idle for 24 hours: the same id starts from zero (its events stay)."""
    state.spent_usd = Decimal("0")
    state.prompt_tokens = state.completion_tokens = state.events = state.iterations = 0
    state.recent_prompts = {}
    state.first_seen = started
    state.last_seen = started
    state.last_limit_usd = None


def _remember_prompt(state: SessionState, iteration_index: int, prompt_tokens: int) -> None:
    """The prompt sizes of the session's last RECENT_PROMPTS_KEPT iterations, which loop detection reads."""
    recent = {int(k): v for k, v in state.recent_prompts.items()}
    if iteration_index == 1 and recent and max(recent) > 1:
        # A new run under the same session id within its lifetime (aw-sdk numbers each client's calls from 1: a
        # re-run CI job): its growth is judged on its own. Kept, the old run's higher indexes pushed the new
        # run's out of the window, and its loop went unseen.
        recent = {}
    recent[iteration_index] = prompt_tokens
    kept = sorted(recent)[-RECENT_PROMPTS_KEPT:]
    state.recent_prompts = {str(k): recent[k] for k in kept}


def _recorded_iterations(tenant: Tenant, by_session: dict[str, list[UsageEvent]],
                         since: dict[str, datetime.datetime]) -> dict[str, set[int]]:
    """Iteration indexes of this batch that an earlier recorded event of the same session lifetime (received since
    `since[session]`) already counted, per session; this batch's own events (already marked recorded in this
    transaction) do not count. One probe per (session, index) pair on the (tenant, session_id,
    iteration_index) index: it stops at the first match, so a runaway session's thousands of retries of one
    index cost no more than one (loading them all made recording slower with every event)."""
    pairs = sorted({(sid, e.iteration_index) for sid, batch in by_session.items() for e in batch
                    if e.iteration_index is not None})
    known: dict[str, set[int]] = defaultdict(set)
    if not pairs:
        return known
    own_ids = sorted(e.pk for batch in by_session.values() for e in batch)
    # A correlated scalar subquery, not EXISTS: PostgreSQL may turn EXISTS into a hash join over all the tenant's
    # events when its statistics are stale (a new or fast-growing table); this runs as one index probe per pair
    # whatever the statistics say. The table name comes from the model, never from input; values are parameters.
    probe = (f"(SELECT 1 FROM {connection.ops.quote_name(UsageEvent._meta.db_table)} e "  # noqa: S608
             f"WHERE e.tenant_id = %s AND e.session_id = p.session_id AND e.iteration_index = p.iteration_index "
             f"AND e.recorded_at IS NOT NULL AND e.received_at >= p.since AND {{not_own}} LIMIT 1) IS NOT NULL")
    if connection.vendor == "postgresql":
        # One statement for the whole batch, every list one binary array.
        sql = ("SELECT p.session_id, p.iteration_index "  # noqa: S608
               "FROM unnest(%b::text[], %b::bigint[], %b::timestamptz[]) AS p (session_id, iteration_index, since) "
               f"WHERE {probe.format(not_own='NOT (e.id = ANY(%b::bigint[]))')}")
        # Prepared: its generic plan probes the index whatever the statistics say. (Planned with the actual
        # values on a new table, PostgreSQL chose a sequential scan per pair and recording fell behind.) The
        # exclusion list is then compared linearly, which costs only for the batch's own rows of a pair: one
        # pair retried thousands of times within one batch.
        rows = db.fetch_all(sql, [[sid for sid, _ in pairs], [idx for _, idx in pairs],
                                  [since[sid] for sid, _ in pairs], tenant.pk, own_ids])
    else:
        rows = []
        not_own = f"e.id NOT IN ({', '.join(['%s'] * len(own_ids))})"
        for start in range(0, len(pairs), 300):
            chunk = pairs[start:start + 300]
            values = ", ".join(["(%s, %s, %s)"] * len(chunk))
            sql = (f"WITH p (session_id, iteration_index, since) AS (VALUES {values}) "  # noqa: S608
                   f"SELECT p.session_id, p.iteration_index FROM p WHERE {probe.format(not_own=not_own)}")
            params = [value for sid, idx in chunk
                      for value in (sid, idx, connection.ops.adapt_datetimefield_value(since[sid]))]
            with connection.cursor() as cursor:
                cursor.execute(sql, [*params, tenant.pk, *own_ids])
                rows += cursor.fetchall()
    for session_id, index in rows:
        known[session_id].add(index)
    return known


def _last_limits(tenant: Tenant, session_ids: list[str]) -> dict[str, Decimal]:
    keys = {last_limit_cache_key(tenant.pk, sid): sid for sid in session_ids}
    try:
        found = cache.get_many(list(keys))
    except Exception:
        return {}
    limits = {}
    for key, value in found.items():
        try:
            limit = Decimal(str(value))
        except ArithmeticError:
            continue
        # A "no limit" value such as 1e12 does not fit numeric(20,10), nor does 1e-20000 (too many decimal places,
        # rounded up as the check compares it): one such row would fail every batch.
        if not limit.is_finite() or limit < 0:
            continue
        limit = quantize(limit, COST_QUANTUM, rounding=ROUND_CEILING)
        if limit < MAX_STORED_MONEY:
            limits[keys[key]] = limit
    return limits


def _detect_runaway_loop(tenant: Tenant, state: SessionState, anomaly: Anomaly | None, *, now) -> int | None:
    window = runaway_loop_window(state.recent_prompts)
    if window is None:
        return None
    last_iteration = window["iterations"][-1]
    if anomaly is not None and anomaly.status != Anomaly.Status.OPEN:
        # Acknowledged in this session's lifetime: only growth past the run it covered opens a new one.
        if anomaly.last_seen >= state.first_seen and last_iteration <= anomaly.details.get("last_iteration", -1):
            return None
        anomaly = None
    if anomaly is not None:
        # Iteration indexes start again in a later lifetime of the session (after 24 h idle): only a run seen in
        # this lifetime can already be counted.
        same_lifetime = anomaly.last_seen >= state.first_seen
        if same_lifetime and last_iteration <= anomaly.details.get("last_iteration", -1):
            return None
        # A loop in a later lifetime is a new occurrence of the still open anomaly: notified again (the webhook
        # event id carries it), where growth of the same run only updates the anomaly quietly.
        occurrence = anomaly.details.get("occurrence", 1) + (0 if same_lifetime else 1)
        anomaly.count += 1
        anomaly.last_seen = now
        anomaly.details = {**window, "last_iteration": last_iteration, "occurrence": occurrence}
        anomaly.team_id = state.team_id or anomaly.team_id
        anomaly.save(update_fields=["count", "last_seen", "details", "team"])
        return anomaly.pk
    anomaly = Anomaly.objects.create(
        tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP, session_id=state.session_id, team_id=state.team_id,
        details={**window, "last_iteration": last_iteration}, first_seen=now, last_seen=now,
    )
    logger.info("runaway loop detected tenant=%s session_id=%s ratios=%s", tenant.slug, state.session_id,
                window["ratios"])
    return anomaly.pk
