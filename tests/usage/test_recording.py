"""Recording counts every accepted event exactly once: repeated ids, re-delivered tasks, racing workers."""

import datetime
import io
import re
import threading
import time
from decimal import Decimal
from types import SimpleNamespace

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from tenants.models import Team
from tests.conftest import WorkerProcess, psycopg_params, requires_production, subprocess_env, wait_until_recorded
from usage.models import DailySpend, HourlySpend, MonthlyTeamSpend, SessionState, UsageEvent
from usage.services.ingest import event_batch_ingest, parse_ingest_body
from usage.services.recording import events_record_pending
from usage.tasks import record_pending_events

SDK_EVENT = {
    "model": "gpt-4o", "latency_ms": 812, "prompt_tokens": 1200, "completion_tokens": 300,
    "project": "checkout-service", "team": "payments-eng", "session_id": "ci-run-123",
}


def ingest(tenant, raw_events: list[dict], *, now=None) -> list[str]:
    """Store events the way the ingest view does (validated, one bulk insert), without waking a worker."""
    now = now or timezone.now()
    return event_batch_ingest(tenant=tenant, events=parse_ingest_body({"events": raw_events}, now=now),
                              received_at=now)


def events_for(count: int, **fields) -> list[dict]:
    return [dict(SDK_EVENT, iteration_index=i, prompt_tokens=100 + i, **fields) for i in range(1, count + 1)]


RECORD_TASK = rb"usage\.tasks\.(?:record_pending_events|sweep_unrecorded_events)\[[^\]]+\] "
RECORD_DONE = RECORD_TASK + rb"succeeded in [\d.]+s: (\d+)"


