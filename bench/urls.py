"""URLs for benchmarks: the whole product plus bare views as baselines (same gunicorn, same middleware, and under
/v1/ like the API, so the middleware treats them as it treats API requests).

The telemetry endpoints are served without DRF's Request and Response (tenants.api_base.LeanDispatch), so each
bare view exists twice: through DRF (the baseline issue #4 names for ingestion, and the budget-check baseline
before session 4) and as a plain Django view (the like-for-like, stricter one).

Selected with ROOT_URLCONF=bench.urls; never used in production."""

import json

from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response
from rest_framework.views import APIView


class BareIngestApi(APIView):
    """POST: parses the JSON body and answers 202, with no authentication, validation or database: the ceiling
    of bench/ingest.py (issue #4 names a bare DRF view as its baseline)."""

    authentication_classes = []
    permission_classes = []

    def post(self, request):
        data = request.data
        return Response({"accepted": len(data.get("events", [data])) if isinstance(data, dict) else 0}, status=202)


@csrf_exempt
def bare_ingest_django(request):
    """POST: the same without DRF, as /v1/ingest is served (a second, stricter reference)."""
    data = json.loads(request.body)
    accepted = len(data.get("events", [data])) if isinstance(data, dict) else 0
    return JsonResponse({"accepted": accepted}, status=202)


def bare_json(request):
    """GET: a fixed JSON body, no authentication or database (the /healthz-like baseline of
    bench/budget_check.py)."""
    return JsonResponse({"status": "ok"})


class BareJsonDrfApi(APIView):
    """GET: the same body through DRF (the baseline of the figures recorded before the lean dispatch)."""

    authentication_classes = []
    permission_classes = []

    def get(self, request):
        return Response({"status": "ok"})


urlpatterns = [
    path("v1/bench/bare", BareIngestApi.as_view()),
    path("v1/bench/bare-django", bare_ingest_django),
    path("v1/bench/bare-json", bare_json),
    path("v1/bench/bare-json-drf", BareJsonDrfApi.as_view()),
    path("", include("agentwatch_site.urls")),
]

handler400 = "agentwatch_site.views.handler400"
handler403 = "agentwatch_site.views.handler403"
handler404 = "agentwatch_site.views.handler404"
handler500 = "agentwatch_site.views.handler500"
