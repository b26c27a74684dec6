from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from agentwatch_site.dates import validate_time_zone


class TenantQuerySet(models.QuerySet):
    def for_tenant(self, tenant):
        return self.filter(tenant=tenant)


class Tenant(models.Model):
    class CostMode(models.TextChoices):
        BLENDED = "blended", "Blended ($3 per million tokens)"
        CATALOG = "catalog", "Catalog (per-model prices)"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    # 0 means unlimited.
    admin_rate_limit_per_minute = models.PositiveIntegerField(default=100)
    telemetry_rate_limit_per_minute = models.PositiveIntegerField(default=6000)
    retention_days = models.PositiveIntegerField(
        default=90, validators=[MinValueValidator(1), MaxValueValidator(3650)]
    )
    cost_mode = models.CharField(max_length=10, choices=CostMode.choices, default=CostMode.BLENDED)
    timezone = models.CharField(
        max_length=64, default="UTC", validators=[validate_time_zone],
        help_text="IANA name, e.g. Europe/Berlin: the calendar of budgets, alerts and reports. Set it before agents "
                  "send events; days already recorded keep the zone they were recorded in.")
    spike_min_usd = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("1.00"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(retention_days__gte=1, retention_days__lte=3650),
                name="tenant_retention_days_range",
            ),
        ]

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user_tenant")]

    def __str__(self):
        return f"{self.user} in {self.tenant} ({self.role})"

    @property
    def can_write(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class Invitation(models.Model):
    """A one-time link that lets whoever holds it join the tenant with `role`. Only the SHA-256 of the token is
    stored (like ApiKey); `email` is the owner's note of whom it is for, never matched against accounts."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.VIEWER)
    email = models.EmailField(blank=True, default="")
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="invitation_tenant_created")]

    def __str__(self):
        return f"Invitation to {self.tenant} as {self.role}"


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        TELEMETRY = "telemetry", "Telemetry (ingest and budget-check)"
        ADMIN = "admin", "Admin (everything)"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.TELEMETRY)
    # Display only ("aw_live_AbCd"); never enough to authenticate.
    prefix = models.CharField(max_length=16)
    # SHA-256 hex of the whole key; the plaintext is stored nowhere.
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_key = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="apikey_tenant_created")]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def display(self) -> str:
        return f"{self.prefix}…"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


class Team(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint("tenant", Lower("name"), name="team_unique_name_ci_per_tenant"),
        ]

    def __str__(self):
        return self.name

    @staticmethod
    def clean_name(name: str) -> str:
        """A team name as it is stored and looked up: without surrounding whitespace, so `"ops "` from an event, a
        budget and a URL all mean the team `ops` (then matched ignoring case)."""
        return name.strip()


class RejectedTelemetry(models.Model):
    """Telemetry refused per tenant per day and reason, so the dashboard can say what was lost."""

    class Reason(models.TextChoices):
        RATE_LIMITED = "rate_limited", "Rate limited"
        INVALID = "invalid", "Invalid"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    reason = models.CharField(max_length=20, choices=Reason.choices)
    count = models.PositiveBigIntegerField(default=0)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "reason"], name="rejected_unique_tenant_day_reason"),
        ]


class WebhookEndpoint(models.Model):
    class EventType(models.TextChoices):
        BUDGET_THRESHOLD = "budget.threshold", "Budget threshold crossed"
        BUDGET_EXCEEDED = "budget.exceeded", "Budget exceeded"
        ANOMALY_DETECTED = "anomaly.detected", "Anomaly detected"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True, default="")
    # Shared HMAC secret ("whsec_…"); shown once at creation.
    secret = models.CharField(max_length=80)
    event_types = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    # The latest failed attempt: a failure long after it starts a new failing period instead of extending the old one.
    last_failed_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.url


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="delivery_endpoint_created"),
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_next"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="delivery_unique_endpoint_event"),
        ]
