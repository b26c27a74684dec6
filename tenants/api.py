from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from tenants.api_base import TenantApi
from tenants.ratelimit import ADMIN, TELEMETRY, rate_limit_peek


class RateLimitOutput(serializers.Serializer):
    limit_per_minute = serializers.IntegerField(help_text="0 means unlimited.")
    used_this_minute = serializers.IntegerField()
    remaining_this_minute = serializers.IntegerField(allow_null=True)
    resets_in_seconds = serializers.IntegerField()


class MeApi(TenantApi):
    """The calling key's tenant, scope and rate limits. Open to both scopes; counted in the admin bucket."""

    required_scope = "telemetry"

    class OutputSerializer(serializers.Serializer):
        class TenantOutput(serializers.Serializer):
            name = serializers.CharField()
            slug = serializers.CharField()
            cost_mode = serializers.CharField()
            timezone = serializers.CharField()
            retention_days = serializers.IntegerField()

        class KeyOutput(serializers.Serializer):
            name = serializers.CharField()
            prefix = serializers.CharField()
            scope = serializers.CharField()
            created_at = serializers.DateTimeField()
            expires_at = serializers.DateTimeField(allow_null=True)

        tenant = TenantOutput()
        key = KeyOutput()
        scope = serializers.CharField()
        rate_limits = serializers.DictField(child=RateLimitOutput())

    @extend_schema(responses=OutputSerializer, tags=["account"])
    def get(self, request):
        tenant = request.tenant
        rate_limits = {}
        for bucket in (ADMIN, TELEMETRY):
            decision = rate_limit_peek(tenant=tenant, bucket=bucket)
            rate_limits[bucket] = {
                "limit_per_minute": decision.limit,
                "used_this_minute": decision.count,
                "remaining_this_minute": decision.remaining,
                "resets_in_seconds": decision.retry_after,
            }
        data = {
            "tenant": tenant,
            "key": request.api_key,
            "scope": request.api_key.scope,
            "rate_limits": rate_limits,
        }
        return Response(self.OutputSerializer(data).data)
