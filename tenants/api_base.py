from rest_framework.views import APIView

from agentwatch_site.errors import RateLimited
from tenants.ratelimit import ADMIN, TELEMETRY, TenantRateThrottle


class TenantApi(APIView):
    """Base of every /v1 view: Bearer key auth sets request.tenant; scope and per-tenant rate limit checked."""

    required_scope = "admin"
    rate_limit_bucket = ADMIN
    throttle_classes = [TenantRateThrottle]

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
