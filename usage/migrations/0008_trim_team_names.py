"""Team names are now stored and looked up without surrounding whitespace (tenants.models.Team.clean_name).
Before, an event naming `"ops "` created a team of its own, whose spend never reached `ops`'s budget. This renames
such a team to its trimmed name, or merges it into the team that already has that name: its events, sessions,
anomalies, alerts and roll-ups move over (roll-up rows of the same key are added together), and its budget moves
only when the other team has none (the existing team's budget wins; the merge is printed). Only tenants with such
teams are touched, and only their rows."""

from django.db import migrations
from django.db.models import F
from django.db.models.functions import Lower

ROLLUPS = (  # model name, key fields besides tenant and team_name, summed fields
    ("DailySpend", ("day", "project", "model"), ("events", "prompt_tokens", "completion_tokens", "cost_usd")),
    ("HourlySpend", ("hour",), ("events", "cost_usd")),
    ("MonthlyTeamSpend", ("month",), ("events", "cost_usd")),
)


def _move_rollups(apps, tenant_id, old_name, new_name):
    for model_name, keys, sums in ROLLUPS:
        model = apps.get_model("usage", model_name)
        for row in model.objects.filter(tenant_id=tenant_id, team_name=old_name):
            key = {field: getattr(row, field) for field in keys}
            same = model.objects.filter(tenant_id=tenant_id, team_name=new_name, **key)
            if same.exists():
                same.update(**{field: F(field) + getattr(row, field) for field in sums})
                row.delete()
            else:
                row.team_name = new_name
                row.save(update_fields=["team_name"])


def trim_team_names(apps, schema_editor):
    Team = apps.get_model("tenants", "Team")
    TeamBudget = apps.get_model("budgets", "TeamBudget")
    BudgetAlert = apps.get_model("budgets", "BudgetAlert")
    UsageEvent = apps.get_model("usage", "UsageEvent")
    SessionState = apps.get_model("usage", "SessionState")
    Anomaly = apps.get_model("usage", "Anomaly")
    spaced = [team for team in Team.objects.order_by("id") if team.name != team.name.strip() and team.name.strip()]
    for team in spaced:
        old_name, new_name = team.name, team.name.strip()
        target = (Team.objects.annotate(lowered=Lower("name"))
                  .filter(tenant_id=team.tenant_id, lowered=new_name.lower()).exclude(pk=team.pk).first())
        if target is None:
            team.name = new_name
            team.save(update_fields=["name"])
            target = team
        else:
            for model in (UsageEvent, SessionState, Anomaly):
                model.objects.filter(team_id=team.pk).update(team_id=target.pk)
            for alert in BudgetAlert.objects.filter(team_id=team.pk):
                if BudgetAlert.objects.filter(team_id=target.pk, month=alert.month, level=alert.level).exists():
                    alert.delete()  # the team it merges into was alerted for that month and level already
                else:
                    alert.team_id = target.pk
                    alert.save(update_fields=["team"])
            budget = TeamBudget.objects.filter(team_id=team.pk).first()
            if budget is not None:
                if TeamBudget.objects.filter(team_id=target.pk).exists():
                    print(f"\n  team {old_name!r} (tenant {team.tenant_id}) merged into {target.name!r}: its budget "
                          f"of {budget.monthly_budget_usd} USD is dropped, {target.name!r} keeps its own")
                    budget.delete()
                else:
                    budget.team_id = target.pk
                    budget.save(update_fields=["team"])
        UsageEvent.objects.filter(tenant_id=team.tenant_id, team_name=old_name).update(team_name=target.name)
        _move_rollups(apps, team.tenant_id, old_name, target.name)
        if target.pk != team.pk:
            team.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0007_session_tenant_newest"),
        ("budgets", "0001_initial"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(trim_team_names, migrations.RunPython.noop, elidable=True),
    ]
