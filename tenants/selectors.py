import datetime

from django.db.models import Model
from django.http import Http404
from django.utils import timezone

from tenants.keys import hash_key
from tenants.models import ApiKey, Membership, Team, Tenant


def get_for_tenant_or_404(model: type[Model], *, tenant: Tenant, **lookup):
    """One object of the tenant; another tenant's object is a 404 so its existence does not leak."""
    try:
        return model.objects.get(tenant=tenant, **lookup)
    except (model.DoesNotExist, ValueError, TypeError):
        raise Http404(f"No {model._meta.verbose_name} matches the given query.") from None


def api_key_by_secret(*, raw_key: str) -> ApiKey | None:
    """One indexed lookup by the hash of the whole key (no prefix query whose timing tells what exists)."""
    return ApiKey.objects.select_related("tenant").filter(key_hash=hash_key(raw_key)).first()


def api_key_list(*, tenant: Tenant):
    return ApiKey.objects.for_tenant(tenant).select_related("created_by").order_by("-created_at")


def api_key_is_active(key: ApiKey, *, now: datetime.datetime | None = None) -> bool:
    now = now or timezone.now()
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def team_by_name(*, tenant: Tenant, name: str) -> Team | None:
    return Team.objects.for_tenant(tenant).filter(name__iexact=name).first()


def team_list(*, tenant: Tenant):
    return Team.objects.for_tenant(tenant).order_by("name")


def memberships_for_user(*, user) -> list[Membership]:
    if not user.is_authenticated:
        return []
    return list(Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name"))


def membership_list(*, tenant: Tenant) -> list[Membership]:
    return list(Membership.objects.for_tenant(tenant).select_related("user").order_by("user__username"))


def rejected_telemetry_recent(*, tenant: Tenant, days: int = 2) -> dict[str, int]:
    """Telemetry refused per reason over the last `days` UTC days (today included): {"rate_limited": n, …}."""
    from django.db.models import Sum

    from tenants.models import RejectedTelemetry

    since = timezone.now().date() - datetime.timedelta(days=days - 1)
    rows = (RejectedTelemetry.objects.for_tenant(tenant).filter(day__gte=since).values("reason")
            .annotate(total=Sum("count")).order_by())
    return {row["reason"]: row["total"] for row in rows}
