from django.contrib import admin

from agentwatch_site.admin import ReadOnlyAdmin
from budgets.models import BudgetAlert, BudgetAuditLog, TeamBudget


@admin.register(TeamBudget)
class TeamBudgetAdmin(admin.ModelAdmin):
    list_display = ["team", "tenant", "monthly_budget_usd", "alert_threshold_pct", "hard_stop", "updated_at"]
    list_select_related = ["team", "tenant"]
    list_filter = ["hard_stop"]
    search_fields = ["team__name", "tenant__name"]
    # Changes go through the API or the Budgets page, which write the audit log; the admin only reads.
    readonly_fields = [f.name for f in TeamBudget._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    list_display = ["team", "tenant", "month", "level", "threshold_pct", "spend_usd", "budget_usd", "created_at"]
    list_select_related = ["team", "tenant"]
    list_filter = ["level"]
    readonly_fields = [f.name for f in BudgetAlert._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BudgetAuditLog)
class BudgetAuditLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "team_name", "action", "actor_label"]
    list_select_related = ["tenant"]
    list_filter = ["action"]
    search_fields = ["team_name", "actor_label"]
    readonly_fields = [f.name for f in BudgetAuditLog._meta.fields]
