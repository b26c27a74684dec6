"""Budget enforcement under concurrency (PostgreSQL + Redis, gunicorn and a real worker): 50 concurrent sessions
of one hard-stop team loop budget-check → (fake) LLM call → ingest. How far does the team overspend?

The bound (README, "How far a team can overspend"): every call already past its budget-check when the budget
is crossed still happens (at most one per session in flight), plus the calls checked while the events that
crossed it were still being recorded (ingestion lag × call rate)."""

import threading
import time
from decimal import Decimal

import httpx
import pytest

from budgets.services import budget_upsert
from tests.conftest import WorkerProcess, make_key, subprocess_env, wait_until_recorded
from tests.faults.conftest import ServerProcess
from usage.models import UsageEvent

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

SESSIONS = 50
PROMPT_TOKENS = 10_000                       # blended: 10,000 × $3 / 1M = $0.03 a call
COST_PER_CALL = Decimal("0.03")
BUDGET = Decimal("3.00")                     # crossed after 100 calls
MAX_CALLS_PER_SESSION = 30
LLM_LATENCY_SECONDS = 0.02


def test_fifty_concurrent_sessions_overspend_a_hard_stop_team_by_a_bounded_amount(tenant):
    budget_upsert(tenant=tenant, team_name="enforced", monthly_budget_usd=BUDGET, hard_stop=True)
    key = make_key(tenant, "telemetry", "agents")
    env = subprocess_env()
    worker = WorkerProcess(name="overspend", env=env).start()
    server = ServerProcess(env, workers=4, name="overspend").start()
    calls, blocked_at = [], []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {key}"}

    def agent(n: int) -> None:
        session_id = f"agent-{n}"
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            for iteration in range(1, MAX_CALLS_PER_SESSION + 1):
                check = client.get("/v1/budget-check", params={
                    "session_id": session_id, "limit_usd": "1000", "team": "enforced"}).json()
                if check["exceeded"]:
                    assert check["reason"] == "team_budget"
                    with lock:
                        blocked_at.append(time.monotonic())
                    return
                time.sleep(LLM_LATENCY_SECONDS)     # the (fake) LLM call, billed by the provider
                with lock:
                    calls.append(time.monotonic())
                response = client.post("/v1/ingest", json={
                    "model": "gpt-4o", "prompt_tokens": PROMPT_TOKENS, "completion_tokens": 0, "team": "enforced",
                    "session_id": session_id, "iteration_index": iteration})
                assert response.status_code == 202

    try:
        started = time.monotonic()
        threads = [threading.Thread(target=agent, args=(n,)) for n in range(SESSIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        elapsed = time.monotonic() - started
        wait_until_recorded(timeout=60)
    finally:
        server.stop()
        worker.stop()

    spent = sum(e.cost_usd for e in UsageEvent.objects.filter(tenant=tenant))
    calls_within_budget = int(BUDGET / COST_PER_CALL)
    over_calls = len(calls) - calls_within_budget
    over_dollars = spent - BUDGET
    rate = len(calls) / elapsed
    print(f"\noverspend: {len(calls)} calls in {elapsed:.1f}s ({rate:.0f} calls/s), budget ${BUDGET} = "
          f"{calls_within_budget} calls; over by {over_calls} calls = ${over_dollars}; "
          f"sessions blocked: {len(blocked_at)}/{SESSIONS}")
    assert len(blocked_at) == SESSIONS, "every session must end up blocked by the team budget"
    assert spent == len(calls) * COST_PER_CALL
    # In flight when crossed (≤ one per session) plus what the ingestion lag lets through at this call rate;
    # recording here lags well under a second, so allow one second of calls.
    assert over_calls <= SESSIONS + rate * 1.0, over_calls
