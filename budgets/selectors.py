"""Reads of budgets, month-to-date team spend, alerts and the audit log."""

import datetime
import functools
from decimal import ROUND_DOWN, Decimal

from django.db import connection
from django.db.models import DecimalField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from agentwatch_site.dates import tenant_month_days
from agentwatch_site.db import fetch_one
from agentwatch_site.money import MONEY_CONTEXT, quantize
from budgets.models import BudgetAlert, BudgetAuditLog, TeamBudget
from tenants.models import Team, Tenant
from tenants.selectors import same_team_name
from usage.models import MONEY_TOTAL, DailySpend, MonthlyTeamSpend, SessionState

SPEND_FIELD = DecimalField(**MONEY_TOTAL)
ZERO = Decimal("0")


class BudgetStatus:
    OK = "ok"
    ALERT = "alert"
    EXCEEDED = "exceeded"


def team_month_spend(*, tenant: Tenant, team: Team, moment: datetime.datetime | None = None) -> Decimal:
    """Month-to-date spend of `team` in the tenant's calendar month (from the daily roll-ups)."""
    first, next_first = tenant_month_days(tenant, moment)
    total = DailySpend.objects.for_tenant(tenant).filter(
        team_name=team.name, day__gte=first, day__lt=next_first
    ).aggregate(total=Sum("cost_usd"))["total"]
    return total or ZERO


def month_spend_subquery(tenant: Tenant, *, team_name_ref: str = "team__name",
                         moment: datetime.datetime | None = None) -> Coalesce:
    """An annotation: the month-to-date spend of the team named by `team_name_ref` in the outer query, so a
    list of budgets and their spend is ONE query (each subquery uses the (tenant, team_name, day) index)."""
    first, next_first = tenant_month_days(tenant, moment)
    spend = (
        DailySpend.objects.filter(
            tenant_id=tenant.pk, team_name=OuterRef(team_name_ref), day__gte=first, day__lt=next_first
        )
        .order_by()
        .values("tenant_id")
        .annotate(total=Sum("cost_usd"))
        .values("total")
    )
    return Coalesce(Subquery(spend, output_field=SPEND_FIELD), Value(ZERO), output_field=SPEND_FIELD)


def budgets_with_spend(*, tenant: Tenant, moment: datetime.datetime | None = None) -> QuerySet[TeamBudget]:
    """The tenant's budgets, each with `.current_spend` (one query in all, however many)."""
    return (TeamBudget.objects.for_tenant(tenant).select_related("team")
            .annotate(current_spend=month_spend_subquery(tenant, moment=moment)))


def budget_list_with_spend(*, tenant: Tenant, moment: datetime.datetime | None = None) -> list[TeamBudget]:
    """Every budget of the tenant, ordered by team name, each with `.current_spend` (one query in all)."""
    return list(budgets_with_spend(tenant=tenant, moment=moment).order_by("team__name"))


def budget_with_spend(*, tenant: Tenant, team: Team, moment: datetime.datetime | None = None) -> TeamBudget | None:
    """One team's budget with `.current_spend`, or None when it has no budget."""
    return budgets_with_spend(tenant=tenant, moment=moment).filter(team=team).first()


def pct_used(spend: Decimal, budget: Decimal) -> Decimal:
    """Rounded down to 0.01, so it shows a level (the alert threshold, 100) reached exactly when `status_for`
    does: 79.9999 % is 79.99, not an 80.00 next to status "ok"."""
    return quantize(MONEY_CONTEXT.divide(MONEY_CONTEXT.multiply(spend, 100), budget), Decimal("0.01"),
                    rounding=ROUND_DOWN)


def status_for(*, spend: Decimal, budget: Decimal, threshold_pct: int) -> str:
    """Exact comparisons (not on the rounded percentage): `exceeded` at ≥ 100 %, `alert` at ≥ the threshold."""
    if spend >= budget:
        return BudgetStatus.EXCEEDED
    if spend * 100 >= budget * threshold_pct:
        return BudgetStatus.ALERT
    return BudgetStatus.OK


