"""URLs for benchmarks: the whole product plus bare views as baselines (same gunicorn, same middleware, and under
/v1/ like the API, so the middleware treats them as it treats API requests).

The telemetry endpoints are served without DRF's Request and Response (tenants.api_base.LeanDispatch), so each
bare view exists twice: through DRF (the baseline issue #4 names for ingestion, and the budget-check baseline
before session 4) and as a plain Django view (the like-for-like, stricter one).

Selected with ROOT_URLCONF=bench.urls; never used in production."""

import json

from django.core.cache import cache
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response
from rest_framework.views import APIView

from agentwatch_site import db
from agentwatch_site.errors import json_response
from tenants.api_base import LeanDispatch, TelemetryApi


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


class AuthOnlyApi(LeanDispatch, TelemetryApi):
    """GET: what /v1/budget-check does before its read (key authentication, scope, rate limit), then a fixed
    body. With the two below: the ceiling of any check that reads shared state on each request."""

    lean_methods = frozenset({"GET"})

    def get(self, request):
        return json_response({"status": "ok"})


class AuthRedisApi(AuthOnlyApi):
    """GET: the same plus one Redis round trip (an MGET of two keys, as a check kept in Redis would read)."""

    def get(self, request):
        values = cache._cache.get_client(write=False).mget(["aw:bench:session", "aw:bench:team"])
        return json_response({"status": "ok", "found": sum(value is not None for value in values)})


class AuthSelectOneApi(AuthOnlyApi):
    """GET: the same plus one PostgreSQL round trip with nothing in it (a prepared `SELECT 1`, the check's path)."""

    def get(self, request):
        return json_response({"status": "ok", "one": db.fetch_one("SELECT 1", [])[0]})


urlpatterns = [
    path("v1/bench/auth-only", AuthOnlyApi.as_view()),
    path("v1/bench/auth-redis", AuthRedisApi.as_view()),
    path("v1/bench/auth-select-1", AuthSelectOneApi.as_view()),
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