def wait_until_idle(workers, timeout: float = 30.0) -> None:
    """Every recording task the workers received has finished (and logged how many events it recorded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = b"".join(worker.log_path.read_bytes() for worker in workers)
        if len(re.findall(RECORD_TASK + rb"received", logs)) == len(re.findall(RECORD_DONE, logs)):
            return
        time.sleep(0.1)
    raise AssertionError("recording tasks still running")


def assert_totals_match_events(tenant) -> None:
    """Every roll-up equals the sum of the recorded events it covers."""
    events = UsageEvent.objects.filter(tenant=tenant)
    assert not events.filter(recorded_at__isnull=True).exists()
    total = sum((e.cost_usd for e in events), Decimal("0"))
    count = events.count()
    daily = DailySpend.objects.filter(tenant=tenant)
    assert sum(d.events for d in daily) == count
    assert sum((d.cost_usd for d in daily), Decimal("0")) == total
    assert sum(d.prompt_tokens for d in daily) == sum(e.prompt_tokens for e in events)
    hourly = HourlySpend.objects.filter(tenant=tenant)
    assert sum(h.events for h in hourly) == count
    assert sum((h.cost_usd for h in hourly), Decimal("0")) == total
    for state in SessionState.objects.filter(tenant=tenant):
        mine = events.filter(session_id=state.session_id)
        assert state.events == mine.count()
        assert state.spent_usd == sum((e.cost_usd for e in mine), Decimal("0"))
        assert state.iterations == mine.exclude(iteration_index=None).values("iteration_index").distinct().count()


def test_same_event_id_twice_records_one_event_and_one_roll_up_increment(tenant, telemetry_api, recording):
    for _ in range(2):
        response = telemetry_api.post("/v1/ingest", dict(SDK_EVENT, event_id="evt-1", iteration_index=1),
                                      format="json")
        assert response.status_code == 202
        assert response.json()["event_ids"] == ["evt-1"]
    recording()
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1
    daily = DailySpend.objects.get(tenant=tenant)
    assert (daily.events, daily.cost_usd) == (1, Decimal("0.0045"))
    state = SessionState.objects.get(tenant=tenant, session_id="ci-run-123")
    assert (state.events, state.iterations, state.spent_usd) == (1, 1, Decimal("0.0045"))


def test_a_task_delivered_twice_counts_each_event_once(tenant):
    ingest(tenant, events_for(30))
    assert record_pending_events.run() == 30
    assert record_pending_events.run() == 0
    assert events_record_pending().recorded == 0
    assert DailySpend.objects.get(tenant=tenant).events == 30
    assert SessionState.objects.get(tenant=tenant).events == 30
    assert_totals_match_events(tenant)


def test_an_event_resent_after_it_was_recorded_is_not_counted_again(tenant):
    ingest(tenant, [dict(SDK_EVENT, event_id="late-dup", iteration_index=1)])
    events_record_pending()
    ingest(tenant, [dict(SDK_EVENT, event_id="late-dup", iteration_index=1)])
    assert events_record_pending().recorded == 0
    assert DailySpend.objects.get(tenant=tenant).events == 1
    assert SessionState.objects.get(tenant=tenant).events == 1


def test_events_of_another_tenant_roll_up_separately(tenant, other_tenant):
    ingest(tenant, events_for(3))
    ingest(other_tenant, events_for(2))
    events_record_pending()
    assert DailySpend.objects.get(tenant=tenant).events == 3
    assert DailySpend.objects.get(tenant=other_tenant).events == 2
    assert SessionState.objects.get(tenant=other_tenant, session_id="ci-run-123").events == 2
    assert_totals_match_events(tenant)
    assert_totals_match_events(other_tenant)


@requires_production
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_deliveries_of_the_task_count_each_event_once(tenant):
    for chunk in range(3):
        ingest(tenant, [dict(SDK_EVENT, iteration_index=chunk * 1000 + i) for i in range(1000)])
    results: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def deliver():
        try:
            start.wait()
            results.append(record_pending_events.run())
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    assert sum(results) == 3000
    assert DailySpend.objects.get(tenant=tenant).events == 3000
    assert SessionState.objects.get(tenant=tenant).events == 3000
    assert_totals_match_events(tenant)


@requires_production
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_recording_one_session_at_once_give_exact_totals(tenant):
    total = 20_000
    ids = []
    for chunk in range(total // 1000):
        ids += ingest(tenant, [dict(SDK_EVENT, iteration_index=chunk * 1000 + i, prompt_tokens=50 + i % 97,
                                    model=("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet")[i % 3])
                               for i in range(1000)])
    assert len(set(ids)) == total
    for _ in range(8):
        record_pending_events.delay()  # queued before the workers start, so both find work waiting
    # At DEBUG: the lines counted below ("received", "succeeded … : n") are DEBUG lines for the recording tasks.
    workers = [WorkerProcess(name=f"race{n}", concurrency=2, env=subprocess_env(LOG_LEVEL="DEBUG")) for n in range(2)]
    starting = [threading.Thread(target=worker.start) for worker in workers]
    try:
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        wait_until_recorded(timeout=180)
        wait_until_idle(workers)
    finally:
        for worker in workers:
            worker.stop()
    # Each task records until nothing is left, so two tasks with a share means they recorded at the same time.
    shares = [int(n) for worker in workers for n in re.findall(RECORD_DONE, worker.log_path.read_bytes())]
    assert sum(shares) == total
    assert len([n for n in shares if n]) >= 2, f"the workers should have recorded concurrently: {shares}"
    state = SessionState.objects.get(tenant=tenant, session_id="ci-run-123")
    assert state.events == total and state.iterations == total
    assert Team.objects.filter(tenant=tenant).count() == 1
    assert_totals_match_events(tenant)


def test_session_state_starts_fresh_after_24_hours_idle(tenant):
    start = timezone.now() - datetime.timedelta(days=3)
    with time_machine.travel(start, tick=False):
        ingest(tenant, [dict(SDK_EVENT, iteration_index=1, prompt_tokens=1000, completion_tokens=0)])
        events_record_pending()
    with time_machine.travel(start + datetime.timedelta(hours=23), tick=False):
        ingest(tenant, [dict(SDK_EVENT, iteration_index=2, prompt_tokens=2000, completion_tokens=0)])
        events_record_pending()
    state = SessionState.objects.get(tenant=tenant, session_id="ci-run-123")
    assert (state.events, state.iterations, state.spent_usd) == (2, 2, Decimal("0.009"))

    later = start + datetime.timedelta(hours=23 + 24, minutes=1)
    with time_machine.travel(later, tick=False):
        ingest(tenant, [dict(SDK_EVENT, iteration_index=1, prompt_tokens=500, completion_tokens=0)])
        events_record_pending()
    state.refresh_from_db()
    assert (state.events, state.iterations, state.spent_usd) == (1, 1, Decimal("0.0015"))
    assert state.recent_prompts == {"1": 500}
    assert state.first_seen == later
    assert state.expires_at == later + datetime.timedelta(hours=24)
    assert UsageEvent.objects.filter(tenant=tenant).count() == 3  # the old events stay


def test_recent_prompts_keeps_the_5_highest_iteration_indexes(tenant):
    ingest(tenant, [dict(SDK_EVENT, iteration_index=i, prompt_tokens=i * 10) for i in (3, 8, 1, 7, 2, 6, 4, 5)])
    events_record_pending()
    state = SessionState.objects.get(tenant=tenant, session_id="ci-run-123")
    assert state.recent_prompts == {"4": 40, "5": 50, "6": 60, "7": 70, "8": 80}
    ingest(tenant, [dict(SDK_EVENT, iteration_index=2, prompt_tokens=999),
                    dict(SDK_EVENT, iteration_index=9, prompt_tokens=90)])
    events_record_pending()
    state.refresh_from_db()
    assert state.recent_prompts == {"5": 50, "6": 60, "7": 70, "8": 80, "9": 90}
    assert state.iterations == 9


def _daily_month_totals(tenant) -> dict:
    totals: dict = {}
    for row in DailySpend.objects.filter(tenant=tenant):
        key = (row.day.replace(day=1), row.team_name)
        events, cost = totals.get(key, (0, Decimal("0")))
        totals[key] = (events + row.events, cost + row.cost_usd)
    return totals


def test_month_totals_per_team_match_the_daily_roll_ups_across_a_month_boundary(tenant):
    tenant.timezone = "America/New_York"
    tenant.save()
    # 02:30 UTC on 1 December is still 30 November in New York.
    with time_machine.travel(datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC), tick=False):
        base = datetime.datetime(2026, 12, 1, 2, 30, tzinfo=datetime.UTC)
        ingest(tenant, [dict(SDK_EVENT, event_id=f"m{i}", team=team, timestamp=(base + datetime.timedelta(hours=h)
                                                                                  ).isoformat())
                        for i, (team, h) in enumerate([("payments-eng", 0), ("payments-eng", 5), ("search", 0),
                                                       ("search", 6), ("", 1)])])
        events_record_pending()
    months = {(m.month, m.team_name): (m.events, m.cost_usd) for m in MonthlyTeamSpend.objects.filter(tenant=tenant)}
    assert months == _daily_month_totals(tenant)
    assert months[(datetime.date(2026, 11, 1), "payments-eng")][0] == 1
    assert months[(datetime.date(2026, 12, 1), "payments-eng")][0] == 1
    assert months[(datetime.date(2026, 11, 1), "")][0] == 1


def test_the_migration_fills_month_totals_from_daily_roll_ups(tenant):
    import importlib

    from django.apps import apps

    ingest(tenant, events_for(4) + [dict(SDK_EVENT, event_id="other", team="search")])
    events_record_pending()
    expected = {(m.month, m.team_name): (m.events, m.cost_usd) for m in MonthlyTeamSpend.objects.all()}
    MonthlyTeamSpend.objects.all().delete()
    importlib.import_module("usage.migrations.0004_monthly_team_spend").backfill_from_daily(apps, None)
    assert {(m.month, m.team_name): (m.events, m.cost_usd) for m in MonthlyTeamSpend.objects.all()} == expected
    assert len(expected) == 2


def test_rebuild_month_spend_repairs_totals_that_missed_recorded_events(tenant):
    from django.core.management import call_command

    ingest(tenant, events_for(3) + [dict(SDK_EVENT, event_id="s1", team="search")])
    events_record_pending()
    expected = {(m.month, m.team_name): (m.events, m.cost_usd) for m in MonthlyTeamSpend.objects.all()}
    # As if workers on the old code recorded after the migration's back-fill: one total short, one missing.
    MonthlyTeamSpend.objects.filter(team_name="payments-eng").update(events=1, cost_usd=Decimal("0"))
    MonthlyTeamSpend.objects.filter(team_name="search").delete()
    call_command("rebuild_month_spend", stdout=io.StringIO())
    assert {(m.month, m.team_name): (m.events, m.cost_usd) for m in MonthlyTeamSpend.objects.all()} == expected
    assert expected == _daily_month_totals(tenant)


def test_the_django_admin_cannot_change_or_delete_spend_roll_ups(tenant, telemetry_api, recording):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from usage.models import MonthlyTeamSpend

    assert telemetry_api.post("/v1/ingest", {"model": "gpt-4o", "prompt_tokens": 10, "team": "search"},
                              format="json").status_code == 202
    recording()
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123456")
    client = Client()
    client.login(username="root", password="pw-root-123456")
    day, month = DailySpend.objects.get(), MonthlyTeamSpend.objects.get()
    for model, row in (("dailyspend", day), ("monthlyteamspend", month)):
        assert client.get(f"/admin/usage/{model}/").status_code == 200  # visible
        assert client.post(f"/admin/usage/{model}/{row.pk}/delete/", {"post": "yes"}).status_code == 403
        assert client.get(f"/admin/usage/{model}/add/").status_code == 403
    assert DailySpend.objects.count() == 1 and MonthlyTeamSpend.objects.count() == 1
    assert client.get("/admin/budgets/budgetauditlog/add/").status_code == 403  # the audit log is read-only too


# --- Wake-ups --------------------------------------------------------------------------------------------------

class CountingCache:
    """The configuration's real cache, counting the wake flag requests that reach it."""

    def __init__(self, real):
        self.real, self.adds = real, 0

    def add(self, *args, **kwargs):
        self.adds += 1
        return self.real.add(*args, **kwargs)

    def delete(self, *args, **kwargs):
        return self.real.delete(*args, **kwargs)