def budget_status(budget: TeamBudget, spend: Decimal) -> dict:
    """The documented budget-check shape, with Decimals (rendered as JSON numbers at the edge)."""
    return {
        "team": budget.team.name,
        "monthly_budget_usd": budget.monthly_budget_usd,
        "current_spend": spend,
        "pct_used": pct_used(spend, budget.monthly_budget_usd),
        "hard_stop": budget.hard_stop,
        "status": status_for(spend=spend, budget=budget.monthly_budget_usd, threshold_pct=budget.alert_threshold_pct),
    }


def alert_list(*, tenant: Tenant, team_name: str | None = None) -> QuerySet[BudgetAlert]:
    alerts = BudgetAlert.objects.for_tenant(tenant).select_related("team")
    if team_name:
        alerts = alerts.filter(same_team_name("team__name", team_name))
    return alerts.order_by("-created_at", "-id")


def audit_log_list(*, tenant: Tenant, team_name: str | None = None) -> QuerySet[BudgetAuditLog]:
    entries = BudgetAuditLog.objects.for_tenant(tenant)
    if team_name:
        entries = entries.filter(same_team_name("team_name", team_name))
    return entries.order_by("-created_at", "-id")


def _decimal(value, places: str) -> Decimal | None:
    """A money value from a raw cursor: Decimal on PostgreSQL, float or int on SQLite."""
    if value is None or isinstance(value, Decimal):
        return value
    return quantize(Decimal(repr(value)), Decimal(places))


@functools.cache
def _check_sql() -> dict[str, str]:
    """The two budget-check reads, written once from the models' table names and prepared per connection
    (agentwatch_site/db.py). The ORM can build the same queries (values() across team__budget plus the spend
    subquery), but compiling them costs more than running them on this hot path. The month-to-date spend is one
    MonthlyTeamSpend row (kept by the recorder with the daily roll-ups), not a sum over the month's daily rows.
    Table names come from the models, never from input; every value is a parameter."""
    session, budget = SessionState._meta.db_table, TeamBudget._meta.db_table
    team, monthly = Team._meta.db_table, MonthlyTeamSpend._meta.db_table
    spend = (f"(SELECT m.cost_usd FROM {monthly} m "  # noqa: S608
             f"WHERE m.tenant_id = %s AND m.month = %s AND m.team_name = t.name)")
    # The session (unique tenant + session id), its team's budget (LEFT JOINs on unique keys) and that team's
    # month-to-date spend (the unique (tenant, month, team_name) index).
    session_read = (
        f"SELECT s.session_id, s.spent_usd, CASE WHEN s.expires_at > %s THEN 1 ELSE 0 END, "  # noqa: S608
        f"s.last_limit_usd, t.name, b.monthly_budget_usd, b.alert_threshold_pct, b.hard_stop, {spend} "
        f"FROM {session} s LEFT JOIN {budget} b ON b.team_id = s.team_id "
        f"LEFT JOIN {team} t ON t.id = b.team_id "
    )
    return {
        "session": session_read + "WHERE s.tenant_id = %s AND s.session_id = %s",
        # The same for an id aw-sdk may have sent with a literal %XX in it: the id as typed, else as decoded.
        "session_either": (session_read + "WHERE s.tenant_id = %s AND s.session_id IN (%s, %s) "
                           "ORDER BY s.session_id = %s DESC LIMIT 1"),
        # A team's budget by name, ignoring case as the team's unique (tenant, lower(name)) index does.
        "team": (
            f"SELECT t.name, b.monthly_budget_usd, b.alert_threshold_pct, b.hard_stop, {spend} "  # noqa: S608
            f"FROM {team} t JOIN {budget} b ON b.team_id = t.id "
            f"WHERE t.tenant_id = %s AND LOWER(t.name) = LOWER(%s)"
        ),
    }


def _month_params(tenant: Tenant, now: datetime.datetime) -> list:
    first, _next_first = tenant_month_days(tenant, now)
    return [tenant.pk, connection.ops.adapt_datefield_value(first)]


def _team_budget(name, budget, threshold, hard_stop, spend) -> dict:
    return {"team__name": name, "monthly_budget_usd": _decimal(budget, "0.01"), "alert_threshold_pct": int(threshold),
            "hard_stop": bool(hard_stop), "current_spend": _decimal(spend, "1e-10") or ZERO}


