"""Ingestion under faults (PostgreSQL + Redis only): a worker killed mid-batch, Redis down, the database gone.
Nothing accepted is lost, nothing is counted twice, and nothing is accepted that will not be recorded."""

import signal
import time
from decimal import Decimal

import httpx
import pytest
import redis as redis_py
from django.utils import timezone

from tenants.models import ApiKey
from tests.conftest import (
    WorkerProcess,
    database_url_for_subprocess,
    make_key,
    subprocess_env,
    wait_until_recorded,
)
from tests.faults.conftest import PgProxy, PrivateRedis, ServerProcess, wait_until
from usage.models import DailySpend, HourlySpend, SessionState, UsageEvent
from usage.services.ingest import event_batch_ingest, parse_ingest_body
from usage.tasks import sweep_unrecorded_events

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

SDK_EVENT = {"model": "gpt-4o", "latency_ms": 640, "prompt_tokens": 900, "completion_tokens": 150,
             "identified_risks": [], "project": "checkout-service"}


def assert_recorded_exactly_once(tenant, expected: int) -> None:
    events = UsageEvent.objects.filter(tenant=tenant)
    assert events.count() == expected
    assert not events.filter(recorded_at__isnull=True).exists()
    total = sum((e.cost_usd for e in events), Decimal("0"))
    daily = list(DailySpend.objects.filter(tenant=tenant))
    assert sum(d.events for d in daily) == expected
    assert sum((d.cost_usd for d in daily), Decimal("0")) == total
    hourly = list(HourlySpend.objects.filter(tenant=tenant))
    assert sum(h.events for h in hourly) == expected
    assert sum((h.cost_usd for h in hourly), Decimal("0")) == total
    sessions = list(SessionState.objects.filter(tenant=tenant))
    assert sum(s.events for s in sessions) == events.exclude(session_id="").count()
    for state in sessions:
        mine = events.filter(session_id=state.session_id)
        assert state.events == mine.count()
        assert state.spent_usd == sum((e.cost_usd for e in mine), Decimal("0"))


def partial_roll_ups_match_recorded_events(tenant) -> None:
    recorded = UsageEvent.objects.filter(tenant=tenant, recorded_at__isnull=False)
    daily = DailySpend.objects.filter(tenant=tenant)
    assert sum(d.events for d in daily) == recorded.count()
    assert sum((d.cost_usd for d in daily), Decimal("0")) == sum((e.cost_usd for e in recorded), Decimal("0"))