@pytest.fixture
def wake_probe(monkeypatch, settings):
    """recorder_wake with a worker process recording (the production configuration's path), counting the flag
    requests that reach the real cache and the runs queued (not sent: no worker in these tests), on a clock
    the test moves."""
    from django.core.cache import cache

    from usage import tasks
    from usage.services import ingest as ingest_module

    settings.CELERY_TASK_ALWAYS_EAGER = False
    probe = SimpleNamespace(cache=CountingCache(cache), queued=[], clock=[1000.0], module=ingest_module)
    monkeypatch.setattr(ingest_module, "cache", probe.cache)
    monkeypatch.setattr(tasks, "cache", probe.cache)
    monkeypatch.setattr(tasks.record_pending_events, "delay", lambda: probe.queued.append(1))
    monkeypatch.setattr(ingest_module, "_clock", lambda: probe.clock[0])
    return probe


def test_a_process_that_saw_the_wake_flag_does_not_ask_again_for_a_moment(wake_probe, settings):
    from django.core.cache import cache

    wake, module = wake_probe.module.recorder_wake, wake_probe.module
    for _ in range(3):
        wake()
    assert (wake_probe.cache.adds, len(wake_probe.queued)) == (1, 1)  # one run queued; two posts skip Redis
    wake_probe.clock[0] += module.WAKE_SKIP_SECONDS
    wake()
    assert (wake_probe.cache.adds, len(wake_probe.queued)) == (2, 1)  # asked again: still queued, no second run
    cache.delete(module.WAKE_KEY)  # what a starting run does
    wake_probe.clock[0] += module.WAKE_SKIP_SECONDS
    wake()
    assert (wake_probe.cache.adds, len(wake_probe.queued)) == (3, 2)

    settings.CELERY_TASK_ALWAYS_EAGER = True  # in-process recording: every post asks (and records its events)
    for _ in range(3):
        cache.delete(module.WAKE_KEY)  # what the eager run does
        wake()
    assert (wake_probe.cache.adds, len(wake_probe.queued)) == (6, 5)


