from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from agentwatch_site.errors import Conflict, NotFound, validation_error
from agentwatch_site.openapi import error_response
from agentwatch_site.serializers import NoUnknownFieldsMixin, StrictCharField
from tenants.api_base import TenantApi
from tenants.keys import DISPLAY_PREFIX_LENGTH, KEY_PREFIX
from tenants.models import ApiKey
from tenants.ratelimit import ADMIN, TELEMETRY, rate_limit_peek
from tenants.selectors import api_key_is_active, api_key_list, get_for_tenant_or_404
from tenants.services import api_key_create, api_key_revoke


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


class ApiKeyOutput(serializers.Serializer):
    """A key as listed: never its hash, and its secret only in the creation response."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's first characters (aw_live_AbCd), for recognising it.")
    scope = serializers.ChoiceField(choices=ApiKey.Scope.choices)
    active = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="Updated at most once a minute.")
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)

    def get_active(self, key) -> bool:
        return api_key_is_active(key)


class ApiKeyCreatedOutput(ApiKeyOutput):
    key = serializers.CharField(help_text="The full secret. Shown once, in this response only: store it now.")


class ApiKeyListCreateApi(TenantApi):
    """GET /v1/keys lists the tenant's keys; POST /v1/keys creates one and returns its secret once."""

    class InputSerializer(NoUnknownFieldsMixin, serializers.Serializer):
        name = StrictCharField(max_length=100)
        scope = serializers.ChoiceField(choices=ApiKey.Scope.choices)
        expires_at = serializers.DateTimeField(
            required=False, allow_null=True,
            help_text="Optional; must be in the future. A key created with an expiring key expires with it at the "
                      "latest: without expires_at it gets that key's expiry.")

        def validate_expires_at(self, value):
            if value is not None and value <= timezone.now():
                raise serializers.ValidationError("Must be in the future.")
            return value

    @extend_schema(
        operation_id="keys_list",
        responses={200: inline_serializer("ApiKeyList", fields={"results": ApiKeyOutput(many=True)})},
        tags=["keys"],
    )
    def get(self, request):
        keys = api_key_list(tenant=request.tenant)
        return Response({"results": ApiKeyOutput(keys, many=True).data})

    @extend_schema(
        operation_id="keys_create",
        request=InputSerializer,
        responses={201: ApiKeyCreatedOutput},
        examples=[
            OpenApiExample("A telemetry key for CI", request_only=True,
                           value={"name": "ci-agents", "scope": "telemetry"}),
            OpenApiExample("An admin key that expires", request_only=True,
                           value={"name": "chargeback-script", "scope": "admin",
                                  "expires_at": "2027-01-01T00:00:00Z"}),
        ],
        tags=["keys"],
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = api_key_create(tenant=request.tenant, created_by_key=request.api_key, **data.validated_data)
        key.key = raw
        return Response(ApiKeyCreatedOutput(key).data, status=201)


class ApiKeyRevokeApi(TenantApi):
    """DELETE /v1/keys/{key}: revoke a key of this tenant by its id or prefix (idempotent)."""

    @extend_schema(
        operation_id="keys_revoke",
        parameters=[OpenApiParameter("key", str, OpenApiParameter.PATH,
                                     description="The key's id (42) or prefix (aw_live_AbCd).")],
        responses={200: ApiKeyOutput, 409: error_response("The prefix matches several keys: use the id.")},
        tags=["keys"],
    )
    def delete(self, request, key: str):
        return Response(ApiKeyOutput(api_key_revoke(key=_key_by_reference(request.tenant, key))).data)


def _key_by_reference(tenant, reference: str) -> ApiKey:
    reference = reference.strip().rstrip("…")
    if reference.isascii() and reference.isdigit() and len(reference) <= 18:
        return get_for_tenant_or_404(ApiKey, tenant=tenant, pk=int(reference))
    if reference.startswith(KEY_PREFIX) and len(reference) > DISPLAY_PREFIX_LENGTH:
        raise validation_error({"key": [f"Pass the key's id or prefix (its first {DISPLAY_PREFIX_LENGTH} "
                                        "characters), never the full secret."]})
    # A NUL can be in no prefix, and PostgreSQL refuses to compare text containing one.
    valid = reference and "\x00" not in reference
    matches = list(api_key_list(tenant=tenant).filter(prefix=reference)[:2]) if valid else []
    if len(matches) > 1:
        raise Conflict(f"Several keys start with {reference}; revoke by id instead.", code="ambiguous_prefix")
    if not matches:
        raise NotFound("No API key of this tenant has this id or prefix.")
    return matches[0]
