"""aw-sdk 1.0.1, unchanged, in enforcement mode against a live AgentWatch server and a local fake OpenAI."""

import socket
from decimal import Decimal

import pytest
from agentwatch import AgentBudgetCheckUnavailable, AgentBudgetExceeded, WatchedOpenAI

from budgets.services import budget_upsert
from tenants.models import ApiKey
from tests.conftest import make_key, wait_for_sdk_events
from tests.fakes import FakeOpenAI
from usage.models import SessionState, UsageEvent

# 1,000 + 200 tokens at the blended $3 per million: $0.0036 per call.
CALL_COST = 0.0036


def enforced_client(fake, server_url: str, key: str, **agentwatch):
    return WatchedOpenAI(
        api_key="sk-test", base_url=f"{fake.url}/v1", agentwatch_api_key=key,
        ingest_url=f"{server_url}/v1/ingest", agentwatch_enforcement_mode=True, **agentwatch,
    )


def ask(client):
    return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Next step."}])


def call_and_wait_recorded(client, recording, total_events: int) -> None:
    ask(client)
    wait_for_sdk_events(client, total_events)
    recording()


def test_session_budget_blocks_once_recorded_spend_reaches_the_limit(tenant, live_server, recording):
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    session_id = "ci run+7/job:é"
    with FakeOpenAI(prompt_tokens=1000, completion_tokens=200) as fake:
        client = enforced_client(fake, live_server.url, key, agentwatch_session_id=session_id,
                                 agentwatch_session_budget_usd=0.01)
        for n in (1, 2, 3):
            call_and_wait_recorded(client, recording, n)
        assert len(fake.calls) == 3
        state = SessionState.objects.get(tenant=tenant, session_id=session_id)
        assert state.spent_usd == Decimal("0.0108")
        with pytest.raises(AgentBudgetExceeded) as blocked:
            ask(client)
        assert blocked.value.session_id == session_id
        assert blocked.value.spent == pytest.approx(CALL_COST * 3)
        assert blocked.value.limit == pytest.approx(0.01)
        with pytest.raises(AgentBudgetExceeded):
            ask(client)
        assert len(fake.calls) == 3, "the upstream provider must not be called once the budget is exceeded"
    # The limit the SDK sent was remembered for the Sessions page.
    assert UsageEvent.objects.filter(session_id=session_id).count() == 3
    assert SessionState.objects.get(tenant=tenant, session_id=session_id).last_limit_usd == Decimal("0.01")


def test_session_ids_with_plus_space_slash_colon_percent_and_non_ascii_survive_the_sdk(tenant, live_server, recording):
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    # "%41-run" and "50%25 off" hold escapes httpx leaves alone: decoded, they would be other sessions; decoded,
    # "step%0A3" and "50%ff" could not be stored at all.
    session_ids = ["a+b", "ci run 7", "org/repo/job", "build:42:step", "ügé-東京", "100% done", "x=y?z", "%41-run",
                   "50%25 off", "step%0A3", "50%ff", "50%FF"]
    with FakeOpenAI(prompt_tokens=1000, completion_tokens=200) as fake:
        for n, session_id in enumerate(session_ids, start=1):
            client = enforced_client(fake, live_server.url, key, agentwatch_session_id=session_id,
                                     agentwatch_session_budget_usd=0.003)
            call_and_wait_recorded(client, recording, n)
            with pytest.raises(AgentBudgetExceeded) as blocked:
                ask(client)
            assert blocked.value.spent == pytest.approx(CALL_COST), session_id
        assert len(fake.calls) == len(session_ids)
    assert set(SessionState.objects.filter(tenant=tenant).values_list("session_id", flat=True)) == set(session_ids)


@pytest.mark.parametrize("hard_stop", [True, False])
def test_team_at_its_budget_blocks_from_the_sessions_second_call_only_with_hard_stop(
        tenant, live_server, recording, hard_stop):
    budget_upsert(tenant=tenant, team_name="backend-engineers", monthly_budget_usd=Decimal("0.01"),
                  hard_stop=hard_stop)
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    with FakeOpenAI(prompt_tokens=3000, completion_tokens=400) as fake:  # $0.0102 per call
        client = enforced_client(fake, live_server.url, key, agentwatch_session_id="team-run",
                                 agentwatch_team="backend-engineers", agentwatch_session_budget_usd=5.0)
        # aw-sdk sends no team on its check: the first call of a new session goes through.
        call_and_wait_recorded(client, recording, 1)
        if hard_stop:
            with pytest.raises(AgentBudgetExceeded) as blocked:
                ask(client)
            assert blocked.value.spent == pytest.approx(0.0102)
            assert blocked.value.limit == pytest.approx(0.01)
            assert len(fake.calls) == 1
        else:
            ask(client)
            ask(client)
            assert len(fake.calls) == 3


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_down_lets_calls_through_unless_fail_open_is_off(tenant):
    down = f"http://127.0.0.1:{closed_port()}"
    with FakeOpenAI() as fake:
        client = enforced_client(fake, down, "aw_live_unreachable", agentwatch_session_id="s",
                                 agentwatch_session_budget_usd=0.01)
        assert ask(client).choices[0].message.content == "ok"
        assert len(fake.calls) == 1
        strict = enforced_client(fake, down, "aw_live_unreachable", agentwatch_session_id="s",
                                 agentwatch_session_budget_usd=0.01, agentwatch_enforcement_fail_open=False)
        with pytest.raises(AgentBudgetCheckUnavailable):
            ask(strict)
        assert len(fake.calls) == 1
