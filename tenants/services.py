import datetime
import logging
import secrets

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from agentwatch_site.dates import validate_time_zone
from agentwatch_site.errors import ApiError, Conflict, InvalidRequest, NotFound
from agentwatch_site.metrics import EVENTS_REJECTED
from tenants.keys import display_prefix, generate_key, hash_key
from tenants.models import ApiKey, Invitation, Membership, RejectedTelemetry, Team, Tenant
from tenants.selectors import api_key_cache_forget, team_by_name

logger = logging.getLogger(__name__)


@transaction.atomic
def tenant_create(*, name: str, slug: str | None = None, time_zone: str = "UTC") -> Tenant:
    """A slug derived from the name gets -2, -3 … when taken; an explicit slug that is taken is refused (a script
    would otherwise go on to make keys for the tenant that already had it)."""
    name = name.strip()
    if not name:
        raise InvalidRequest("Tenant name must not be empty.", code="validation_error")
    try:
        validate_time_zone(time_zone)
    except ValidationError as exc:
        raise InvalidRequest(exc.messages[0], code="validation_error") from None
    if slug is not None:
        explicit = slugify(slug)[:50]
        if not explicit:
            raise InvalidRequest(f"Slug {slug!r} has no letters or digits.", code="validation_error")
        if Tenant.objects.filter(slug=explicit).exists():
            raise Conflict(f"A tenant with slug {explicit!r} already exists; choose another slug.")
        return Tenant.objects.create(name=name, slug=explicit, timezone=time_zone)
    base = slugify(name)[:50] or "tenant"
    candidate, n = base, 1
    while Tenant.objects.filter(slug=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return Tenant.objects.create(name=name, slug=candidate, timezone=time_zone)


@transaction.atomic
def membership_set(*, tenant: Tenant, user, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": role})
    return membership


@transaction.atomic
def user_create_owner(*, tenant: Tenant, username: str, password: str, email: str = ""):
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        user = User.objects.get(username=username)
    else:
        user = User.objects.create_user(username=username, password=password, email=email)
    membership_set(tenant=tenant, user=user, role=Membership.Role.OWNER)
    return user


def api_key_create(*, tenant: Tenant, name: str, scope: str, created_by=None, created_by_key: ApiKey | None = None,
                   expires_at: datetime.datetime | None = None) -> tuple[ApiKey, str]:
    """Returns the key row and the full secret, which is shown once and stored nowhere."""
    name = name.strip()
    if not name:
        raise InvalidRequest("Key name must not be empty.", code="validation_error", fields={"name": ["Required."]})
    if scope not in ApiKey.Scope.values:
        raise InvalidRequest(f"Scope must be one of {', '.join(ApiKey.Scope.values)}.", code="validation_error",
                             fields={"scope": ["Invalid scope."]})
    if created_by_key is not None and created_by_key.scope == ApiKey.Scope.TELEMETRY and scope == ApiKey.Scope.ADMIN:
        raise ApiError("A key cannot create a key with a wider scope than its own.", code="scope_escalation",
                       status=403, type="permission_error")
    expires_at = _no_later_than_parent(expires_at, created_by_key)
    raw = generate_key()
    key = ApiKey.objects.create(
        tenant=tenant, name=name, scope=scope, prefix=display_prefix(raw), key_hash=hash_key(raw),
        created_by=created_by, created_by_key=created_by_key, expires_at=expires_at,
    )
    logger.info("api key created tenant=%s key_prefix=%s scope=%s", tenant.slug, key.prefix, scope)
    return key, raw


def _no_later_than_parent(expires_at: datetime.datetime | None,
                          parent: ApiKey | None) -> datetime.datetime | None:
    """A key created with an expiring key expires with it at the latest (a short-lived or leaked key must not mint
    itself a lasting successor): no expiry asked means the parent's, a later one is refused."""
    if parent is None or parent.expires_at is None:
        return expires_at
    if expires_at is None:
        return parent.expires_at
    if expires_at > parent.expires_at:
        limit = parent.expires_at.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
        raise InvalidRequest(f"A key cannot outlive the key that creates it, which expires at {limit}.",
                             code="validation_error", fields={"expires_at": [f"Must be at most {limit}."]})
    return expires_at


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        key.refresh_from_db(fields=["revoked_at"])
        api_key_cache_forget(key_hash=key.key_hash)
        logger.info("api key revoked tenant_id=%s key_prefix=%s", key.tenant_id, key.prefix)
    return key


def api_key_touch(*, key_id: int, used_at: datetime.datetime) -> None:
    """Record last use; callers gate this to at most once a minute per key."""
    ApiKey.objects.filter(pk=key_id).update(last_used_at=used_at)


def team_get_or_create(*, tenant: Tenant, name: str) -> tuple[Team, bool]:
    """Teams are unique per tenant ignoring case and surrounding whitespace; the first spelling seen is kept."""
    name = Team.clean_name(name)
    team = team_by_name(tenant=tenant, name=name)
    if team is not None:
        return team, False
    try:
        with transaction.atomic():
            return Team.objects.create(tenant=tenant, name=name), True
    except IntegrityError:
        # Another request created it between our read and write.
        team = team_by_name(tenant=tenant, name=name)
        if team is None:
            raise
        return team, False


def rejected_telemetry_count(*, tenant: Tenant, reason: str, count: int = 1) -> None:
    EVENTS_REJECTED.labels(reason).inc(count)
    day = timezone.now().date()
    try:
        updated = RejectedTelemetry.objects.filter(tenant=tenant, day=day, reason=reason).update(
            count=F("count") + count
        )
        if not updated:
            try:
                with transaction.atomic():
                    RejectedTelemetry.objects.create(tenant=tenant, day=day, reason=reason, count=count)
            except IntegrityError:
                RejectedTelemetry.objects.filter(tenant=tenant, day=day, reason=reason).update(
                    count=F("count") + count
                )
    except Exception:
        # Counting what was refused must never turn the refusal into a 500.
        logger.exception("could not count rejected telemetry tenant_id=%s reason=%s", tenant.pk, reason)


def _owner_count_locked(tenant_id: int) -> int:
    # Lock the tenant's owner rows so two owners demoting each other at once cannot leave none.
    return len(list(Membership.objects.select_for_update().filter(tenant_id=tenant_id, role=Membership.Role.OWNER)
                    .values_list("pk", flat=True)))


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise InvalidRequest("Role must be owner, admin or viewer.", code="validation_error")
    if (membership.role == Membership.Role.OWNER and role != Membership.Role.OWNER
            and _owner_count_locked(membership.tenant_id) <= 1):
        raise ApiError("The last owner cannot be demoted: make someone else an owner first.",
                       code="last_owner", status=409)
    previous = membership.role
    Membership.objects.filter(pk=membership.pk).update(role=role)
    membership.role = role
    logger.info("membership role changed tenant_id=%s membership_id=%s user_id=%s from=%s to=%s",
                membership.tenant_id, membership.pk, membership.user_id, previous, role)
    if previous == Membership.Role.OWNER and role != Membership.Role.OWNER:
        _invitations_of_revoke(membership, reason="no longer an owner")
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    if membership.role == Membership.Role.OWNER and _owner_count_locked(membership.tenant_id) <= 1:
        raise ApiError("The last owner cannot be removed: make someone else an owner first.",
                       code="last_owner", status=409)
    Membership.objects.filter(pk=membership.pk).delete()
    logger.info("membership removed tenant_id=%s membership_id=%s user_id=%s role=%s",
                membership.tenant_id, membership.pk, membership.user_id, membership.role)
    _invitations_of_revoke(membership, reason="removed")


def _invitations_of_revoke(membership: Membership, *, reason: str) -> None:
    """The pending invitations a member made in their organisation, once they may no longer make them (removed, or
    no longer an owner): a link they kept would otherwise let them, or anyone they give it to, back in."""
    revoked = Invitation.objects.filter(
        tenant_id=membership.tenant_id, created_by_id=membership.user_id, revoked_at__isnull=True,
        accepted_at__isnull=True,
    ).update(revoked_at=timezone.now())
    if revoked:
        logger.info("invitations revoked tenant_id=%s by_user_id=%s count=%s reason=%s", membership.tenant_id,
                    membership.user_id, revoked, reason)


# --- Invitations: the only way into an organisation from the dashboard -----------------------------------

INVITATION_VALID_FOR = datetime.timedelta(days=7)
INVITATION_UNAVAILABLE = "This invitation link is not valid."


def invitation_create(*, tenant: Tenant, role: str, email: str = "", created_by=None) -> tuple[Invitation, str]:
    """Returns the invitation and its token, which is shown once (in the link) and stored only as a hash."""
    if role not in Membership.Role.values:
        raise InvalidRequest("Role must be owner, admin or viewer.", code="validation_error")
    raw_token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=tenant, role=role, email=email.strip(), token_hash=hash_key(raw_token), created_by=created_by,
        expires_at=timezone.now() + INVITATION_VALID_FOR,
    )
    logger.info("invitation created tenant_id=%s invitation_id=%s role=%s by_user_id=%s", tenant.pk,
                invitation.pk, role, getattr(created_by, "pk", None))
    return invitation, raw_token


def invitation_revoke(*, invitation: Invitation, revoked_by=None) -> Invitation:
    """Revoking a used or already revoked invitation changes nothing."""
    revoked = Invitation.objects.filter(pk=invitation.pk, revoked_at__isnull=True, accepted_at__isnull=True).update(
        revoked_at=timezone.now())
    invitation.refresh_from_db(fields=["revoked_at"])
    if revoked:
        logger.info("invitation revoked tenant_id=%s invitation_id=%s by_user_id=%s", invitation.tenant_id,
                    invitation.pk, getattr(revoked_by, "pk", None))
    return invitation


def invitation_accept(*, invitation: Invitation, user) -> tuple[Membership, bool]:
    """Makes `user` a member with the invitation's role and uses the invitation up: (membership, True). Someone
    already a member keeps their role, and the link stays open for whom it was meant: (membership, False). An
    invitation used, revoked or expired since it was read raises NotFound."""
    try:
        with transaction.atomic():
            existing = Membership.objects.filter(tenant_id=invitation.tenant_id, user=user).first()
            if existing is not None:
                return existing, False
            now = timezone.now()
            # Single use: of two acceptances racing for one link, only one changes the row.
            claimed = Invitation.objects.filter(
                pk=invitation.pk, revoked_at__isnull=True, accepted_at__isnull=True, expires_at__gt=now,
            ).update(accepted_at=now, accepted_by=user)
            if not claimed:
                raise NotFound(INVITATION_UNAVAILABLE, code="invitation_unavailable")
            membership = Membership.objects.create(tenant_id=invitation.tenant_id, user=user, role=invitation.role)
    except IntegrityError:
        # Became a member through another invitation at the same moment; this one was rolled back, not used.
        return Membership.objects.get(tenant_id=invitation.tenant_id, user=user), False
    logger.info("invitation accepted tenant_id=%s invitation_id=%s user_id=%s role=%s", invitation.tenant_id,
                invitation.pk, user.pk, membership.role)
    return membership, True


def invitation_accept_as_new_user(*, invitation: Invitation, username: str, email: str,
                                  password: str) -> tuple:
    """Creates the account and accepts in one transaction: a link no longer usable leaves no account behind.
    A username taken meanwhile raises IntegrityError."""
    with transaction.atomic():
        user = get_user_model().objects.create_user(username=username, email=email, password=password)
        membership, _ = invitation_accept(invitation=invitation, user=user)
    logger.info("invitation account created tenant_id=%s invitation_id=%s user_id=%s", invitation.tenant_id,
                invitation.pk, user.pk)
    return user, membership


def tenant_settings_update(*, tenant: Tenant, **changes) -> Tenant:
    """Change cost_mode and/or retention_days (1–3,650); checked here so every caller keeps the rules."""
    if "cost_mode" in changes and changes["cost_mode"] not in Tenant.CostMode.values:
        raise InvalidRequest("Cost mode must be blended or catalog.", code="validation_error",
                             fields={"cost_mode": ["Must be blended or catalog."]})
    if "retention_days" in changes and not 1 <= int(changes["retention_days"]) <= 3650:
        raise InvalidRequest("Retention must be 1 to 3,650 days.", code="validation_error",
                             fields={"retention_days": ["Must be from 1 to 3,650 days."]})
    fields = [name for name in ("cost_mode", "retention_days") if name in changes]
    for name in fields:
        setattr(tenant, name, changes[name])
    if fields:
        tenant.save(update_fields=fields)
        logger.info("tenant settings updated tenant=%s fields=%s", tenant.slug, ",".join(fields))
    return tenant
