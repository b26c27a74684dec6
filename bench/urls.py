"""URLs for benchmarks: the whole product plus bare DRF views as baselines (same gunicorn, same middleware, and under
/v1/ like the API, so the middleware treats them as it treats API requests).
Selected with ROOT_URLCONF=bench.urls; never used in production."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView


class BareIngestApi(APIView):
    """Parses the JSON body and answers 202, with no authentication, validation or database: the ceiling."""

    authentication_classes = []
    permission_classes = []

    def post(self, request):
        data = request.data
        return Response({"accepted": len(data.get("events", [data])) if isinstance(data, dict) else 0}, status=202)


class BareJsonApi(APIView):
    """GET: a fixed JSON body, no authentication or database (the /healthz-like baseline of bench/budget_check.py)."""

    authentication_classes = []
    permission_classes = []

    def get(self, request):
        return Response({"status": "ok"})


urlpatterns = [
    path("v1/bench/bare", BareIngestApi.as_view()),
    path("v1/bench/bare-json", BareJsonApi.as_view()),
    path("", include("agentwatch_site.urls")),
]

handler400 = "agentwatch_site.views.handler400"
handler403 = "agentwatch_site.views.handler403"
handler404 = "agentwatch_site.views.handler404"
handler500 = "agentwatch_site.views.handler500"
