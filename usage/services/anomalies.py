"""Anomalies: spend-spike detection from the hourly roll-up, acknowledging, listing, and the webhook sent for each.

Runaway loops are detected while recording (usage.services.recording); both kinds go out as `anomaly.detected`.
"""

import datetime
import logging
from collections import defaultdict
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from agentwatch_site.dates import hour_floor, tenant_day
from tenants.models import Tenant
from tenants.selectors import team_by_name
from tenants.services import team_get_or_create
from tenants.webhooks import webhook_event_emit
from usage.models import Anomaly, HourlySpend

logger = logging.getLogger(__name__)

BASELINE_HOURS = 7 * 24
SPIKE_SIGMAS = Decimal("4")


# --- Spend spikes ---------------------------------------------------------------------------------------------

def spend_spikes_detect(*, now: datetime.datetime | None = None) -> list[int]:
    """For each team with spend in the last full UTC hour: compare it with the mean + 4σ of the team's hourly
    spend over the 7 days before (hours without spend count as $0) and the tenant's minimum. Opens at most one
    spike anomaly per team per tenant-local day. Returns the ids of anomalies opened."""
    hour = hour_floor(now or timezone.now()) - datetime.timedelta(hours=1)
    start = hour - datetime.timedelta(hours=BASELINE_HOURS)
    last_hour = HourlySpend.objects.filter(hour=hour, cost_usd__gt=0).values_list("tenant_id", "team_name",
                                                                                   "cost_usd")
    candidates: dict[int, dict[str, Decimal]] = defaultdict(dict)
    for tenant_id, team_name, cost in last_hour:
        candidates[tenant_id][team_name] = cost
    opened = []
    tenants = Tenant.objects.in_bulk(list(candidates))
    for tenant_id, teams in sorted(candidates.items()):
        tenant = tenants[tenant_id]
        history: dict[str, list[Decimal]] = defaultdict(list)
        rows = HourlySpend.objects.filter(tenant=tenant, hour__gte=start, hour__lt=hour,
                                          team_name__in=list(teams)).values_list("team_name", "cost_usd")
        for team_name, cost in rows:
            history[team_name].append(cost)
        for team_name, spend in sorted(teams.items()):
            baseline = _baseline(history[team_name])
            threshold = baseline["mean"] + SPIKE_SIGMAS * baseline["stddev"]
            if spend > threshold and spend >= tenant.spike_min_usd:
                anomaly_id = _open_spike(tenant, team_name, hour=hour, spend=spend, baseline=baseline,
                                         threshold=threshold)
                if anomaly_id:
                    opened.append(anomaly_id)
    return opened


def _baseline(costs: list[Decimal]) -> dict[str, Decimal]:
    """Mean and population standard deviation over BASELINE_HOURS hours, the missing ones being $0."""
    values = costs + [Decimal("0")] * (BASELINE_HOURS - len(costs))
    mean = sum(values, Decimal("0")) / len(values)
    variance = sum(((v - mean) ** 2 for v in values), Decimal("0")) / len(values)
    return {"mean": mean, "stddev": variance.sqrt()}


def _open_spike(tenant: Tenant, team_name: str, *, hour, spend: Decimal, baseline: dict, threshold: Decimal):
    team = team_get_or_create(tenant=tenant, name=team_name)[0] if team_name else None
    day = tenant_day(tenant, hour)
    existing = Anomaly.objects.filter(tenant=tenant, kind=Anomaly.Kind.SPEND_SPIKE, team=team, day=day)
    if existing.exists():
        return None
    now = timezone.now()
    details = {
        "hour": hour.isoformat(), "team": team_name or None, "spend_usd": _money(spend),
        "baseline_mean_usd": _money(baseline["mean"]), "baseline_stddev_usd": _money(baseline["stddev"]),
        "threshold_usd": _money(threshold), "min_usd": _money(tenant.spike_min_usd),
        "baseline_hours": BASELINE_HOURS,
    }
    try:
        with transaction.atomic():
            anomaly = Anomaly.objects.create(tenant=tenant, kind=Anomaly.Kind.SPEND_SPIKE, team=team, day=day,
                                             details=details, first_seen=now, last_seen=now)
    except IntegrityError:
        # Another beat run opened it first (the constraint allows one per team and day).
        return None
    logger.info("spend spike detected tenant=%s team=%s spend=%s threshold=%s", tenant.slug, team_name or "-",
                details["spend_usd"], details["threshold_usd"])
    from usage.tasks import anomaly_notify as anomaly_notify_task

    try:
        anomaly_notify_task.delay_on_commit(anomaly.pk)
    except Exception as exc:
        logger.warning("could not enqueue anomaly webhook anomaly_id=%s error=%s", anomaly.pk, type(exc).__name__)
    return anomaly.pk


