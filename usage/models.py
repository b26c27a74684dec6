from decimal import Decimal

from django.db import models

from tenants.models import Team, Tenant, TenantQuerySet

MONEY = {"max_digits": 20, "decimal_places": 10}
# Running totals (a session's spend, the roll-ups): one event costs less than 10^10 USD (recording sets aside any
# that would not), but their sums are unbounded, and a total that overflows its column fails every batch that adds
# to it — recording stalls for every tenant behind it. 28 integer digits cannot be reached: at the ingest rate
# limit with every event at the maximum, it would take centuries.
MONEY_TOTAL = {"max_digits": 38, "decimal_places": 10}


class ModelPrice(models.Model):
    """USD per million tokens. tenant=None rows are the global catalogue; a tenant's row overrides it."""

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="prices")
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=50, blank=True, default="")
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=4)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=4)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["model"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "model"], name="price_unique_tenant_model"),
            models.UniqueConstraint(fields=["model"], condition=models.Q(tenant__isnull=True),
                                    name="price_unique_global_model"),
            models.CheckConstraint(condition=models.Q(input_per_mtok__gte=0, output_per_mtok__gte=0),
                                   name="price_non_negative"),
        ]

    def __str__(self):
        return f"{self.model}: ${self.input_per_mtok}/${self.output_per_mtok} per MTok"


class UsageEvent(models.Model):
    """One LLM call. Inserted by the ingest view; priced and counted ("recorded") exactly once by a worker."""

    class Status(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"

    class PricedBy(models.TextChoices):
        BLENDED = "blended", "Blended rate"
        CATALOG = "catalog", "Catalogue price"
        FALLBACK = "fallback", "Unknown model, blended rate"

    # No index of its own: every index below starts with tenant_id (one index less to write per event).
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    event_id = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=50, blank=True, default="")
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    latency_ms = models.PositiveBigIntegerField(default=0)
    identified_risks = models.JSONField(default=list, blank=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The team name exactly as first seen, kept when the event has no Team row yet (recording resolves it).
    team_name = models.CharField(max_length=100, blank=True, default="")
    project = models.CharField(max_length=200, blank=True, default="")
    session_id = models.CharField(max_length=200, blank=True, default="")
    iteration_index = models.PositiveBigIntegerField(null=True, blank=True)
    customer_id = models.CharField(max_length=200, blank=True, default="")
    user_id = models.CharField(max_length=200, blank=True, default="")
    feature_id = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    metadata = models.JSONField(default=dict, blank=True)
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField()
    recorded_at = models.DateTimeField(null=True, blank=True)
    cost_usd = models.DecimalField(null=True, blank=True, **MONEY)
    priced_by = models.CharField(max_length=10, choices=PricedBy.choices, blank=True, default="")
    # Set aside (quarantined): recording failed for this event alone, so it was marked with the error instead of
    # holding up every event behind it. Never counted; `manage.py quarantined_events --retry` puts it back.
    record_error = models.CharField(max_length=500, blank=True, default="", db_default="")

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "event_id"], name="event_unique_tenant_event_id"),
        ]
        indexes = [
            # Activity (newest first) and retention (oldest first) both walk this one.
            models.Index(fields=["tenant", "timestamp", "id"], name="event_tenant_ts"),
            models.Index(fields=["tenant", "team", "timestamp"], name="event_tenant_team_ts"),
            models.Index(fields=["tenant", "project", "timestamp"], name="event_tenant_project_ts"),
            models.Index(fields=["tenant", "model", "timestamp"], name="event_tenant_model_ts"),
            models.Index(fields=["tenant", "session_id", "iteration_index"], name="event_tenant_session_iter"),
            # Only events that carry a customer or feature id (aw-sdk sends neither): most events skip them.
            models.Index(fields=["tenant", "customer_id", "timestamp"], name="event_tenant_customer_ts",
                         condition=~models.Q(customer_id="")),
            models.Index(fields=["tenant", "feature_id", "timestamp"], name="event_tenant_feature_ts",
                         condition=~models.Q(feature_id="")),
            # Small: only events waiting for a worker. Serves the sweep and the ingest-lag health check.
            models.Index(fields=["id"], condition=models.Q(recorded_at__isnull=True), name="event_unrecorded"),
            # Smaller still, normally empty: the quarantined events (/healthz counts them).
            models.Index(fields=["id"], condition=~models.Q(record_error=""), name="event_quarantined"),
        ]

    def __str__(self):
        return f"{self.event_id} {self.model}"


