"""An event whose recording fails every time (a poison event) is set aside with its error instead of holding up
every event behind it; it is never counted, and `manage.py quarantined_events --retry` brings it back once the
cause is fixed. The poison here is real: a tenant price so high that one event's cost overflows the money column
(numeric(20,10)), which fails the whole recording transaction."""

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tests.usage.test_recording import SDK_EVENT, assert_totals_match_events, ingest
from usage.models import DailySpend, SessionState, UsageEvent
from usage.services.pricing import price_override_set
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
    assert "overflow" in set_aside.record_error.lower() or "InvalidOperation" in set_aside.record_error
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


def test_when_every_pending_event_fails_none_is_set_aside(tenant, priced_to_overflow):
    """Failing alone is not enough when nothing else records: that looks like a fault of the code or the
    database, not of the events, so they stay pending (and the ingest-lag alarm fires) rather than hidden."""
    ingest(tenant, [poison(event_id="p1"), poison(event_id="p2")])
    assert record_until_done() == 0
    assert UsageEvent.objects.filter(tenant=tenant, recorded_at__isnull=True).count() == 2
    assert not UsageEvent.objects.exclude(record_error="").exists()


def test_at_most_ten_events_are_set_aside_in_one_pass(tenant, priced_to_overflow):
    ingest(tenant, [dict(SDK_EVENT, event_id="good")] + [poison(event_id=f"p{i}") for i in range(12)])
    assert record_until_done() == 1
    assert UsageEvent.objects.exclude(record_error="").count() == 10
    assert UsageEvent.objects.filter(recorded_at__isnull=True).count() == 2


def test_the_command_says_when_there_is_nothing_and_refuses_an_unknown_tenant(tenant):
    out = io.StringIO()
    call_command("quarantined_events", stdout=out)
    assert "No quarantined events." in out.getvalue()
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        call_command("quarantined_events", tenant="nope")
