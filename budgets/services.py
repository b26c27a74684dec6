"""Writes: team budgets (each change audited) and threshold alerts."""

import datetime
import logging
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from agentwatch_site.dates import next_month_start, tenant_day, tenant_month_days, tenant_zone
from agentwatch_site.errors import InvalidRequest, NotFound
from agentwatch_site.money import quantize
from budgets.models import BudgetAlert, BudgetAuditLog, TeamBudget
from budgets.selectors import month_spend_subquery, pct_used
from tenants.models import ApiKey, Tenant
from tenants.selectors import team_by_name
from tenants.services import team_get_or_create

logger = logging.getLogger(__name__)

CHANGEABLE_FIELDS = ("monthly_budget_usd", "alert_threshold_pct", "hard_stop")


def budget_not_found(team_name: str) -> NotFound:
    return NotFound(f"Team {team_name!r} has no budget set: create one with POST /v1/teams/budgets.",
                    code="budget_not_found")


def _locked(budget: TeamBudget) -> TeamBudget:
    """The budget's row, locked until the transaction ends; a concurrent request may have deleted it since it was
    read (a 404 then, not a 500)."""
    locked = (TeamBudget.objects.for_tenant(budget.tenant_id).select_for_update().select_related("team")
              .filter(pk=budget.pk).first())
    if locked is None:
        raise budget_not_found(budget.team.name)
    return locked


def _actor_label(actor_user, actor_key: ApiKey | None) -> str:
    if actor_user is not None:
        return f"user {actor_user.get_username()}"
    if actor_key is not None:
        return f"key {actor_key.prefix}…"
    return "system"


def _snapshot(budget: TeamBudget) -> dict:
    return {
        "monthly_budget_usd": str(budget.monthly_budget_usd),
        "alert_threshold_pct": budget.alert_threshold_pct,
        "hard_stop": budget.hard_stop,
    }


def _audit(*, budget: TeamBudget, action: str, before: dict | None, after: dict | None, actor_user,
           actor_key) -> BudgetAuditLog:
    return BudgetAuditLog.objects.create(
        tenant_id=budget.tenant_id, team_name=budget.team.name, action=action, actor_user=actor_user,
        actor_key=actor_key, actor_label=_actor_label(actor_user, actor_key), before=before, after=after,
    )


def _check_alerts_after_commit(budget: TeamBudget) -> None:
    """A budget created or lowered below this month's spend alerts now, not at the team's next recorded event."""
    tenant_id, team_id = budget.tenant_id, budget.team_id

    def enqueue():
        from budgets.tasks import budget_alerts_check as task

        try:
            task.delay(tenant_id, [team_id])
        except Exception as exc:
            # The next recorded event of the team checks again; a broker outage never fails a budget change.
            logger.warning("could not enqueue budget alert check team_id=%s error=%s", team_id, type(exc).__name__)

    transaction.on_commit(enqueue)


def _apply(budget: TeamBudget, changes: dict) -> bool:
    changed = False
    for name, value in changes.items():
        if getattr(budget, name) != value:
            setattr(budget, name, value)
            changed = True
    return changed


@transaction.atomic
def budget_upsert(*, tenant: Tenant, team_name: str, monthly_budget_usd: Decimal, alert_threshold_pct: int = 80,
                  hard_stop: bool = False, actor_user=None, actor_key: ApiKey | None = None) -> tuple[TeamBudget, bool]:
    """Create the team if needed and create or replace its budget. Returns (budget, created)."""
    team, _ = team_get_or_create(tenant=tenant, name=team_name)
    values = {"monthly_budget_usd": Decimal(monthly_budget_usd), "alert_threshold_pct": alert_threshold_pct,
              "hard_stop": hard_stop}
    budget = TeamBudget.objects.select_for_update().filter(tenant=tenant, team=team).first()
    if budget is None:
        try:
            with transaction.atomic():
                budget = TeamBudget.objects.create(tenant=tenant, team=team, **values)
        except IntegrityError:
            # A concurrent request created it first: replace what it wrote.
            budget = TeamBudget.objects.select_for_update().get(tenant=tenant, team=team)
        else:
            budget.team = team
            _audit(budget=budget, action=BudgetAuditLog.Action.CREATED, before=None, after=_snapshot(budget),
                   actor_user=actor_user, actor_key=actor_key)
            _check_alerts_after_commit(budget)
            logger.info("budget created tenant=%s team=%s", tenant.slug, team.name)
            return budget, True
    budget.team = team
    _update(budget, values, actor_user=actor_user, actor_key=actor_key)
    return budget, False


def _update(budget: TeamBudget, changes: dict, *, actor_user, actor_key) -> TeamBudget:
    before = _snapshot(budget)
    if _apply(budget, changes):
        budget.save(update_fields=[*changes, "updated_at"])
        _audit(budget=budget, action=BudgetAuditLog.Action.UPDATED, before=before, after=_snapshot(budget),
               actor_user=actor_user, actor_key=actor_key)
        _check_alerts_after_commit(budget)
        logger.info("budget updated tenant_id=%s team=%s", budget.tenant_id, budget.team.name)
    return budget