def test_a_flag_set_by_another_process_also_counts_as_a_queued_run(wake_probe):
    from django.core.cache import cache

    module = wake_probe.module
    cache.add(module.WAKE_KEY, 1)  # another web process queued a run
    module.recorder_wake()
    module.recorder_wake()
    assert (wake_probe.cache.adds, wake_probe.queued) == (1, [])


def test_a_failed_wake_up_is_retried_by_the_next_post(wake_probe, monkeypatch):
    module = wake_probe.module

    def unreachable(*args, **kwargs):
        wake_probe.cache.adds += 1
        raise ConnectionError("redis down")

    monkeypatch.setattr(wake_probe.cache, "add", unreachable)
    module.recorder_wake()  # logged, never raised
    module.recorder_wake()  # nothing was learned: asks again
    assert (wake_probe.cache.adds, wake_probe.queued) == (2, [])


def test_a_run_out_of_time_queues_the_next_run_itself(wake_probe):
    from usage.tasks import record_until_done

    assert record_until_done(max_seconds=0) == 0
    assert wake_probe.queued == [1]


@requires_production
@pytest.mark.django_db(transaction=True)
def test_a_woken_run_records_events_committed_while_it_lingers(tenant):
    """A post that skipped its wake-up commits within WAKE_SKIP_SECONDS of the run clearing the flag: the run
    must still be claiming then, or the event would wait for the next wake-up or the sweep."""
    from usage.services.ingest import WAKE_SKIP_SECONDS

    results = []

    def run():
        try:
            results.append(record_pending_events.run())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(WAKE_SKIP_SECONDS * 1.5)  # the run's first claims found nothing
    ingest(tenant, events_for(3))
    thread.join(timeout=30)
    assert results == [3]
    assert not UsageEvent.objects.filter(recorded_at__isnull=True).exists()


