from django.contrib import admin

from agentwatch_site.admin import ReadOnlyAdmin
from usage.models import Anomaly, DailySpend, ModelPrice, MonthlyTeamSpend, PurgeRun, SessionState, UsageEvent


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "provider", "tenant", "input_per_mtok", "output_per_mtok", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["model"]


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "tenant", "model", "team_name", "session_id", "prompt_tokens", "completion_tokens",
                    "cost_usd", "timestamp", "recorded_at"]
    list_select_related = ["tenant"]
    search_fields = ["event_id", "session_id"]
    # Events are facts: no edits from the admin, or roll-ups would disagree with them.
    readonly_fields = [f.name for f in UsageEvent._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SessionState)
class SessionStateAdmin(admin.ModelAdmin):
    list_display = ["session_id", "tenant", "team", "spent_usd", "iterations", "last_seen", "expires_at"]
    search_fields = ["session_id"]


@admin.register(DailySpend)
class DailySpendAdmin(ReadOnlyAdmin):
    list_display = ["day", "tenant", "team_name", "project", "model", "events", "cost_usd"]
    list_select_related = ["tenant"]
    list_filter = ["day"]


@admin.register(MonthlyTeamSpend)
class MonthlyTeamSpendAdmin(ReadOnlyAdmin):
    list_display = ["month", "tenant", "team_name", "events", "cost_usd"]
    list_select_related = ["tenant"]
    list_filter = ["month"]


@admin.register(Anomaly)
class AnomalyAdmin(admin.ModelAdmin):
    list_display = ["kind", "tenant", "team", "session_id", "status", "count", "first_seen", "last_seen"]
    list_filter = ["kind", "status"]


@admin.register(PurgeRun)
class PurgeRunAdmin(admin.ModelAdmin):
    list_display = ["started_at", "finished_at", "dry_run", "events_deleted", "sessions_deleted"]
