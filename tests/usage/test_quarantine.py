"""An event whose recording fails every time (a poison event) is set aside with its error instead of holding up
every event behind it; it is never counted, and `manage.py quarantined_events --retry` brings it back once the
cause is fixed. Two kinds: a real one known at pricing (a tenant price so high that one event's cost would
overflow the money column, numeric(20,10)), set aside inside the batch; and any other failure of the recording
transaction, narrowed down by halving (simulated here by a pricing function that raises for one model)."""

import datetime
import io
import time
from decimal import Decimal

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import ApiKey
from tests.conftest import api_client_for, make_key
from tests.usage.test_recording import SDK_EVENT, assert_totals_match_events, ingest
from tests.usage.test_retention import purge
from usage.models import DailySpend, SessionState, UsageEvent
from usage.services import recording
from usage.services.pricing import price_override_set
from usage.services.recording import events_record_isolating
from usage.tasks import record_until_done

POISON_MODEL = "overflow-model"


@pytest.fixture
def priced_to_overflow(tenant):
    """Catalog pricing, with a price at the top of what the price column holds for one model: 10^9 prompt tokens
    of it cost ≈ 10^11 USD, more than a cost can be (< 10^10)."""
    tenant.cost_mode = "catalog"
    tenant.save(update_fields=["cost_mode"])
    return price_override_set(tenant=tenant, model=POISON_MODEL, input_per_mtok=Decimal("99999999.9999"),
                              output_per_mtok=Decimal("1"))


def poison(**fields) -> dict:
    return dict(SDK_EVENT, model=POISON_MODEL, prompt_tokens=10**9, completion_tokens=0, **fields)


def test_a_poison_event_is_set_aside_and_the_events_behind_it_are_recorded(tenant, telemetry_api, recording,
                                                                           priced_to_overflow):
    response = telemetry_api.post("/v1/ingest", {"events": [
        dict(SDK_EVENT, event_id="before", iteration_index=1),
        poison(event_id="poison", iteration_index=2),
        dict(SDK_EVENT, event_id="after", iteration_index=3),
    ]}, format="json")
    assert response.status_code == 202
    recording()
    # Later posts are not held up either.
    assert telemetry_api.post("/v1/ingest", dict(SDK_EVENT, event_id="later", iteration_index=4),
                              format="json").status_code == 202
    recording()

    set_aside = UsageEvent.objects.get(tenant=tenant, event_id="poison")
    assert set_aside.recorded_at is not None and set_aside.cost_usd is None
    assert set_aside.record_error.startswith("CostOverflow") and POISON_MODEL in set_aside.record_error
    counted = UsageEvent.objects.filter(tenant=tenant, record_error="")
    assert sorted(counted.values_list("event_id", flat=True)) == ["after", "before", "later"]
    assert all(event.cost_usd > 0 for event in counted)
    daily_total = sum((d.cost_usd for d in DailySpend.objects.filter(tenant=tenant)), Decimal("0"))
    assert daily_total == sum((e.cost_usd for e in counted), Decimal("0"))
    assert sum(d.events for d in DailySpend.objects.filter(tenant=tenant)) == 3
    assert SessionState.objects.get(tenant=tenant, session_id=SDK_EVENT["session_id"]).events == 3

    health = APIClient().get("/healthz").json()
    assert health["checks"]["quarantined_events"] == 1
    assert health["checks"]["ingest"] == "ok" and health["checks"]["ingest_lag_seconds"] == 0

    # The operator fixes the price and puts the event back: it is recorded, and counted once.
    price_override_set(tenant=tenant, model=POISON_MODEL, input_per_mtok=Decimal("1"), output_per_mtok=Decimal("1"))
    out = io.StringIO()
    call_command("quarantined_events", stdout=out)
    assert "event_id=poison" in out.getvalue() and "--retry" in out.getvalue()
    call_command("quarantined_events", retry=True, stdout=out)
    assert "Put 1 event back" in out.getvalue()
    recording()
    fixed = UsageEvent.objects.get(tenant=tenant, event_id="poison")
    assert fixed.record_error == "" and fixed.cost_usd == Decimal("1000.0000000000")  # 10^9 tokens at $1/M
    assert_totals_match_events(tenant)
    assert SessionState.objects.get(tenant=tenant, session_id=SDK_EVENT["session_id"]).events == 4
    assert APIClient().get("/healthz").json()["checks"]["quarantined_events"] == 0


