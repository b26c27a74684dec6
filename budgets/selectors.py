"""Reads of budgets, month-to-date team spend, alerts and the audit log."""

import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import DecimalField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from agentwatch_site.dates import tenant_month_days
from budgets.models import BudgetAlert, BudgetAuditLog, TeamBudget
from tenants.models import Team, Tenant
from usage.models import DailySpend, SessionState

SPEND_FIELD = DecimalField(max_digits=20, decimal_places=10)
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


def budget_list_with_spend(*, tenant: Tenant, moment: datetime.datetime | None = None) -> list[TeamBudget]:
    """Every budget of the tenant, ordered by team name, each with `.current_spend` (one query in all)."""
    return list(
        TeamBudget.objects.for_tenant(tenant)
        .select_related("team")
        .annotate(current_spend=month_spend_subquery(tenant, moment=moment))
        .order_by("team__name")
    )


def budget_with_spend(*, tenant: Tenant, team: Team, moment: datetime.datetime | None = None) -> TeamBudget | None:
    """One team's budget with `.current_spend`, or None when it has no budget."""
    return (
        TeamBudget.objects.for_tenant(tenant)
        .select_related("team")
        .annotate(current_spend=month_spend_subquery(tenant, moment=moment))
        .filter(team=team)
        .first()
    )


def budget_for_check(*, tenant: Tenant, team_id: int | None = None, team_name: str | None = None) -> dict | None:
    """The budget-check hot path: the team's budget and month-to-date spend in one indexed query, as plain
    values (no model instances). By team id (from the session's state) or by name (ignoring case)."""
    lookup = {"team_id": team_id} if team_id is not None else {"team__name__iexact": team_name}
    budgets = TeamBudget.objects.filter(tenant_id=tenant.pk, **lookup)
    return (
        budgets.annotate(current_spend=month_spend_subquery(tenant))
        .values("team__name", "monthly_budget_usd", "alert_threshold_pct", "hard_stop", "current_spend")
        .first()
    )


def pct_used(spend: Decimal, budget: Decimal) -> Decimal:
    return (spend * 100 / budget).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


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
        alerts = alerts.filter(team__name__iexact=team_name)
    return alerts.order_by("-created_at", "-id")


def audit_log_list(*, tenant: Tenant) -> QuerySet[BudgetAuditLog]:
    return BudgetAuditLog.objects.for_tenant(tenant).order_by("-created_at", "-id")


def session_budget_check(*, tenant: Tenant, session_id: str, limit_usd: Decimal, team_name: str | None = None,
                         now: datetime.datetime | None = None) -> dict:
    """The aw-sdk pre-call check (PRODUCT.md §4). Reads only: the session's state (one indexed read) and, when
    a team is known (from `team_name` or the session), its budget and month spend (one indexed read).

    The session limit comes first (reason `session_budget`); then a hard-stop team at or over its budget
    blocks (reason `team_budget`, with the team's spend and budget). An alert-only team over budget does not
    block; `team.status` says so. Money stays Decimal here."""
    now = now or timezone.now()
    state = (
        SessionState.objects.filter(tenant_id=tenant.pk, session_id=session_id)
        .values_list("spent_usd", "expires_at", "team_id")
        .first()
    )
    session_spent, team_id = ZERO, None
    if state is not None:
        spent, expires_at, team_id = state
        # Idle for 24 hours: the same id starts from zero (the recorder resets it on its next event).
        if expires_at > now:
            session_spent = spent
    team = None
    if team_name:
        team = budget_for_check(tenant=tenant, team_name=team_name)
    elif team_id is not None:
        team = budget_for_check(tenant=tenant, team_id=team_id)

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
    }