class SessionState(models.Model):
    """One agent run's running totals; reset when a session is idle for 24 hours (SESSION_TTL)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session_id = models.CharField(max_length=200)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    project = models.CharField(max_length=200, blank=True, default="")
    spent_usd = models.DecimalField(default=Decimal("0"), **MONEY_TOTAL)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    events = models.PositiveBigIntegerField(default=0)
    iterations = models.PositiveBigIntegerField(default=0)
    # {"iteration_index": prompt_tokens} for the 5 highest iteration indexes seen.
    recent_prompts = models.JSONField(default=dict, blank=True)
    last_limit_usd = models.DecimalField(null=True, blank=True, **MONEY)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    expires_at = models.DateTimeField()

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "session_id"], name="session_unique_tenant_session"),
        ]
        indexes = [
            models.Index(fields=["tenant", "-last_seen", "-id"], name="session_tenant_last_seen"),
            # GET /v1/sessions pages by creation (immutable), so a walk over the pages misses no session.
            models.Index(fields=["tenant", "-id"], name="session_tenant_newest"),
            models.Index(fields=["expires_at"], name="session_expires"),
        ]

    def __str__(self):
        return self.session_id

    def current_events(self) -> models.Q:
        """Its events of the current lifetime: those received since `first_seen`, the ones its totals count (an
        id idle for SESSION_TTL starts again from zero, and its older events stay). The recorder's SQL
        (usage.services.recording._recorded_iterations) dates a lifetime by receipt the same way."""
        return models.Q(session_id=self.session_id, received_at__gte=self.first_seen)


class DailySpend(models.Model):
    """Roll-up per tenant-local day × team × project × model. team_name "" means unallocated."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    team_name = models.CharField(max_length=100, blank=True, default="")
    project = models.CharField(max_length=200, blank=True, default="")
    model = models.CharField(max_length=200)
    events = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(default=Decimal("0"), **MONEY_TOTAL)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "team_name", "project", "model"],
                                    name="dailyspend_unique_key"),
        ]
        indexes = [models.Index(fields=["tenant", "team_name", "day"], name="dailyspend_tenant_team_day")]


class TeamSpendRollup(models.Model):
    """What a per-period, per-team roll-up keeps: events and cost. team_name "" means unallocated."""

    team_name = models.CharField(max_length=100, blank=True, default="")
    events = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(default=Decimal("0"), **MONEY_TOTAL)

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True


class MonthlyTeamSpend(TeamSpendRollup):
    """Roll-up per tenant-local calendar month × team: the month-to-date spend a budget check reads as one row
    (the sum of the month's DailySpend rows for the team, kept in the same recording transaction). `month` is the
    first day of the month."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    month = models.DateField()

    class Meta:
        constraints = [
            # Also the lookup index of the check (tenant, month, team).
            models.UniqueConstraint(fields=["tenant", "month", "team_name"], name="monthlyteamspend_unique_key"),
        ]


class HourlySpend(TeamSpendRollup):
    """Roll-up per UTC hour × team, for spend-spike detection."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "hour", "team_name"], name="hourlyspend_unique_key"),
        ]
        indexes = [models.Index(fields=["hour"], name="hourlyspend_hour")]


class Anomaly(models.Model):
    class Kind(models.TextChoices):
        RUNAWAY_LOOP = "runaway_loop", "Runaway loop"
        SPEND_SPIKE = "spend_spike", "Spend spike"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    session_id = models.CharField(max_length=200, blank=True, default="")
    # The tenant-local day a spike was seen on (at most one open spike per team per day).
    day = models.DateField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    count = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=200, blank=True, default="")

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen"]
        verbose_name_plural = "anomalies"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "session_id"],
                condition=models.Q(kind="runaway_loop", status="open"),
                name="anomaly_one_open_loop_per_session",
            ),
            models.UniqueConstraint(
                fields=["tenant", "team", "day"],
                condition=models.Q(kind="spend_spike"),
                name="anomaly_one_spike_per_team_day",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "status", "-last_seen"], name="anomaly_tenant_status_seen"),
            models.Index(fields=["tenant", "session_id"], name="anomaly_tenant_session"),
        ]


class PurgeRun(models.Model):
    """One retention purge: what it removed, per tenant, for the Retention settings page."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    dry_run = models.BooleanField(default=False)
    events_deleted = models.PositiveBigIntegerField(default=0)
    sessions_deleted = models.PositiveBigIntegerField(default=0)
    # {"<tenant slug>": {"events": n, "cutoff": iso}}
    per_tenant = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