def test_overflowing_events_are_all_set_aside_in_the_batch_itself(tenant, priced_to_overflow):
    ingest(tenant, [dict(SDK_EVENT, event_id="good")] + [poison(event_id=f"p{i}") for i in range(12)])
    assert record_until_done() == 1
    assert UsageEvent.objects.exclude(record_error="").count() == 12
    assert not UsageEvent.objects.filter(recorded_at__isnull=True).exists()
    assert sum(d.events for d in DailySpend.objects.filter(tenant=tenant)) == 1


BROKEN_MODEL = "breaks-recording"


@pytest.fixture
def broken_pricing(monkeypatch):
    """Recording raises for one model, as a bug or a bad row would: the whole transaction fails."""
    real = recording.event_cost

    def event_cost(event, **kwargs):
        if event.model == BROKEN_MODEL:
            raise RuntimeError(f"cannot price {event.event_id}")
        return real(event, **kwargs)

    monkeypatch.setattr(recording, "event_cost", event_cost)


def broken(**fields) -> dict:
    return dict(SDK_EVENT, model=BROKEN_MODEL, **fields)


def test_a_failing_batch_is_halved_until_the_event_that_fails_is_found(tenant, broken_pricing):
    ingest(tenant, [dict(SDK_EVENT, event_id=f"g{i}", iteration_index=i) for i in range(20)]
           + [broken(event_id="bad")] + [dict(SDK_EVENT, event_id=f"h{i}") for i in range(20)])
    assert record_until_done() == 40
    bad = UsageEvent.objects.get(event_id="bad")
    assert bad.record_error == "RuntimeError: cannot price bad" and bad.cost_usd is None
    assert_totals_match_events_except(tenant, "bad")


def assert_totals_match_events_except(tenant, event_id: str) -> None:
    counted = UsageEvent.objects.filter(tenant=tenant).exclude(event_id=event_id)
    assert sum(d.events for d in DailySpend.objects.filter(tenant=tenant)) == counted.count()
    assert (sum((d.cost_usd for d in DailySpend.objects.filter(tenant=tenant)), Decimal("0"))
            == sum((e.cost_usd for e in counted), Decimal("0")))


def test_when_every_pending_event_fails_none_is_set_aside(tenant, broken_pricing):
    """Failing alone is not enough when nothing else records: that looks like a fault of the code or the
    database, not of the events, so they stay pending (and the ingest-lag alarm fires) rather than hidden."""
    ingest(tenant, [broken(event_id="p1"), broken(event_id="p2")])
    assert record_until_done() == 0
    assert UsageEvent.objects.filter(tenant=tenant, recorded_at__isnull=True).count() == 2
    assert not UsageEvent.objects.exclude(record_error="").exists()


def test_at_most_ten_events_are_set_aside_in_one_pass(tenant, broken_pricing):
    ingest(tenant, [dict(SDK_EVENT, event_id="good")] + [broken(event_id=f"p{i}") for i in range(12)])
    assert record_until_done() == 1
    assert UsageEvent.objects.exclude(record_error="").count() == 10
    assert UsageEvent.objects.filter(recorded_at__isnull=True).count() == 2


def test_a_lost_race_during_the_search_keeps_what_was_recorded_and_sets_nothing_aside(tenant, monkeypatch):
    ids = [UsageEvent.objects.get(event_id=e).pk for e in ingest(tenant, [dict(SDK_EVENT, event_id="a"),
                                                                          dict(SDK_EVENT, event_id="b")])]
    real = recording.events_record_pending

    def flaky(*, limit, event_ids=None):
        if event_ids == ids:
            raise RuntimeError("the pair fails")
        if event_ids == ids[1:]:
            raise OperationalError("deadlock detected")
        return real(limit=limit, event_ids=event_ids)

    monkeypatch.setattr(recording, "events_record_pending", flaky)
    result = events_record_isolating()
    assert (result.recorded, result.quarantined) == (1, [])
    assert UsageEvent.objects.get(event_id="a").cost_usd > 0
    assert UsageEvent.objects.get(event_id="b").recorded_at is None


