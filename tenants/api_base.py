import logging

from django.db import DEFAULT_DB_ALIAS, connections
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from agentwatch_site.db import connection_lost
from agentwatch_site.errors import RateLimited, api_error_response, validation_error
from agentwatch_site.negotiation import ContentNegotiation, answers_without_negotiation
from tenants.authentication import ApiKeyAuthentication
from tenants.permissions import HasApiScope
from tenants.ratelimit import ADMIN, TELEMETRY, TenantRateThrottle

logger = logging.getLogger(__name__)


def refuse_repeated_parameters(query) -> None:
    repeated = [name for name, values in query.lists() if len(values) > 1]
    if repeated:
        raise validation_error({name[:100]: ["Given more than once: send it once."] for name in repeated})


class TenantApi(APIView):
    """Base of every /v1 view: Bearer key auth sets request.tenant; scope and per-tenant rate limit checked."""

    required_scope = "admin"
    rate_limit_bucket = ADMIN
    throttle_classes = [TenantRateThrottle]

    def initial(self, request, *args, **kwargs):
        """DRF's checks (negotiation, authentication, scope, rate limit), then: a query parameter given twice is a
        400 naming it. Each endpoint takes one value per parameter, and reading the last one silently (`?limit=2000
        &limit=5`, two session ids meant as OR) would answer something else than was asked."""
        super().initial(request, *args, **kwargs)
        refuse_repeated_parameters(request.query_params)

    def throttled(self, request, wait):
        decision = request.rate_decision
        raise RateLimited(
            f"Rate limit of {decision.limit} {self.rate_limit_bucket} requests per minute exceeded for this "
            f"tenant; retry in {decision.retry_after} s.",
            retry_after=decision.retry_after,
        )


class TelemetryApi(TenantApi):
    required_scope = "telemetry"
    rate_limit_bucket = TELEMETRY


class LeanDispatch:
    """For the endpoints called on every LLM call (ingest, the budget checks): the methods in `lean_methods` are
    served on Django's own request, without DRF's Request, content negotiation and Response rendering — the same
    key authentication, scope check, rate limit and error envelope, about a quarter of the check's own CPU less.

    Their handlers read only what a Django HttpRequest has (`request.META`, `request.GET`, `request.body`,
    `request.tenant`) and return an HttpResponse (agentwatch_site.errors.json_response), so the view stays an
    APIView: the OpenAPI document is generated from it as before, and every other method (OPTIONS, HEAD, a
    wrong one → 405) goes through DRF."""

    lean_methods: frozenset[str] = frozenset()
    # For handlers that only read (the budget checks): a database connection lost in the middle of the request (a
    # server restart or failover, a pooler recycling it, a terminated backend) is replaced and the request served
    # once more, instead of a 503 that aw-sdk takes for an outage. (A connection found dead before the request's
    # first query is replaced anyway by the health check.) Ingest repeats only its INSERT, itself
    # (usage.services.ingest.event_batch_ingest).
    retry_lost_connection = False
    # A query parameter given twice is a 400, as on every other endpoint; aw-sdk's check keeps its documented
    # first-of-repeated reading (it builds its URL by hand).
    refuse_repeated = True

    def dispatch(self, request, *args, **kwargs):
        if request.method not in self.lean_methods:
            return super().dispatch(request, *args, **kwargs)
        self.args, self.kwargs, self.request = args, kwargs, request
        handler = getattr(self, request.method.lower())
        authorized = False
        try:
            if not answers_without_negotiation(request.META, "application/json"):
                # As DRF would (these answer JSON only): `?format=csv` or `Accept: text/csv` is a 406.
                ContentNegotiation().select_renderer(Request(request), [JSONRenderer()])
            self._authorize(request)
            authorized = True
            if self.refuse_repeated and "&" in request.META.get("QUERY_STRING", ""):
                refuse_repeated_parameters(request.GET)
            response = handler(request, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every error becomes the envelope, as DRF's handler does
            response = None
            if self.retry_lost_connection and connection_lost(exc):
                # Authenticated and counted once: only the handler runs again, on a new connection.
                logger.warning("database connection lost mid-request; serving it again path=%s error=%s",
                               request.path, str(exc).strip()[:200])
                connections[DEFAULT_DB_ALIAS].close()
                try:
                    if not authorized:
                        self._authorize(request)
                    response = handler(request, *args, **kwargs)
                except Exception as again:  # noqa: BLE001
                    exc = again
            if response is None:
                response = api_error_response(exc)
        response["Allow"] = ", ".join(self.allowed_methods)  # as DRF's finalize_response sets it
        return response

    def _authorize(self, request) -> None:
        """What DRF's initial() does for these views, in its order: authenticate, check the scope, count the
        request against the tenant's limit."""
        ApiKeyAuthentication().authenticate(request)
        HasApiScope().has_permission(request, self)
        throttle = TenantRateThrottle()
        if not throttle.allow_request(request, self):
            self.throttled(request, throttle.wait())

