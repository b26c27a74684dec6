from django.conf import settings
from django.db import models

from tenants.models import ApiKey, Team, Tenant, TenantQuerySet
from usage.models import MONEY_TOTAL


class TeamBudget(models.Model):
    """A team's monthly budget. Spend is per calendar month by construction, so nothing resets it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="budget")
    monthly_budget_usd = models.DecimalField(max_digits=12, decimal_places=2)
    alert_threshold_pct = models.PositiveSmallIntegerField(default=80)
    hard_stop = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(monthly_budget_usd__gt=0), name="budget_positive"),
            models.CheckConstraint(condition=models.Q(alert_threshold_pct__gte=1, alert_threshold_pct__lte=100),
                                   name="budget_threshold_range"),
        ]

    def __str__(self):
        return f"{self.team.name}: ${self.monthly_budget_usd}/month"


class BudgetAlert(models.Model):
    """A threshold crossed: at most one per team per month per level (the constraint holds under races)."""

    class Level(models.TextChoices):
        THRESHOLD = "threshold", "Alert threshold"
        EXCEEDED = "exceeded", "Budget exceeded"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    month = models.DateField(help_text="First day of the tenant-local month.")
    level = models.CharField(max_length=10, choices=Level.choices)
    threshold_pct = models.PositiveSmallIntegerField()
    spend_usd = models.DecimalField(**MONEY_TOTAL)
    budget_usd = models.DecimalField(max_digits=12, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "team", "month", "level"], name="alert_once_per_level_month"),
        ]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="alert_tenant_created")]


class BudgetAuditLog(models.Model):
    class Action(models.TextChoices):
        CREATED = "created", "Created"
        UPDATED = "updated", "Updated"
        DELETED = "deleted", "Deleted"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    team_name = models.CharField(max_length=100)
    action = models.CharField(max_length=10, choices=Action.choices)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    actor_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # "user alice" or "key aw_live_AbCd…", kept even if the user or key is deleted later.
    actor_label = models.CharField(max_length=200)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_created")]