def test_the_task_time_limit_is_not_taken_for_a_poison_event(tenant, monkeypatch):
    ingest(tenant, [dict(SDK_EVENT, event_id="a"), dict(SDK_EVENT, event_id="b")])

    def out_of_time(*, limit, event_ids=None):
        if event_ids is None:
            raise RuntimeError("the batch fails")
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(recording, "events_record_pending", out_of_time)
    monkeypatch.setattr("usage.tasks.events_record_pending", out_of_time)
    with pytest.raises(SoftTimeLimitExceeded):
        record_until_done()
    assert not UsageEvent.objects.exclude(record_error="").exists()


def test_the_retention_purge_keeps_quarantined_events(tenant, priced_to_overflow):
    tenant.retention_days = 7
    tenant.save()
    old = (timezone.now() - datetime.timedelta(days=30)).isoformat()
    ingest(tenant, [dict(SDK_EVENT, event_id="old-good", timestamp=old), poison(event_id="old-poison", timestamp=old)])
    record_until_done()
    purge()
    assert list(UsageEvent.objects.filter(tenant=tenant).values_list("event_id", flat=True)) == ["old-poison"]


def test_the_command_says_when_there_is_nothing_and_refuses_an_unknown_tenant(tenant):
    out = io.StringIO()
    call_command("quarantined_events", stdout=out)
    assert "No quarantined events." in out.getvalue()
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        call_command("quarantined_events", tenant="nope")


def test_running_totals_past_ten_billion_dollars_are_recorded_and_hold_up_no_one(
        tenant, other_tenant, telemetry_api, admin_api, recording):
    """Each event costs just under what one event may (10^10 USD), so their sums pass what a cost column holds.
    The totals (session, daily, hourly, monthly) are wider: every event is counted, exactly, and the answers that
    show the totals still work. Before, the overflowing total failed every batch that added to it, and since
    nothing was set aside when everything failed, every tenant's events waited behind them."""
    tenant.cost_mode = "catalog"
    tenant.save(update_fields=["cost_mode"])
    price_override_set(tenant=tenant, model="pricey", input_per_mtok=Decimal("9999999"), output_per_mtok=Decimal("1"))
    budget = admin_api.post("/v1/teams/budgets", {"team": "big", "monthly_budget_usd": 1000, "hard_stop": True},
                            format="json")
    assert budget.status_code == 201
    big = [dict(SDK_EVENT, model="pricey", prompt_tokens=10**9, completion_tokens=0, team="big", session_id="big-s",
                event_id=f"big-{i}", iteration_index=i) for i in range(1, 4)]
    assert telemetry_api.post("/v1/ingest", {"events": big}, format="json").status_code == 202
    bystander = api_client_for(make_key(other_tenant, ApiKey.Scope.TELEMETRY))
    assert bystander.post("/v1/ingest", dict(SDK_EVENT, event_id="bystander"), format="json").status_code == 202
    recording()

    one = Decimal("9999999000")  # 10^9 tokens at 9,999,999 USD per million
    assert not UsageEvent.objects.exclude(record_error="").exists()
    assert SessionState.objects.get(tenant=tenant, session_id="big-s").spent_usd == 3 * one
    assert_totals_match_events(tenant)
    assert UsageEvent.objects.get(tenant=other_tenant, event_id="bystander").cost_usd > 0

    check = telemetry_api.get("/v1/budget-check?session_id=big-s&limit_usd=5").json()
    assert check["exceeded"] is True and check["spent_usd"] == 3 * 9999999000.0
    team = admin_api.get("/v1/teams/budget-check?team=big").json()
    assert team["status"] == "exceeded" and team["current_spend"] == 3 * 9999999000.0
    assert team["pct_used"] == 2999999700.0  # 3 × 9,999,999,000 / 1,000 × 100
    session = admin_api.get("/v1/sessions/big-s").json()
    assert session["spent_usd"] == 3 * 9999999000.0
    deadline = time.monotonic() + 15  # a worker creates the alerts after recording
    while not (alerts := admin_api.get("/v1/alerts").json()["results"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alerts and alerts[0]["spend_usd"] > 10**10