def test_worker_killed_mid_backlog_then_a_new_worker_records_every_event_exactly_once(tenant):
    now = timezone.now()
    total = 20_000
    for chunk in range(total // 1000):
        raw = [dict(SDK_EVENT, team=f"team-{i % 4}", session_id=f"run-{i % 7}", iteration_index=chunk * 1000 + i,
                    prompt_tokens=100 + i) for i in range(1000)]
        event_batch_ingest(tenant=tenant, events=parse_ingest_body({"events": raw}, now=now), received_at=now)

    first = WorkerProcess(name="doomed", concurrency=1).start()
    try:
        sweep_unrecorded_events.delay()
        wait_until(lambda: UsageEvent.objects.filter(recorded_at__isnull=False).exists(), timeout=60,
                   what="the first recorded batch", interval=0.02)
        first.stop(sig=signal.SIGKILL)
    finally:
        first.stop(sig=signal.SIGKILL)
    recorded_before = UsageEvent.objects.filter(recorded_at__isnull=False).count()
    assert 0 < recorded_before < total, "the worker should have died in the middle of the backlog"
    partial_roll_ups_match_recorded_events(tenant)

    second = WorkerProcess(name="successor", concurrency=1).start()
    try:
        sweep_unrecorded_events.delay()  # what beat does every few seconds
        wait_until_recorded(timeout=120)
    finally:
        second.stop()
    assert_recorded_exactly_once(tenant, total)
    assert SessionState.objects.filter(tenant=tenant).count() == 7


def post_timed(client: httpx.Client, url: str, key: str, body: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(f"{url}/v1/ingest", json=body, headers={"Authorization": f"Bearer {key}"})
    return response, time.monotonic() - started


def test_redis_outage_loses_no_event_and_never_slows_a_post(tenant):
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    redis = PrivateRedis().start()
    env = subprocess_env(REDIS_URL=redis.url)
    server = ServerProcess(env, name="redis-outage").start()
    worker = WorkerProcess(name="redis-outage", env=env).start()
    event_ids: list[str] = []
    slow: list[float] = []
    try:
        with httpx.Client(timeout=10) as client:
            def post_some(count: int, phase: str) -> None:
                for i in range(count):
                    body = dict(SDK_EVENT, session_id="outage-run", iteration_index=len(event_ids) + 1)
                    response, seconds = post_timed(client, server.url, key, body)
                    assert response.status_code == 202, (phase, i, response.text)
                    event_ids.extend(response.json()["event_ids"])
                    slow.append(seconds)

            post_some(10, "before")
            redis.kill()
            post_some(40, "redis down")
            assert max(slow[10:]) < 1.0, f"a post took {max(slow[10:]):.2f}s with Redis down"
            assert UsageEvent.objects.filter(recorded_at__isnull=True).exists()

            redis.start()
            post_some(5, "after")
        wait_until_recorded(timeout=60)
    finally:
        worker.stop()
        server.stop()
        redis.kill()
    assert len(set(event_ids)) == 55
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == set(event_ids)
    assert_recorded_exactly_once(tenant, 55)
    assert SessionState.objects.get(tenant=tenant, session_id="outage-run").iterations == 55


def test_events_posted_while_redis_is_down_are_recorded_by_the_sweep_alone(tenant):
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    redis = PrivateRedis().start()
    server = ServerProcess(subprocess_env(REDIS_URL=redis.url), name="sweep-only").start()
    try:
        redis.kill()
        with httpx.Client(timeout=10) as client:
            for i in range(20):
                response, seconds = post_timed(client, server.url, key, dict(SDK_EVENT, iteration_index=i))
                assert response.status_code == 202
                assert seconds < 1.0
    finally:
        server.stop()
    assert UsageEvent.objects.filter(recorded_at__isnull=True).count() == 20
    assert sweep_unrecorded_events.run() == 20
    assert sweep_unrecorded_events.run() == 0
    assert_recorded_exactly_once(tenant, 20)


def test_database_unreachable_gets_503_never_202_and_recovers(tenant):
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    proxy = PgProxy().start()
    direct = database_url_for_subprocess()
    through_proxy = direct.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    assert through_proxy != direct
    server = ServerProcess(subprocess_env(DATABASE_URL=through_proxy), name="db-outage").start()
    try:
        with httpx.Client(timeout=15) as client:
            response, _ = post_timed(client, server.url, key, dict(SDK_EVENT, event_id="before"))
            assert response.status_code == 202

            proxy.cut()
            for i in range(6):
                response, seconds = post_timed(client, server.url, key, dict(SDK_EVENT, event_id=f"during-{i}"))
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert error["code"] == "database_unavailable"
                assert error["request_id"]
                assert seconds < 5
            assert client.get(f"{server.url}/healthz").status_code == 503

            proxy.restore()
            response = wait_until(
                lambda: (r := post_timed(client, server.url, key, dict(SDK_EVENT, event_id="after"))[0])
                .status_code == 202 and r,
                timeout=15, what="a 202 once the database is back",
            )
            assert response.json()["event_ids"] == ["after"]
    finally:
        server.stop()
        proxy.cut()
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"before", "after"}


def test_a_hung_redis_costs_one_timeout_not_one_per_call(tenant):
    """A Redis that accepts connections but never answers: each optional Redis call (rate limit, wake-up, key
    touch, remembered limit) would wait its 0.5 s timeout, 1–2 s per request, past aw-sdk's own timeout. After
    the first timeout the server skips them for a while, and counts again once Redis answers."""
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    tenant.telemetry_rate_limit_per_minute = 500  # leases of one number: every request asks Redis
    tenant.save()
    redis = PrivateRedis().start()
    server = ServerProcess(subprocess_env(REDIS_URL=redis.url, REDIS_BACKOFF_SECONDS="3"), workers=1,
                           name="hung-redis").start()
    headers = {"Authorization": f"Bearer {key}"}
    timings: list[float] = []
    try:
        with httpx.Client(timeout=10, headers=headers) as client:
            def call(i: int) -> None:
                started = time.monotonic()
                if i % 2:
                    response = client.get(f"{server.url}/v1/budget-check?session_id=hung-{i}&limit_usd={i}.5")
                    assert response.status_code == 200, response.text
                else:
                    response = client.post(f"{server.url}/v1/ingest", json=dict(SDK_EVENT, session_id=f"hung-{i}"))
                    assert response.status_code == 202, response.text
                timings.append(time.monotonic() - started)

            call(0)
            redis.freeze()
            for i in range(1, 21):
                call(i)
            assert max(timings) < 1.0, timings
            assert sum(timings) < 3.0, timings  # without the gap: about 20 s (1 s per request)

            redis.thaw()
            redis_client = redis_py.Redis.from_url(redis.url, socket_timeout=2)
            for counter in redis_client.keys("*rl:*"):
                redis_client.delete(counter)
            time.sleep(3.5)
            call(22)
            assert redis_client.keys("*rl:*"), "the rate limiter did not count again once Redis answered"
    finally:
        server.stop()
        redis.kill()
    assert UsageEvent.objects.filter(tenant=tenant).count() == 12  # every post accepted while Redis hung