@transaction.atomic
def budget_update(*, budget: TeamBudget, actor_user=None, actor_key: ApiKey | None = None, **changes) -> TeamBudget:
    """Change some of monthly_budget_usd, alert_threshold_pct, hard_stop. A `team` equal to the budget's own
    team (ignoring case) is accepted and ignored; a budget cannot be moved to another team."""
    team_name = changes.pop("team", None)
    if team_name is not None and getattr(team_by_name(tenant=budget.tenant_id, name=team_name), "pk",
                                         None) != budget.team_id:
        raise InvalidRequest(
            "A budget cannot be moved to another team: delete it and create one for the other team.",
            code="validation_error", fields={"team": ["Does not match the team in the URL."]},
        )
    unknown = set(changes) - set(CHANGEABLE_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown budget fields: {', '.join(sorted(unknown))}.", code="validation_error")
    if "monthly_budget_usd" in changes:
        changes["monthly_budget_usd"] = Decimal(changes["monthly_budget_usd"])
    locked = _locked(budget)
    _update(locked, changes, actor_user=actor_user, actor_key=actor_key)
    for name in (*CHANGEABLE_FIELDS, "updated_at"):
        setattr(budget, name, getattr(locked, name))
    return budget


@transaction.atomic
def budget_delete(*, budget: TeamBudget, actor_user=None, actor_key: ApiKey | None = None) -> None:
    """Deletes the budget as it is when locked (the audit log's "before" is what was deleted, not what this request
    read earlier); one deleted a moment ago by another request is a 404."""
    locked = _locked(budget)
    before = _snapshot(locked)
    locked.delete()
    _audit(budget=locked, action=BudgetAuditLog.Action.DELETED, before=before, after=None,
           actor_user=actor_user, actor_key=actor_key)
    logger.info("budget deleted tenant_id=%s team=%s", locked.tenant_id, locked.team.name)


# --- Threshold alerts ---------------------------------------------------------------------------------

def _levels_reached(budget: TeamBudget, spend: Decimal) -> list[str]:
    levels = []
    # At a 100 % threshold the "exceeded" alert says it all; a second message would be noise.
    if budget.alert_threshold_pct < 100 and spend * 100 >= budget.monthly_budget_usd * budget.alert_threshold_pct:
        levels.append(BudgetAlert.Level.THRESHOLD)
    if spend >= budget.monthly_budget_usd:
        levels.append(BudgetAlert.Level.EXCEEDED)
    return levels


def budget_alerts_check(*, tenant: Tenant, team_ids: list[int], now=None) -> list[BudgetAlert]:
    """Create the alerts the teams' month-to-date spend now calls for: one per team per month per level.
    The unique constraint decides races (two workers, a redelivered task): only the insert that wins hands
    its alert to the webhook sender. Returns the alerts created by this call."""
    now = now or timezone.now()
    month, _ = tenant_month_days(tenant, now)
    budgets = list(
        # A budget set after the moment checked (an ended month's last one) did not apply then.
        TeamBudget.objects.for_tenant(tenant).filter(team_id__in=team_ids, created_at__lte=now).select_related("team")
        .annotate(current_spend=month_spend_subquery(tenant, moment=now))
    )
    if not budgets:
        return []
    existing = set(
        BudgetAlert.objects.for_tenant(tenant).filter(team_id__in=[b.team_id for b in budgets], month=month)
        .values_list("team_id", "level")
    )
    this_month = month == tenant_month_days(tenant)[0]
    created = []
    for budget in budgets:
        for level in _levels_reached(budget, budget.current_spend):
            if (budget.team_id, level) in existing:
                continue
            if (level == BudgetAlert.Level.THRESHOLD and (budget.team_id, BudgetAlert.Level.EXCEEDED) in existing
                    and budget.current_spend >= budget.monthly_budget_usd):
                # Already told the month is over budget, and it still is: a threshold lowered afterwards says
                # nothing new. (Raised above the spend, the budget's threshold is news again when crossed.)
                continue
            alert = _alert_create(tenant=tenant, budget=budget, month=month, level=level, this_month=this_month)
            if alert is not None:
                created.append(alert)
    return created


def month_check_moment(tenant: Tenant, month: datetime.date, *, now=None) -> datetime.datetime | None:
    """When to take `month`'s spend for its alerts: now for the current month, the last microsecond (in the
    tenant's time zone) of the month before. None for any other month: one that has not begun (an event stamped a
    few minutes ahead: the sweep checks that month once it has), or one that ended more than a month ago (a
    backfill of history raises no alerts)."""
    now = now or timezone.now()
    current, _ = tenant_month_days(tenant, now)
    if month == current:
        return now
    if month != (current - datetime.timedelta(days=1)).replace(day=1):
        return None
    return (datetime.datetime.combine(next_month_start(month), datetime.time(), tzinfo=tenant_zone(tenant))
            - datetime.timedelta(microseconds=1))


LATE_EVENTS_LOOKBACK = datetime.timedelta(days=2)


def budget_alerts_sweep(*, now=None) -> int:
    """Check every budgeted team of every tenant against its month-to-date spend: creates the alerts whose check
    after recording was lost (a broker outage between the recording commit and the dispatch), also, in a month's
    first two days, for the previous month. Idempotent like the check itself.
    Returns how many alerts it created."""
    team_ids: dict[int, list[int]] = {}
    for tenant_id, team_id in TeamBudget.objects.order_by("tenant_id", "team_id").values_list("tenant_id", "team_id"):
        team_ids.setdefault(tenant_id, []).append(team_id)
    now = now or timezone.now()
    created = 0
    for tenant in Tenant.objects.filter(pk__in=team_ids).order_by("pk"):
        created += len(budget_alerts_check(tenant=tenant, team_ids=team_ids[tenant.pk], now=now))
        # Events sent before the month turned count for the month before; the check after recording looks at
        # their month, and for the first days so does the sweep (in case that check was lost).
        first, _ = tenant_month_days(tenant, now)
        if tenant_day(tenant, now) - first < LATE_EVENTS_LOOKBACK:
            previous = (first - datetime.timedelta(days=1)).replace(day=1)
            created += len(budget_alerts_check(tenant=tenant, team_ids=team_ids[tenant.pk],
                                               now=month_check_moment(tenant, previous, now=now)))
    if created:
        logger.info("budget alert sweep created alerts count=%s", created)
    return created


def _alert_create(*, tenant: Tenant, budget: TeamBudget, month, level: str, this_month: bool = True,
                  ) -> BudgetAlert | None:
    try:
        with transaction.atomic():
            alert = BudgetAlert.objects.create(
                tenant=tenant, team=budget.team, month=month, level=level,
                threshold_pct=100 if level == BudgetAlert.Level.EXCEEDED else budget.alert_threshold_pct,
                spend_usd=budget.current_spend, budget_usd=budget.monthly_budget_usd,
            )
            _notify(tenant=tenant, budget=budget, alert=alert, this_month=this_month)
    except IntegrityError:
        # Another worker created this alert first; it sends the webhook.
        return None
    logger.info("budget alert tenant=%s team=%s level=%s month=%s", tenant.slug, budget.team.name, level, month)
    return alert


def alert_text(alert: BudgetAlert, *, team_name: str, hard_stop: bool, this_month: bool = True) -> str:
    pct = pct_used(alert.spend_usd, alert.budget_usd)
    spent = f"${quantize(alert.spend_usd, Decimal('0.01')):,}"
    budget = f"${alert.budget_usd:,}"
    month = alert.month.strftime("%B %Y")
    if alert.level == BudgetAlert.Level.EXCEEDED:
        if not this_month:
            consequence = "Late events put the month over; the team's budget has since started again."
        elif hard_stop:
            consequence = "Hard stop is on: aw-sdk calls of this team are now blocked."
        else:
            consequence = "Hard stop is off: calls continue."
        return (f"Team {team_name} has exceeded its {budget} monthly budget for {month}: {spent} spent "
                f"({pct}%). {consequence}")
    return (f"Team {team_name} has used {pct}% of its {budget} monthly budget for {month} ({spent} spent; "
            f"alert threshold {alert.threshold_pct}%).")


def _notify(*, tenant: Tenant, budget: TeamBudget, alert: BudgetAlert, this_month: bool = True) -> None:
    """Hand the alert to the webhook sender, in the alert's transaction (the delivery rows commit with it).
    A failing sender never loses the alert: it is logged and the alert stays listed."""
    try:
        from tenants.webhooks import webhook_event_emit
    except ImportError:
        logger.warning("webhook sender not installed; alert stored only alert_id=%s", alert.pk)
        return
    event_type = "budget.exceeded" if alert.level == BudgetAlert.Level.EXCEEDED else "budget.threshold"
    data = {
        "alert_id": alert.pk,
        "team": budget.team.name,
        "month": alert.month.isoformat(),
        "level": alert.level,
        "threshold_pct": alert.threshold_pct,
        "spend_usd": float(alert.spend_usd),
        "monthly_budget_usd": float(alert.budget_usd),
        "pct_used": float(pct_used(alert.spend_usd, alert.budget_usd)),
        "hard_stop": budget.hard_stop,
    }
    try:
        with transaction.atomic():
            webhook_event_emit(tenant=tenant, event_type=event_type,
                               text=alert_text(alert, team_name=budget.team.name, hard_stop=budget.hard_stop,
                                               this_month=this_month),
                               data=data, event_id=f"budget-alert-{alert.pk}")
    except Exception:
        logger.exception("could not hand budget alert to the webhook sender alert_id=%s", alert.pk)