@requires_production
def test_a_burst_of_posts_is_recorded_promptly(tenant, telemetry_api, recording):
    for n in range(40):
        response = telemetry_api.post("/v1/ingest", dict(SDK_EVENT, iteration_index=n), format="json")
        assert response.status_code == 202
    recording(timeout=5)  # no beat runs in the tests: a stranded event would never be recorded
    assert SessionState.objects.get(tenant=tenant).events == 40


def test_an_event_is_listed_under_its_teams_spelling_as_it_is_counted(tenant, admin_api):
    """Team names ignore case: an event sent as "Payments" for the team first seen as "payments" is counted
    under "payments" in the roll-ups, and listed so too."""
    ingest(tenant, [dict(SDK_EVENT, team="payments", event_id="first")])
    events_record_pending()
    ingest(tenant, [dict(SDK_EVENT, team="Payments", event_id="second")])
    events_record_pending()
    listed = {e["event_id"]: e["team"] for e in admin_api.get("/v1/usage/events").json()["results"]}
    assert listed == {"first": "payments", "second": "payments"}
    assert set(DailySpend.objects.filter(tenant=tenant).values_list("team_name", flat=True)) == {"payments"}


def test_teams_the_database_tells_apart_are_counted_apart_in_one_batch(tenant, admin_api):
    """Python's lower() folds "ΣΑΣ" and "σας" (final sigma) together, the teams' unique constraint (the database's
    lower()) does not: two teams, each counted its own spend, also when both arrive in one batch."""
    admin_api.post("/v1/teams/budgets", {"team": "σας", "monthly_budget_usd": 100}, format="json")
    admin_api.post("/v1/teams/budgets", {"team": "ΣΑΣ", "monthly_budget_usd": 100}, format="json")
    assert Team.objects.filter(tenant=tenant).count() == 2
    ingest(tenant, [dict(SDK_EVENT, team="ΣΑΣ", event_id="upper", prompt_tokens=3000, completion_tokens=0),
                    dict(SDK_EVENT, team="σας", event_id="lower", prompt_tokens=1000, completion_tokens=0)])
    events_record_pending()
    spend = {row["team"]: row["current_spend"] for row in admin_api.get("/v1/teams/budgets").json()["results"]}
    costs = {e.event_id: e.cost_usd for e in UsageEvent.objects.filter(tenant=tenant)}
    assert spend == {"ΣΑΣ": float(costs["upper"]), "σας": float(costs["lower"])}
    assert dict(UsageEvent.objects.values_list("event_id", "team__name")) == {"upper": "ΣΑΣ", "lower": "σας"}


