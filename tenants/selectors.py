import datetime
import time

from django.db.models import CharField, Model, Value
from django.db.models.functions import Lower
from django.db.models.lookups import Exact
from django.http import Http404
from django.utils import timezone

from tenants.keys import hash_key
from tenants.models import ApiKey, Invitation, Membership, Team, Tenant


def get_for_tenant_or_404(model: type[Model], *, tenant: Tenant, **lookup):
    """One object of the tenant; another tenant's object is a 404 so its existence does not leak."""
    try:
        return model.objects.get(tenant=tenant, **lookup)
    except (model.DoesNotExist, ValueError, TypeError):
        raise Http404(f"No {model._meta.verbose_name} matches the given query.") from None


# Known keys (with their tenant) are remembered in-process for at most a second: the telemetry paths are the
# hottest of the product and the lookup was ~40 % of an ingest request. A revocation therefore takes effect at
# once in the process that revoked it and within KEY_CACHE_SECONDS everywhere else. Unknown keys are never
# remembered: each one costs the same single indexed lookup.
KEY_CACHE_SECONDS = 1.0
_KEY_CACHE_MAX = 10_000
_key_cache: dict[str, tuple[float, ApiKey]] = {}


def api_key_by_secret(*, raw_key: str) -> ApiKey | None:
    """One indexed lookup by the hash of the whole key (no prefix query whose timing tells what exists)."""
    digest = hash_key(raw_key)
    now = time.monotonic()
    hit = _key_cache.get(digest)
    if hit is not None and now - hit[0] < KEY_CACHE_SECONDS:
        return hit[1]
    key = ApiKey.objects.select_related("tenant").filter(key_hash=digest).first()
    if key is not None:
        if len(_key_cache) >= _KEY_CACHE_MAX:
            _key_cache.clear()
        _key_cache[digest] = (now, key)
    return key


def api_key_cache_forget(*, key_hash: str | None = None) -> None:
    """Drop one remembered key (or all of them)."""
    if key_hash is None:
        _key_cache.clear()
    else:
        _key_cache.pop(key_hash, None)


def api_key_list(*, tenant: Tenant):
    return ApiKey.objects.for_tenant(tenant).select_related("created_by").order_by("-created_at")


def api_key_is_active(key: ApiKey, *, now: datetime.datetime | None = None) -> bool:
    now = now or timezone.now()
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def same_team_name(field: str, name: str) -> Exact:
    """A filter: `field` names the same team as `name`, ignoring case with the database's own lower() — the
    expression of the teams' unique constraint — so a name the constraint calls a duplicate always matches and no
    other does (iexact compares upper(), which differs for some letters: "ΣΑΣ" and "σας", "İstanbul")."""
    return Exact(Lower(field), Lower(Value(Team.clean_name(name), output_field=CharField())))


def team_by_name(*, tenant: Tenant, name: str) -> Team | None:
    return Team.objects.for_tenant(tenant).filter(same_team_name("name", name)).first()


def team_list(*, tenant: Tenant):
    return Team.objects.for_tenant(tenant).order_by("name")


def memberships_for_user(*, user) -> list[Membership]:
    if not user.is_authenticated:
        return []
    return list(Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name"))


def membership_list(*, tenant: Tenant) -> list[Membership]:
    return list(Membership.objects.for_tenant(tenant).select_related("user").order_by("user__username"))


# secrets.token_urlsafe(32) is 43 characters; anything much longer is not a token and is not even hashed.
INVITATION_TOKEN_MAX_LENGTH = 100


def _invitations_usable(now: datetime.datetime):
    return Invitation.objects.filter(revoked_at__isnull=True, accepted_at__isnull=True, expires_at__gt=now)


def invitation_pending_list(*, tenant: Tenant) -> list[Invitation]:
    """The tenant's invitations that can still be accepted (not used, revoked or expired), newest first."""
    return list(_invitations_usable(timezone.now()).filter(tenant=tenant).select_related("created_by")
                .order_by("-created_at"))


def invitation_by_token(*, raw_token: str) -> Invitation | None:
    """The invitation a link's token opens, if it can still be accepted. Unknown, expired, revoked and used tokens
    are all None, so a caller cannot tell them apart (one indexed lookup by the hash, as for API keys)."""
    if not raw_token or len(raw_token) > INVITATION_TOKEN_MAX_LENGTH:
        return None
    return invitation_by_token_hash(token_hash=hash_key(raw_token))


def invitation_by_token_hash(*, token_hash: str) -> Invitation | None:
    """The same, from the token's hash (what a session keeps of an opened link)."""
    return _invitations_usable(timezone.now()).filter(token_hash=token_hash).select_related("tenant").first()


def rejected_telemetry_recent(*, tenant: Tenant, days: int = 2) -> dict[str, int]:
    """Telemetry refused per reason over the last `days` UTC days (today included): {"rate_limited": n, …}."""
    from django.db.models import Sum

    from tenants.models import RejectedTelemetry

    since = timezone.now().date() - datetime.timedelta(days=days - 1)
    rows = (RejectedTelemetry.objects.for_tenant(tenant).filter(day__gte=since).values("reason")
            .annotate(total=Sum("count")).order_by())
    return {row["reason"]: row["total"] for row in rows}
