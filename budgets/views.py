"""Pages: the Overview (it draws on usage and budgets, so it lives in the top app) and Budgets."""

import contextlib
import datetime
import functools
from decimal import Decimal
from urllib.parse import urlencode

from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from agentwatch_site.dates import tenant_day, tenant_month_days, tenant_zone
from agentwatch_site.errors import NotFound
from agentwatch_site.pagination import keyset_page_or_first
from budgets.models import TeamBudget
from budgets.selectors import alert_list, audit_log_list, budget_list_with_spend, budget_status
from budgets.serializers import BudgetInputSerializer
from budgets.services import budget_delete, budget_update, budget_upsert
from tenants.selectors import get_for_tenant_or_404, rejected_telemetry_recent
from tenants.views import member_required, render_page
from usage.charts import daily_team_chart, render_svg
from usage.selectors import session_top_spenders, spend_summary
from usage.services.anomalies import anomaly_list

CHART_DAYS = 30
FORECAST_WINDOW_DAYS = 7


def _with_status(budgets: list[TeamBudget]) -> list[TeamBudget]:
    for budget in budgets:
        status = budget_status(budget, budget.current_spend)
        budget.status = status["status"]
        budget.pct_used = status["pct_used"]
        budget.bar_pct = min(Decimal("100"), status["pct_used"])
        budget.remaining = max(Decimal("0"), budget.monthly_budget_usd - budget.current_spend)
    return budgets


def _forecast(*, month_to_date: Decimal, daily: dict[datetime.date, Decimal], today: datetime.date,
              month_first: datetime.date, next_month_first: datetime.date) -> Decimal:
    """Month-to-date plus the average of the last FORECAST_WINDOW_DAYS days (today included, fewer early in the
    month) for each day left: recent pace matters more than the month's start."""
    window = [today - datetime.timedelta(days=n) for n in range(FORECAST_WINDOW_DAYS)]
    window = [day for day in window if day >= month_first] or [today]
    rate = sum((daily.get(day, Decimal("0")) for day in window), Decimal("0")) / len(window)
    days_left = (next_month_first - today).days - 1
    return month_to_date + rate * days_left


@member_required
@require_GET
def overview(request):
    tenant = request.tenant
    now = timezone.now()
    today = tenant_day(tenant, now)
    month_first, next_month_first = tenant_month_days(tenant, now)
    chart_first = today - datetime.timedelta(days=CHART_DAYS - 1)
    history_first = min(chart_first, month_first)
    by_day_team = spend_summary(tenant=tenant, group_by=["day", "team"], day_from=history_first, day_to=today)

    daily: dict[datetime.date, Decimal] = {}
    for row in by_day_team:
        daily[row["day"]] = daily.get(row["day"], Decimal("0")) + row["cost_usd"]
    month_to_date = sum((v for day, v in daily.items() if day >= month_first), Decimal("0"))
    month_events = sum(row["events"] for row in by_day_team if row["day"] >= month_first)
    forecast = _forecast(month_to_date=month_to_date, daily=daily, today=today, month_first=month_first,
                         next_month_first=next_month_first)
    models = sorted(spend_summary(tenant=tenant, group_by=["model"], day_from=month_first, day_to=today),
                    key=lambda row: -row["cost_usd"])[:5]
    budgets = _with_status(budget_list_with_spend(tenant=tenant, moment=now))
    total_budget = sum((b.monthly_budget_usd for b in budgets), Decimal("0"))
    rejected = rejected_telemetry_recent(tenant=tenant)
    # The tenant's midnight, as for the month-to-date total (not UTC's).
    month_start_dt = datetime.datetime.combine(month_first, datetime.time.min, tzinfo=tenant_zone(tenant))
    context = {
        "active_nav": "overview",
        "month_to_date": month_to_date,
        "month_events": month_events,
        "forecast": forecast,
        "total_budget": total_budget,
        "forecast_over_budget": bool(total_budget) and forecast > total_budget,
        "month_first": month_first,
        "today": today,
        "budgets": budgets,
        "exceeded_count": sum(1 for b in budgets if b.status == "exceeded"),
        "chart": daily_team_chart([r for r in by_day_team if r["day"] >= chart_first], first_day=chart_first,
                                  days=CHART_DAYS),
        "models": models,
        "models_max": max((row["cost_usd"] for row in models), default=Decimal("0")),
        "top_sessions": session_top_spenders(tenant=tenant, since=month_start_dt),
        "alerts": list(alert_list(tenant=tenant)[:5]),
        "anomalies": list(anomaly_list(tenant=tenant)[:5]),
        "rejected_rate_limited": rejected.get("rate_limited", 0),
        "rejected_invalid": rejected.get("invalid", 0),
    }
    context["chart_svg"] = render_svg(context["chart"], chart_id="daily",
                                      title="Daily spend by team over the last 30 days")
    for row in context["models"]:
        row["bar_pct"] = (row["cost_usd"] / context["models_max"] * 100) if context["models_max"] else 0
    return render_page(request, "budgets/overview.html", context)


