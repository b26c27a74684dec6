from django.utils import timezone

from tenants.models import Tenant
from usage.models import SessionState, UsageEvent


def ingest_lag_seconds() -> float:
    """Age of the oldest event still waiting for a worker (0 when none); served by a small partial index."""
    oldest = (
        UsageEvent.objects.filter(recorded_at__isnull=True).order_by("id").values_list("received_at", flat=True)
        .first()
    )
    if oldest is None:
        return 0.0
    return round(max(0.0, (timezone.now() - oldest).total_seconds()), 3)


def session_state_get(*, tenant: Tenant, session_id: str) -> SessionState | None:
    return SessionState.objects.filter(tenant=tenant, session_id=session_id).first()
