from django.urls import path

from budgets import api

urlpatterns = [
    path("budget-check", api.SessionBudgetCheckApi.as_view(), name="api-budget-check"),
    path("teams/budget-check", api.TeamBudgetCheckApi.as_view(), name="api-team-budget-check"),
    path("teams/budgets", api.TeamBudgetListApi.as_view(), name="api-team-budgets"),
    # `path:` so a team name with "/" (sent as %2F, which arrives decoded) still reaches its budget.
    path("teams/budgets/<path:team>", api.TeamBudgetDetailApi.as_view(), name="api-team-budget"),
    path("alerts", api.AlertListApi.as_view(), name="api-alerts"),
    path("audit-log", api.AuditLogListApi.as_view(), name="api-audit-log"),
]
