"""(c) PostgreSQL cut and restored while events are posted and a worker records: posts during the outage get
503 (never a 202 that is then lost) and the worker reconnects by itself. (d) 10,000 events each sent three
times, interleaved and concurrent: exactly 10,000 recorded, totals equal to a single send."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import WorkerProcess, database_url_for_subprocess, make_key, subprocess_env, wait_until_recorded
from tests.faults.conftest import PgProxy, ServerProcess, wait_until
from tests.faults.test_ingest_faults import assert_recorded_exactly_once
from usage.models import UsageEvent

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def test_postgres_outage_gets_503s_loses_no_202_and_the_worker_reconnects(tenant):
    key = make_key(tenant, "telemetry", "agents")
    proxy = PgProxy().start()
    direct = database_url_for_subprocess()
    via_proxy = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    env = subprocess_env(DATABASE_URL=via_proxy, DB_CONN_MAX_AGE="0")
    worker = WorkerProcess(name="pgcut", env=env).start()
    server = ServerProcess(env, workers=2, name="pgcut").start()
    accepted, refused, other = [], [], []
    stop = threading.Event()

    def poster():
        n = 0
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            while not stop.is_set():
                n += 1
                event_id = f"{threading.get_ident()}-{n}"
                try:
                    response = client.post("/v1/ingest", json={"model": "gpt-4o", "prompt_tokens": 100,
                                                               "event_id": event_id, "session_id": "s1"})
                except httpx.HTTPError:
                    other.append(event_id)
                    continue
                (accepted if response.status_code == 202 else refused if response.status_code == 503
                 else other).append((event_id, response.status_code))
                time.sleep(0.01)

    try:
        threads = [threading.Thread(target=poster) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        proxy.cut()
        time.sleep(3)
        proxy.restore()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        wait_until(lambda: not UsageEvent.objects.filter(recorded_at__isnull=True).exists(), timeout=60,
                   what="the reconnected worker to record the backlog")
    finally:
        stop.set()
        server.stop()
        worker.stop()
        proxy.cut()

    print(f"\npg outage: {len(accepted)} × 202, {len(refused)} × 503, other {len(other)}")
    assert refused, "posts during the outage must get 503"
    assert not other, other[:5]
    accepted_ids = {event_id for event_id, _ in accepted}
    stored = set(UsageEvent.objects.filter(tenant=tenant).values_list("event_id", flat=True))
    assert accepted_ids <= stored, "an event that got 202 was lost"
    assert_recorded_exactly_once(tenant, len(stored))


def test_ten_thousand_events_sent_three_times_concurrently_are_recorded_once(tenant):
    key = make_key(tenant, "telemetry", "agents")
    env = subprocess_env()
    workers = [WorkerProcess(name=f"dup{i}", env=env).start() for i in range(2)]
    server = ServerProcess(env, workers=3, name="dups").start()
    events = [{"model": random.choice(["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet"]),
               "prompt_tokens": random.randint(1, 5000), "completion_tokens": random.randint(0, 800),
               "team": random.choice(["a", "b", "c"]), "session_id": f"s{i % 97}", "iteration_index": i // 97,
               "event_id": f"evt-{i}"} for i in range(10_000)]
    batches = [events[i:i + 250] for i in range(0, len(events), 250)]
    sends = batches * 3
    random.shuffle(sends)
    statuses = []

    def send(batch):
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            statuses.append(client.post("/v1/ingest", json={"events": batch}).status_code)

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(send, sends))
        wait_until_recorded(timeout=120)
    finally:
        server.stop()
        for worker in workers:
            worker.stop()

    assert statuses == [202] * len(sends)
    assert_recorded_exactly_once(tenant, 10_000)
    from decimal import Decimal

    from usage.services.pricing import blended_cost

    expected = sum((blended_cost(e["prompt_tokens"], e["completion_tokens"]) for e in events), Decimal("0"))
    assert sum(e.cost_usd for e in UsageEvent.objects.filter(tenant=tenant)) == expected
