import datetime
import logging

from celery import shared_task

from budgets.services import budget_alerts_check as alerts_check
from budgets.services import budget_alerts_sweep as alerts_sweep
from budgets.services import month_check_moment
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50, ignore_result=True)
def budget_alerts_check(tenant_id: int, team_ids: list[int], month: str | None = None) -> int:
    """Enqueued by usage.tasks after each recorded batch, once per month the batch's events fall in (ISO date of
    its first day; None: the current month). Idempotent: the unique constraint on (tenant, team, month, level)
    makes a redelivered or concurrent run create nothing twice."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return 0
    now = None
    if month is not None:
        now = month_check_moment(tenant, datetime.date.fromisoformat(month))
        if now is None:
            return 0
    return len(alerts_check(tenant=tenant, team_ids=list(team_ids), now=now))


@shared_task(acks_late=True, time_limit=300, soft_time_limit=270, ignore_result=True)
def budget_alerts_sweep() -> int:
    """Beat: every budgeted team checked again, for alerts whose check after recording was lost."""
    return alerts_sweep()
