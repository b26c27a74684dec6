"""aw-sdk 1.0.1 itself, unchanged, against a live AgentWatch server, with a local stand-in for the OpenAI API."""

from decimal import Decimal

from agentwatch import WatchedOpenAI

from tenants.models import ApiKey, Team
from tests.conftest import make_key, wait_for_sdk_events
from tests.fakes import FakeOpenAI
from usage.models import Anomaly, DailySpend, SessionState, UsageEvent
from usage.services.pricing import blended_cost


def watched_client(fake, live_server, key, **agentwatch):
    return WatchedOpenAI(
        api_key="sk-test", base_url=f"{fake.url}/v1", agentwatch_api_key=key,
        ingest_url=f"{live_server.url}/v1/ingest", **agentwatch,
    )


def ask(client, content: str, model: str = "gpt-4o"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])


def test_sdk_calls_arrive_as_priced_events_with_team_project_session_and_iterations(tenant, live_server, recording):
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    with FakeOpenAI(prompt_tokens=1000, completion_tokens=200) as fake:
        client = watched_client(fake, live_server, key, agentwatch_team="Payments-Eng",
                                agentwatch_project="checkout-service", agentwatch_session_id="ci-run-123")
        answers = [
            ask(client, "Summarise the refund policy."),
            ask(client, "Write to jane.doe@example.com about her refund."),
            ask(client, "Thanks, that is all."),
        ]
        assert [a.choices[0].message.content for a in answers] == ["ok", "ok", "ok"]
        assert len(fake.calls) == 3

    wait_for_sdk_events(client, 3)
    recording()

    events = list(UsageEvent.objects.order_by("iteration_index"))
    assert [e.iteration_index for e in events] == [1, 2, 3]
    assert [e.identified_risks for e in events] == [[], ["PII_EMAIL"], []]
    team = Team.objects.get(tenant=tenant)
    assert team.name == "Payments-Eng"
    expected_cost = blended_cost(1000, 200)
    assert expected_cost == Decimal("0.0036")
    for event in events:
        assert event.tenant_id == tenant.pk
        assert event.model == "gpt-4o"
        assert (event.prompt_tokens, event.completion_tokens) == (1000, 200)
        assert event.team_id == team.pk
        assert event.project == "checkout-service"
        assert event.session_id == "ci-run-123"
        assert event.recorded_at is not None
        assert event.cost_usd == expected_cost
        assert event.priced_by == UsageEvent.PricedBy.BLENDED

    session = SessionState.objects.get(tenant=tenant, session_id="ci-run-123")
    assert session.events == 3
    assert session.iterations == 3
    assert session.spent_usd == expected_cost * 3
    assert session.team_id == team.pk
    assert session.project == "checkout-service"
    assert session.recent_prompts == {"1": 1000, "2": 1000, "3": 1000}

    daily = DailySpend.objects.get(tenant=tenant)
    assert (daily.team_name, daily.project, daily.model) == ("Payments-Eng", "checkout-service", "gpt-4o")
    assert (daily.events, daily.prompt_tokens, daily.completion_tokens) == (3, 3000, 600)
    assert daily.cost_usd == expected_cost * 3


def test_sdk_catalog_pricing_and_a_growing_session_is_flagged_as_runaway(tenant, live_server, recording):
    tenant.cost_mode = "catalog"
    tenant.save(update_fields=["cost_mode"])
    key = make_key(tenant, ApiKey.Scope.TELEMETRY, "sdk")
    sizes = {1: 1000, 2: 1500, 3: 2250, 4: 3375, 5: 5063}
    with FakeOpenAI(prompt_tokens=lambda n: sizes[n], completion_tokens=100) as fake:
        client = watched_client(fake, live_server, key, agentwatch_team="research",
                                agentwatch_session_id="loop-1")
        for _ in sizes:
            ask(client, "Try again, with more context.", model="gpt-4o-mini")

    wait_for_sdk_events(client, 5)
    recording()

    events = list(UsageEvent.objects.order_by("iteration_index"))
    assert [e.iteration_index for e in events] == [1, 2, 3, 4, 5]
    assert {e.priced_by for e in events} == {UsageEvent.PricedBy.CATALOG}
    session = SessionState.objects.get(tenant=tenant, session_id="loop-1")
    assert session.spent_usd == sum(e.cost_usd for e in events)
    assert session.recent_prompts == {str(k): v for k, v in sizes.items()}
    loop = Anomaly.objects.get(tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP, session_id="loop-1")
    assert loop.status == Anomaly.Status.OPEN


def test_sdk_events_with_another_tenants_key_land_in_that_tenant(tenant, other_tenant, live_server, recording):
    key = make_key(other_tenant, ApiKey.Scope.TELEMETRY, "bob sdk")
    with FakeOpenAI() as fake:
        client = watched_client(fake, live_server, key, agentwatch_session_id="bob-run")
        ask(client, "hello")
    wait_for_sdk_events(client, 1)
    recording()
    assert not UsageEvent.objects.filter(tenant=tenant).exists()
    assert UsageEvent.objects.get(tenant=other_tenant).session_id == "bob-run"
    assert not SessionState.objects.filter(tenant=tenant).exists()