# --- Budgets page ----------------------------------------------------------------------------------------

def _form_data(post, *, team: str | None = None) -> dict:
    """The HTML form as the API's JSON: an empty threshold means the default; the checkbox is a boolean."""
    data = {
        "team": team if team is not None else post.get("team", "").strip(),
        "monthly_budget_usd": post.get("monthly_budget_usd", "").strip(),
        "hard_stop": post.get("hard_stop") in ("on", "true", "1"),
    }
    threshold = post.get("alert_threshold_pct", "").strip()
    if threshold:
        data["alert_threshold_pct"] = threshold
    return data


def _errors(exc_or_serializer) -> dict[str, list[str]]:
    detail = exc_or_serializer.errors
    return {name: [str(m) for m in (messages if isinstance(messages, list) else [messages])]
            for name, messages in detail.items()}


AUDIT_PAGE_SIZE = 50


def _audit_page(request) -> dict:
    """The audit log, newest first, one page at a time (`?audit_cursor=`; a cursor that does not parse starts
    again from the newest)."""
    page = keyset_page_or_first(audit_log_list(tenant=request.tenant), order=("-id",),
                                cursor=request.GET.get("audit_cursor") or None, limit=AUDIT_PAGE_SIZE)
    return {"audit": page.items, "audit_next_query": urlencode({"audit_cursor": page.next_cursor})
            if page.next_cursor else None}


def _budgets_context(request, **extra) -> dict:
    context = {
        "active_nav": "budgets",
        "budgets": _with_status(budget_list_with_spend(tenant=request.tenant)),
        "alerts": list(alert_list(tenant=request.tenant)[:50]),
        **_audit_page(request),
        "form_values": {"alert_threshold_pct": 80},
        "form_errors": {},
    }
    context.update(extra)
    return context


@member_required
def budgets(request):
    """GET: the page. POST: create or replace a team's budget, validated exactly as POST /v1/teams/budgets."""
    if request.method == "POST":
        data = _form_data(request.POST)
        serializer = BudgetInputSerializer(data=data)
        if not serializer.is_valid():
            context = _budgets_context(request, form_values={**data, **request.POST.dict()},
                                       form_errors=_errors(serializer))
            if request.htmx:
                response = render(request, "budgets/_budget_form.html", context, status=400)
                return reswap(retarget(response, "#budget-form"), "outerHTML")
            return render(request, "budgets/budgets.html", context, status=400)
        values = serializer.validated_data
        budget_upsert(tenant=request.tenant, team_name=values["team"],
                      monthly_budget_usd=values["monthly_budget_usd"],
                      alert_threshold_pct=values["alert_threshold_pct"], hard_stop=values["hard_stop"],
                      actor_user=request.user)
        if not request.htmx:
            return redirect("budgets")
        return render(request, "budgets/_budgets_panel.html", _budgets_context(request))
    if request.htmx and request.htmx.target == "audit-more":
        return render(request, "budgets/_audit_rows_more.html", _audit_page(request))
    return render_page(request, "budgets/budgets.html", _budgets_context(request),
                       fragment="budgets/_budgets_panel.html")


def _row_budget(request, budget_id: int) -> TeamBudget:
    """The tenant's budget `budget_id` with its month spend; another tenant's budget is a 404."""
    rows = [b for b in budget_list_with_spend(tenant=request.tenant) if b.pk == budget_id]
    if not rows:
        raise Http404("No such budget.")
    return _with_status(rows)[0]


