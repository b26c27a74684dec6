from django.urls import path

from usage import api

urlpatterns = [
    path("ingest", api.IngestApi.as_view(), name="api-ingest"),
]
