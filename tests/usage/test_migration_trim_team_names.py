"""Migration 0008: teams created before names were trimmed (`"ops "`) are renamed, or merged into the team that has
the trimmed name, with their events, sessions, alerts, budget and roll-ups, so their spend counts."""

import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("usage", "0007_session_tenant_newest")]
AFTER = [("usage", "0008_trim_team_names")]


def migrate(targets):
    """Migrate the usage app to `targets`; the models of every app as they are then."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([*targets, ("budgets", "0001_initial")]).apps


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("migrations_restored")
def test_spaced_teams_are_renamed_or_merged_with_their_spend():
    apps = migrate(BEFORE)
    Tenant, Team = apps.get_model("tenants", "Tenant"), apps.get_model("tenants", "Team")
    TeamBudget, BudgetAlert = apps.get_model("budgets", "TeamBudget"), apps.get_model("budgets", "BudgetAlert")
    UsageEvent, SessionState = apps.get_model("usage", "UsageEvent"), apps.get_model("usage", "SessionState")
    DailySpend, MonthlyTeamSpend = apps.get_model("usage", "DailySpend"), apps.get_model("usage", "MonthlyTeamSpend")
    now = timezone.now()
    day, month = datetime.date(2026, 11, 3), datetime.date(2026, 11, 1)
    tenant = Tenant.objects.create(name="Acme", slug="acme")
    ops = Team.objects.create(tenant=tenant, name="ops")
    ops_spaced = Team.objects.create(tenant=tenant, name="ops ")  # to merge into ops
    search_spaced = Team.objects.create(tenant=tenant, name=" search")  # alone: renamed
    TeamBudget.objects.create(tenant=tenant, team=ops, monthly_budget_usd=Decimal("10"), hard_stop=True)
    TeamBudget.objects.create(tenant=tenant, team=ops_spaced, monthly_budget_usd=Decimal("99"))
    BudgetAlert.objects.create(tenant=tenant, team=ops_spaced, month=month, level="threshold", threshold_pct=80,
                               spend_usd=Decimal("9"), budget_usd=Decimal("10"))
    for team, name in ((ops, "ops"), (ops_spaced, "ops "), (search_spaced, " search")):
        UsageEvent.objects.create(tenant=tenant, team=team, team_name=name, event_id=f"e-{name}", model="gpt-4o",
                                  prompt_tokens=1000, timestamp=now, received_at=now, recorded_at=now,
                                  cost_usd=Decimal("3"))
        DailySpend.objects.create(tenant=tenant, day=day, team_name=name, model="gpt-4o", events=1,
                                  prompt_tokens=1000, cost_usd=Decimal("3"))
        MonthlyTeamSpend.objects.create(tenant=tenant, month=month, team_name=name, events=1, cost_usd=Decimal("3"))
    SessionState.objects.create(tenant=tenant, session_id="s", team=ops_spaced, first_seen=now, last_seen=now,
                                expires_at=now + datetime.timedelta(hours=24))
    untouched = Tenant.objects.create(name="Other", slug="other")
    Team.objects.create(tenant=untouched, name="ops ")  # another tenant's: renamed in its own tenant only

    apps = migrate(AFTER)
    Team = apps.get_model("tenants", "Team")
    TeamBudget, BudgetAlert = apps.get_model("budgets", "TeamBudget"), apps.get_model("budgets", "BudgetAlert")
    UsageEvent, SessionState = apps.get_model("usage", "UsageEvent"), apps.get_model("usage", "SessionState")
    DailySpend, MonthlyTeamSpend = apps.get_model("usage", "DailySpend"), apps.get_model("usage", "MonthlyTeamSpend")
    assert sorted(Team.objects.filter(tenant_id=tenant.pk).values_list("name", flat=True)) == ["ops", "search"]
    assert list(Team.objects.filter(tenant_id=untouched.pk).values_list("name", flat=True)) == ["ops"]
    budget = TeamBudget.objects.get(team_id=ops.pk)  # ops keeps its own budget
    assert (budget.monthly_budget_usd, budget.hard_stop, TeamBudget.objects.count()) == (Decimal("10"), True, 1)
    assert BudgetAlert.objects.get().team_id == ops.pk
    assert SessionState.objects.get().team_id == ops.pk
    assert UsageEvent.objects.filter(team_id=ops.pk).count() == 2
    assert set(UsageEvent.objects.values_list("team_name", flat=True)) == {"ops", "search"}
    monthly = {row.team_name: (row.events, row.cost_usd) for row in MonthlyTeamSpend.objects.all()}
    assert monthly == {"ops": (2, Decimal("6")), "search": (1, Decimal("3"))}  # ops's spend now counts in full
    daily = {row.team_name: (row.events, row.prompt_tokens, row.cost_usd) for row in DailySpend.objects.all()}
    assert daily == {"ops": (2, 2000, Decimal("6")), "search": (1, 1000, Decimal("3"))}
