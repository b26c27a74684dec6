import time
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from budgets.models import TeamBudget
from tenants.models import ApiKey, Membership, Team, Tenant
from tests.conftest import ensure_price_catalog
from usage.models import Anomaly, DailySpend, SessionState, UsageEvent


def seed_demo() -> list[str]:
    out = StringIO()
    call_command("seed_demo", "--force", stdout=out, stderr=StringIO())  # tests run with DEBUG off
    return out.getvalue().strip().splitlines()


@pytest.mark.django_db
def test_seed_demo_refuses_a_database_that_looks_like_production(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="published password"):
        call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    assert not Tenant.objects.filter(slug="demo").exists()
    assert not get_user_model().objects.filter(username="demo").exists()


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.mark.django_db
def test_seed_demo_creates_a_recorded_month_of_traffic_a_login_and_working_keys():
    ensure_price_catalog()
    started = time.monotonic()
    lines = seed_demo()
    assert time.monotonic() - started < 30

    tenant = Tenant.objects.get(slug="demo")
    assert tenant.name == "Demo Org"
    user = get_user_model().objects.get(username="demo")
    assert user.check_password("agentwatch-demo")
    assert Membership.objects.get(tenant=tenant, user=user).role == Membership.Role.OWNER
    assert any("demo" in line and "agentwatch-demo" in line for line in lines)

    teams = {team.name for team in Team.objects.filter(tenant=tenant)}
    assert teams == {"payments-eng", "research", "platform"}
    assert TeamBudget.objects.filter(tenant=tenant).count() == 3

    events = UsageEvent.objects.filter(tenant=tenant)
    assert events.count() > 1000
    assert not events.filter(recorded_at__isnull=True).exists()
    assert events.values("model").distinct().count() >= 6
    assert events.values("project").distinct().count() >= 6
    assert events.exclude(identified_risks=[]).exists()
    assert events.filter(team__isnull=True).exists()  # some unallocated spend
    days = set(DailySpend.objects.filter(tenant=tenant).values_list("day", flat=True))
    assert len(days) >= 28
    roll_up_total = sum((d.cost_usd for d in DailySpend.objects.filter(tenant=tenant)), Decimal("0"))
    assert roll_up_total == sum((e.cost_usd for e in events), Decimal("0")) > 0
    lengths = set(SessionState.objects.filter(tenant=tenant).values_list("iterations", flat=True))
    assert min(lengths) == 1 and max(lengths) >= 12
    loop = Anomaly.objects.get(tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP)
    assert loop.session_id == "eval-loop-7f3a"
    assert loop.details["ratios"] == [1.5, 1.5, 1.5]

    admin_raw, telemetry_raw = lines[-2], lines[-1]
    assert bearer(admin_raw).get("/v1/keys").status_code == 200
    assert bearer(telemetry_raw).post("/v1/ingest", {"model": "gpt-4o"}, format="json").status_code == 202


@pytest.mark.django_db
def test_seed_demo_run_twice_keeps_the_data_and_replaces_the_demo_keys():
    ensure_price_catalog()
    first = seed_demo()
    events = UsageEvent.objects.count()
    spend = list(DailySpend.objects.order_by("pk").values_list("events", "cost_usd"))
    user = get_user_model().objects.get(username="demo")
    user.set_password("changed-by-someone")
    user.save()

    second = seed_demo()
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert UsageEvent.objects.count() == events
    assert list(DailySpend.objects.order_by("pk").values_list("events", "cost_usd")) == spend
    assert TeamBudget.objects.count() == 3
    assert get_user_model().objects.get(username="demo").check_password("agentwatch-demo")

    assert first[-2:] != second[-2:]
    assert bearer(first[-2]).get("/v1/keys").status_code == 401
    assert bearer(second[-2]).get("/v1/keys").status_code == 200
    live = ApiKey.objects.filter(tenant__slug="demo", revoked_at=None)
    assert sorted(live.values_list("name", flat=True)) == ["demo admin", "demo telemetry"]
