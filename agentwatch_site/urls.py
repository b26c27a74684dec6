from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from agentwatch_site import views
from agentwatch_site.api_docs import DocsView, SchemaView
from agentwatch_site.errors import api_not_found
from budgets import api_urls as budgets_api_urls
from tenants import api_urls as tenants_api_urls
from tenants import webhook_api_urls
from usage import anomaly_api_urls
from usage import api_urls as usage_api_urls

# No two patterns overlap, so the order is free: the telemetry endpoints (budget-check, ingest), called on every
# LLM call, are tried first. The apps' lists are spliced in rather than included: each include level is one more
# resolver walked on every request.
api_patterns = [
    *budgets_api_urls.urlpatterns,
    *usage_api_urls.urlpatterns,
    *tenants_api_urls.urlpatterns,
    *webhook_api_urls.urlpatterns,
    *anomaly_api_urls.urlpatterns,
    # OpenAPI document and Swagger UI: public (no API key), before the catch-all below.
    path("schema", SchemaView.as_view(), name="api-schema"),
    path("docs", DocsView.as_view(), name="api-docs"),
]

urlpatterns = [
    path("v1/", include(api_patterns)),
    path("healthz", views.healthz, name="healthz"),
    path("livez", views.livez, name="livez"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    # Unknown /v1 paths get the JSON envelope, never an HTML page or an APPEND_SLASH redirect.
    # csrf_exempt: a POST or DELETE to an unknown path must get this 404 too, not the CSRF failure page.
    re_path(r"^v1(?:/.*)?$", csrf_exempt(api_not_found)),
    path("admin/", admin.site.urls),
    path("", include("tenants.urls")),
    path("", include("usage.urls")),
    path("", include("budgets.urls")),
]

handler400 = "agentwatch_site.views.handler400"
handler403 = "agentwatch_site.views.handler403"
handler404 = "agentwatch_site.views.handler404"
handler500 = "agentwatch_site.views.handler500"
