from django.urls import path

from usage import api

urlpatterns = [
    path("ingest", api.IngestApi.as_view(), name="api-ingest"),
    path("usage/events", api.EventListApi.as_view(), name="api-usage-events"),
    path("usage/summary", api.UsageSummaryApi.as_view(), name="api-usage-summary"),
    path("usage/export.csv", api.UsageExportCsvApi.as_view(), name="api-usage-export-csv"),
    path("sessions", api.SessionListApi.as_view(), name="api-sessions"),
    # `path`: session ids are any printable text, "/" included.
    path("sessions/<path:session_id>", api.SessionDetailApi.as_view(), name="api-session-detail"),
    path("teams", api.TeamListApi.as_view(), name="api-teams"),
]