def _money(value: Decimal) -> float:
    return float(round(value, 4))


# --- Webhooks -------------------------------------------------------------------------------------------------

def anomaly_notify(*, anomaly_id: int) -> None:
    """`anomaly.detected` to the tenant's webhooks, once per anomaly and occurrence: growth of the same run updates
    it quietly; a loop in a later lifetime of the session while it is still open is a new occurrence."""
    anomaly = Anomaly.objects.select_related("tenant", "team").filter(pk=anomaly_id).first()
    if anomaly is None:
        return
    occurrence = (anomaly.details or {}).get("occurrence", 1)
    event_id = f"anomaly_{anomaly.pk}" if occurrence == 1 else f"anomaly_{anomaly.pk}_{occurrence}"
    webhook_event_emit(
        tenant=anomaly.tenant, event_type="anomaly.detected", text=anomaly_text(anomaly),
        data=anomaly_data(anomaly), event_id=event_id,
        occurred_at=anomaly.first_seen if occurrence == 1 else anomaly.last_seen,
    )


def anomalies_notify_recent(*, hours: int = 2) -> int:
    """Catch-up for anomaly webhooks whose task was lost (broker down when it was opened): emitting is
    idempotent per endpoint and anomaly, so re-emitting the recent ones sends only what is missing (and nothing
    to an endpoint added after the anomaly was opened)."""
    since = timezone.now() - datetime.timedelta(hours=hours)
    recent = list(Anomaly.objects.filter(first_seen__gte=since).values_list("pk", flat=True)[:1000])
    for anomaly_id in recent:
        anomaly_notify(anomaly_id=anomaly_id)
    return len(recent)


def anomaly_text(anomaly: Anomaly) -> str:
    team = f" (team {anomaly.team.name})" if anomaly.team else ""
    details = anomaly.details or {}
    if anomaly.kind == Anomaly.Kind.RUNAWAY_LOOP:
        tokens = " → ".join(f"{t:,}" for t in details.get("prompt_tokens", []))
        ratios = ", ".join(f"×{r:.2f}" for r in details.get("ratios", []))
        return (f"AgentWatch: runaway loop in session {anomaly.session_id}{team}: prompt tokens {tokens} "
                f"({ratios}).")
    hour = details.get("hour", "")[:16].replace("T", " ")
    return (f"AgentWatch: spend spike{team or ' (unallocated)'}: ${details.get('spend_usd', 0):,.2f} in the hour "
            f"from {hour} UTC, against a 7-day hourly mean of ${details.get('baseline_mean_usd', 0):,.2f} "
            f"(σ ${details.get('baseline_stddev_usd', 0):,.2f}).")


def anomaly_data(anomaly: Anomaly) -> dict:
    return {
        "anomaly_id": anomaly.pk, "kind": anomaly.kind, "status": anomaly.status,
        "team": anomaly.team.name if anomaly.team else None, "session_id": anomaly.session_id or None,
        "day": anomaly.day.isoformat() if anomaly.day else None, "count": anomaly.count,
        "first_seen": anomaly.first_seen.isoformat(), "last_seen": anomaly.last_seen.isoformat(),
        "details": anomaly.details,
    }


# --- Reading and acknowledging --------------------------------------------------------------------------------

def anomaly_list(*, tenant: Tenant, kind: str | None = None, team: str | None = None,
                 session_id: str | None = None, status: str | None = None):
    anomalies = Anomaly.objects.for_tenant(tenant).select_related("team")
    if kind:
        anomalies = anomalies.filter(kind=kind)
    if team:
        found = team_by_name(tenant=tenant, name=team)
        anomalies = anomalies.filter(team=found) if found else anomalies.none()
    if session_id:
        anomalies = anomalies.filter(session_id=session_id)
    if status:
        anomalies = anomalies.filter(status=status)
    return anomalies


def anomaly_acknowledge(*, anomaly: Anomaly, by: str) -> Anomaly:
    """Idempotent. A runaway loop that keeps growing after this opens a new anomaly."""
    updated = Anomaly.objects.filter(pk=anomaly.pk, status=Anomaly.Status.OPEN).update(
        status=Anomaly.Status.ACKNOWLEDGED, acknowledged_at=timezone.now(), acknowledged_by=by[:200],
    )
    anomaly.refresh_from_db()
    if updated:
        logger.info("anomaly acknowledged tenant_id=%s anomaly_id=%s by=%s", anomaly.tenant_id, anomaly.pk, by)
    return anomaly
