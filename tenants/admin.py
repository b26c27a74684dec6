from django.contrib import admin

from tenants.forms import ThrottledAdminLoginForm
from tenants.models import (
    ApiKey,
    Invitation,
    Membership,
    RejectedTelemetry,
    Team,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
)
from tenants.services import invitation_revoke

# The admin's own sign-in page (staff and superusers, who see every tenant) under the dashboard's throttle.
admin.site.login_form = ThrottledAdminLoginForm


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "cost_mode", "retention_days", "admin_rate_limit_per_minute",
                    "telemetry_rate_limit_per_minute", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "tenant__name"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Made by owners in Settings → Members, which shows the link once; here only to see and revoke them (the token's
    hash is never shown)."""

    list_display = ["tenant", "role", "email", "created_by", "created_at", "expires_at", "accepted_by", "revoked_at"]
    list_filter = ["role"]
    list_select_related = ["tenant", "created_by", "accepted_by"]
    search_fields = ["tenant__name", "email"]
    fields = ["tenant", "role", "email", "created_by", "created_at", "expires_at", "accepted_by", "accepted_at",
              "revoked_at"]
    readonly_fields = fields  # revoked through the action below, which logs it (and never un-revokes)
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke the selected invitations")
    def revoke(self, request, queryset):
        for invitation in queryset:
            invitation_revoke(invitation=invitation, revoked_by=request.user)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    # The hash is never shown; keys are created in the dashboard or with `createapikey`, which show them once.
    list_display = ["name", "tenant", "prefix", "scope", "created_at", "last_used_at", "revoked_at", "expires_at"]
    list_filter = ["scope"]
    search_fields = ["name", "prefix", "tenant__name"]
    fields = ["tenant", "name", "scope", "prefix", "created_by", "created_at", "last_used_at", "revoked_at",
              "expires_at"]
    readonly_fields = ["tenant", "prefix", "scope", "created_by", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "created_at"]
    search_fields = ["name", "tenant__name"]


@admin.register(RejectedTelemetry)
class RejectedTelemetryAdmin(admin.ModelAdmin):
    list_display = ["tenant", "day", "reason", "count"]
    list_filter = ["reason"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "tenant", "enabled", "failing_since", "created_at"]
    exclude = ["secret"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["event_type", "endpoint", "status", "attempts", "response_code", "created_at"]
    list_filter = ["status", "event_type"]