@requires_production
@pytest.mark.django_db(transaction=True)
def test_a_time_limit_striking_a_query_blocked_on_a_lock_ends_the_run_without_blaming_the_batch(tenant, caplog):
    """Celery's soft time limit is a signal: raised while a query waits on a row lock, the rollback then fails on
    the busy connection. That is the run's time running out, not a bad batch: nothing is set aside, no isolating
    pass runs on the broken connection, and the next run records the events once."""
    import signal

    import psycopg
    from celery.exceptions import SoftTimeLimitExceeded

    from usage.tasks import record_until_done

    ingest(tenant, events_for(1))
    events_record_pending()
    ingest(tenant, events_for(3, session_id="blocked"))
    params = psycopg_params()

    def time_is_up(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, time_is_up)
    try:
        with psycopg.connect(**params) as other:  # holds the team's month roll-up, as a stuck worker would
            other.execute("SELECT 1 FROM usage_monthlyteamspend WHERE tenant_id = %s FOR UPDATE", [tenant.pk])
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            with pytest.raises(SoftTimeLimitExceeded):
                record_until_done(max_seconds=20)
            other.rollback()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert "smaller batches" not in caplog.text
    assert not UsageEvent.objects.exclude(record_error="").exists()
    assert UsageEvent.objects.filter(recorded_at__isnull=True).count() == 3
    assert record_until_done(max_seconds=20) == 3
    assert SessionState.objects.get(session_id="blocked").events == 3


@pytest.mark.django_db(transaction=True)
def test_a_rollback_failure_hiding_a_time_limit_is_read_as_the_time_limit(tenant, monkeypatch, caplog):
    """What a worker logged when the signal struck mid-query under Celery: the rollback's ProgrammingError, with
    the time limit as its context. Read as a bad batch, it started an isolating pass on the broken connection."""
    from celery.exceptions import SoftTimeLimitExceeded
    from django.db import ProgrammingError

    from usage import tasks

    def interrupted():
        try:
            raise SoftTimeLimitExceeded()
        except SoftTimeLimitExceeded:
            raise ProgrammingError("can't change 'autocommit' now: connection in transaction status ACTIVE") from None

    isolating = []
    monkeypatch.setattr(tasks, "events_record_pending", interrupted)
    monkeypatch.setattr(tasks, "events_record_isolating", lambda **kwargs: isolating.append(kwargs))
    with pytest.raises(SoftTimeLimitExceeded):
        tasks.record_until_done(max_seconds=5)
    assert isolating == [] and "smaller batches" not in caplog.text
