"""OpenAPI 3 for /v1: the Bearer scheme and the error envelope on every authenticated operation.
(DEFAULT_SCHEMA_CLASS points here, which also registers the authentication extension; the public routes
/v1/schema and /v1/docs are in agentwatch_site.api_docs.)"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

ERROR_TYPES = [
    "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "rate_limit_error",
    "api_error",
]


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "aw_live_<secret>",
            "description": "An API key: `Authorization: Bearer aw_live_…`. Telemetry keys may call /v1/ingest, "
                           "/v1/budget-check and /v1/me; everything else needs an admin key.",
        }


class ErrorEnvelopeSerializer(serializers.Serializer):
    class ErrorSerializer(serializers.Serializer):
        type = serializers.ChoiceField(choices=ERROR_TYPES)
        code = serializers.CharField(help_text="Machine-readable, e.g. validation_error, invalid_api_key.")
        message = serializers.CharField(help_text="Human-readable explanation.")
        fields = serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()), required=False,
            help_text="Validation errors only: messages per field (`events[3].model`).")
        request_id = serializers.CharField(help_text="Also in the X-Request-ID header and the server logs.")

    error = ErrorSerializer()


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorEnvelopeSerializer, description=description)


# Every operation behind an API key can answer these; views add their own (409, 413, …) with error_response().
ERROR_RESPONSES = {
    "400": "Invalid request: the message says what to fix; validation errors list `fields`.",
    "401": "Missing, malformed, unknown, revoked or expired API key (also: scheme other than Bearer).",
    "403": "This endpoint needs an admin-scope key.",
    "404": "No such object in this tenant (another tenant's objects are never found).",
    "429": "Rate limit for this tenant exceeded; retry after the Retry-After header's seconds.",
}


class AgentWatchAutoSchema(AutoSchema):
    """Adds the error envelope responses to every operation that authenticates with an API key, and names
    components after their view: STYLE.md nests an `OutputSerializer` in every view, which would otherwise all
    be called "Output" (TeamBudgetUpsertApi.InputSerializer → TeamBudgetUpsertInput)."""

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        # An empty query parameter means the same as an absent one (as an HTML GET form sends it).
        for parameter in (operation or {}).get("parameters", []):
            if parameter.get("in") == "query" and not parameter.get("required"):
                parameter["allowEmptyValue"] = True
        return operation

    def get_serializer_name(self, serializer, direction):
        cls = serializer.__class__
        parts = cls.__qualname__.split(".")
        if len(parts) == 1 or "<locals>" in parts:
            return super().get_serializer_name(serializer, direction)
        names = []
        for part in parts:
            for suffix in ("Serializer", "Api"):
                if part.endswith(suffix) and part != suffix:
                    part = part[: -len(suffix)]
            names.append(part)
        # "MeApi.OutputSerializer.TenantOutput" → "MeTenantOutput": an inner "Output" adds nothing.
        kept = [names[0]] + [name for name in names[1:-1] if name not in ("Output", "Input")] + [names[-1]]
        return "".join(kept)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response" or not self.view.get_authenticators():
            return responses
        for code, description in ERROR_RESPONSES.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    error_response(description), code, ["application/json"], direction
                )
        return responses
