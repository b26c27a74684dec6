"""The two public /v1 routes: /v1/schema (the OpenAPI 3 document) and /v1/docs (Swagger UI from
drf-spectacular-sidecar's static files, no CDN). Neither needs an API key."""

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny

from agentwatch_site.errors import api_error_response


class JsonErrors:
    """Errors (a wrong method, an unknown `?format=`, an Accept these views cannot meet) get the JSON envelope
    of every other /v1 route, not a body in the view's own format (YAML, or an HTML page)."""

    def handle_exception(self, exc):
        return api_error_response(exc)


class SchemaView(JsonErrors, SpectacularAPIView):
    """GET /v1/schema: the OpenAPI 3 document (YAML; `?format=json` for JSON). No API key needed."""

    authentication_classes = []
    permission_classes = [AllowAny]
    http_method_names = ["get", "head"]

    def _get_version_parameter(self, request):
        # The API has one version: `?version=` is ignored (drf-spectacular would copy it into Content-Disposition,
        # where a newline in it failed the answer).
        return None


class DocsView(JsonErrors, SpectacularSwaggerSplitView):
    """GET /v1/docs: Swagger UI from local static files (no CDN); its init script is a separate request so the
    strict Content-Security-Policy (script-src 'self') holds."""

    authentication_classes = []
    permission_classes = [AllowAny]
    http_method_names = ["get", "head"]  # DRF's OPTIONS answer would go through the HTML template
    template_name = "api_docs.html"
    url_name = "api-schema"
    title = "AgentWatch API"