def budget_for_check(*, tenant: Tenant, team_name: str, now: datetime.datetime | None = None) -> dict | None:
    """A team's budget and month-to-date spend as plain values, in one indexed query; None when the team is
    unknown or has no budget."""
    row = fetch_one(_check_sql()["team"], [*_month_params(tenant, now or timezone.now()), tenant.pk,
                                           Team.clean_name(team_name)])
    return _team_budget(*row) if row is not None else None


def _session_with_team_budget(tenant: Tenant, session_id: str, now: datetime.datetime,
                              literal_session_id: str | None = None) -> tuple[dict | None, dict | None]:
    params = [connection.ops.adapt_datetimefield_value(now), *_month_params(tenant, now), tenant.pk]
    if literal_session_id is None:
        row = fetch_one(_check_sql()["session"], [*params, session_id])
    else:
        row = fetch_one(_check_sql()["session_either"],
                        [*params, literal_session_id, session_id, literal_session_id])
    if row is None:
        return None, None
    found_id, spent, active, last_limit, *team = row
    state = {"session_id": found_id, "spent_usd": _decimal(spent, "1e-10"), "active": bool(active),
             "last_limit_usd": _decimal(last_limit, "1e-10")}
    return state, (_team_budget(*team) if team[1] is not None else None)


def session_budget_check(*, tenant: Tenant, session_id: str, limit_usd: Decimal, team_name: str | None = None,
                         literal_session_id: str | None = None, now: datetime.datetime | None = None) -> dict:
    """The aw-sdk pre-call check (PRODUCT.md §4). Reads only: one query as aw-sdk calls it (the session's state
    joined to its team's budget, with the month spend as an indexed subquery); a second when `team_name` is
    given (that team's budget and month spend, which then replaces the session's team).

    The session limit comes first (reason `session_budget`); then a hard-stop team at or over its budget
    blocks (reason `team_budget`, with the team's spend and budget). An alert-only team over budget does not
    block; `team.status` says so. Money stays Decimal here.

    `literal_session_id`: the id as aw-sdk typed it when the URL's %XX escapes may be part of it (see
    budgets.api.sdk_literal_session_id); a session stored under it wins over one under the decoded id, in the
    same single read."""
    now = now or timezone.now()
    state, team = _session_with_team_budget(tenant, session_id, now, literal_session_id)
    if state is not None:
        session_id = state["session_id"]
    if team_name:
        # The named team replaces the session's own only when it has a budget: a typo in `team=` must not hide
        # the session's hard-stop team.
        team = budget_for_check(tenant=tenant, team_name=team_name, now=now) or team
    active = state is not None and state["active"]
    # Idle for 24 hours: the same id starts from zero (the recorder resets it on its next event).
    session_spent = state["spent_usd"] if active else ZERO

    exceeded = session_spent >= limit_usd
    reason = "session_budget" if exceeded else None
    spent_usd, shown_limit = session_spent, limit_usd
    remaining = max(ZERO, limit_usd - session_spent)
    team_out = None
    if team is not None:
        budget, team_spend = team["monthly_budget_usd"], team["current_spend"]
        status = status_for(spend=team_spend, budget=budget, threshold_pct=team["alert_threshold_pct"])
        blocks = team["hard_stop"] and status == BudgetStatus.EXCEEDED
        team_out = {
            "team": team["team__name"],
            "status": status,
            "pct_used": pct_used(team_spend, budget),
            "hard_stop": team["hard_stop"],
            "monthly_budget_usd": budget,
            "current_spend": team_spend,
            "blocks": blocks,
        }
        if team["hard_stop"]:
            remaining = min(remaining, max(ZERO, budget - team_spend))
        if blocks and not exceeded:
            exceeded, reason, spent_usd, shown_limit = True, "team_budget", team_spend, budget
    if exceeded:
        remaining = ZERO
    return {
        "session_id": session_id,
        "exceeded": exceeded,
        "spent_usd": spent_usd,
        "limit_usd": shown_limit,
        "remaining_usd": remaining,
        "reason": reason,
        "team": team_out,
        # Not part of the answer: what the session's state already holds, so the caller can skip re-caching it.
        "stored_last_limit_usd": state["last_limit_usd"] if state is not None else None,
    }