GONE_BANNER = "That budget no longer exists: someone deleted it meanwhile. The list is up to date."


def _refreshed_if_gone(view):
    """A row acted on after someone else deleted its budget: the 404 brings htmx the list as it is now (the stale
    row or its edit form disappear), and the banner says why (AW-Banner, static/js/app.js); a bare 404 left the row
    on screen. Another tenant's budget id gets the same answer: nothing tells them apart."""
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except Http404:
            if not request.htmx:
                raise
            response = render(request, "budgets/_budgets_panel.html", _budgets_context(request), status=404)
            response["AW-Banner"] = GONE_BANNER
            return reswap(retarget(response, "#budgets-panel"), "innerHTML")
    return wrapper


@member_required
@require_GET
@_refreshed_if_gone
def budget_row(request, budget_id: int):
    """One table row: `?edit=1` gives the inline edit form (admins), otherwise the read-only row."""
    budget = _row_budget(request, budget_id)
    editing = request.GET.get("edit") == "1" and request.membership.can_write
    template = "budgets/_budget_edit_row.html" if editing else "budgets/_budget_row.html"
    if not request.htmx:
        return redirect("budgets")
    # Keyboard focus follows the row: into the form on Edit, back to Edit on Cancel.
    return render(request, template, {"b": budget, "form_values": {}, "form_errors": {}, "focus": "edit",
                                      "focus_budget": budget.pk})


@member_required
@require_POST
@_refreshed_if_gone
def budget_edit(request, budget_id: int):
    budget = _row_budget(request, budget_id)
    data = _form_data(request.POST, team=budget.team.name)
    # Editing, a cleared threshold is a mistake to point out, not a request for the default (80 %); a form
    # without the field keeps the current one.
    threshold_missing = "alert_threshold_pct" in request.POST and "alert_threshold_pct" not in data
    data.setdefault("alert_threshold_pct", budget.alert_threshold_pct)
    serializer = BudgetInputSerializer(data=data)
    if not serializer.is_valid() or threshold_missing:
        errors = _errors(serializer)
        if threshold_missing:
            errors["alert_threshold_pct"] = ["Required: the percent of the budget (1–100) at which to alert."]
        context = {"b": budget, "form_values": request.POST.dict(), "form_errors": errors}
        if request.htmx:
            response = render(request, "budgets/_budget_edit_row.html", context, status=400)
            return reswap(retarget(response, f"#budget-{budget.pk}"), "outerHTML")
        return render(request, "budgets/budgets.html", _budgets_context(request, edit_errors=context), status=400)
    values = dict(serializer.validated_data)
    values.pop("team")
    _update_or_404(budget, actor_user=request.user, **values)
    if not request.htmx:
        return redirect("budgets")
    return render(request, "budgets/_budgets_panel.html",
                  _budgets_context(request, focus="edit", focus_budget=budget.pk))


def _update_or_404(budget: TeamBudget, **changes) -> None:
    """As the row was shown: one deleted meanwhile by someone else is the same 404 as a budget never there."""
    try:
        budget_update(budget=budget, **changes)
    except NotFound:
        raise Http404("No such budget.") from None


@member_required
@require_POST
@_refreshed_if_gone
def budget_hard_stop(request, budget_id: int):
    budget = _row_budget(request, budget_id)
    _update_or_404(budget, actor_user=request.user, hard_stop=not budget.hard_stop)
    if not request.htmx:
        return redirect("budgets")
    return render(request, "budgets/_budgets_panel.html",
                  _budgets_context(request, focus="toggle", focus_budget=budget.pk))


@member_required
@require_POST
@_refreshed_if_gone
def budget_delete_view(request, budget_id: int):
    budget = get_for_tenant_or_404(TeamBudget, tenant=request.tenant, pk=budget_id)
    with contextlib.suppress(NotFound):  # deleted a moment ago by someone else: gone, as asked
        budget_delete(budget=budget, actor_user=request.user)
    if not request.htmx:
        return redirect("budgets")
    return render(request, "budgets/_budgets_panel.html", _budgets_context(request))
