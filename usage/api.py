from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from agentwatch_site.errors import ApiError
from tenants.api_base import TelemetryApi
from tenants.services import rejected_telemetry_count
from usage.services.ingest import event_batch_ingest, parse_ingest_body, parse_json_body, recorder_wake


class IngestEventDoc(serializers.Serializer):
    """Documentation of one event; validation lives in usage.services.ingest (same rules)."""

    model = serializers.CharField(max_length=200, help_text="Model name, e.g. gpt-4o. Required.")
    prompt_tokens = serializers.IntegerField(min_value=0, max_value=10**9, required=False)
    completion_tokens = serializers.IntegerField(min_value=0, max_value=10**9, required=False)
    latency_ms = serializers.IntegerField(min_value=0, max_value=10**9, required=False)
    identified_risks = serializers.ListField(child=serializers.RegexField(r"^[A-Z][A-Z0-9_]{0,63}$"),
                                             required=False, max_length=32)
    project = serializers.CharField(max_length=200, required=False, allow_null=True)
    team = serializers.CharField(max_length=100, required=False, allow_null=True)
    session_id = serializers.CharField(max_length=200, required=False, allow_null=True)
    iteration_index = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    event_id = serializers.CharField(max_length=100, required=False, allow_null=True,
                                     help_text="Idempotency key: the same id twice is one event.")
    timestamp = serializers.DateTimeField(required=False, allow_null=True,
                                          help_text="ISO 8601; default receipt time; at most 5 minutes ahead.")
    provider = serializers.CharField(max_length=50, required=False, allow_null=True)
    customer_id = serializers.CharField(max_length=200, required=False, allow_null=True)
    user_id = serializers.CharField(max_length=200, required=False, allow_null=True)
    feature_id = serializers.CharField(max_length=200, required=False, allow_null=True)
    status = serializers.ChoiceField(choices=["ok", "error"], required=False, allow_null=True)
    metadata = serializers.DictField(required=False, allow_null=True, help_text="At most 4 KB as JSON.")


class IngestBatchDoc(serializers.Serializer):
    events = IngestEventDoc(many=True, help_text="1 to 1,000 events; one invalid event rejects the batch.")


class IngestApi(TelemetryApi):
    """POST /v1/ingest: one event exactly as aw-sdk sends it, or {"events": [...]}. 202 once durable."""

    class OutputSerializer(serializers.Serializer):
        accepted = serializers.IntegerField()
        event_ids = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        request={"application/json": inline_serializer(
            "IngestBody", fields={"event": IngestEventDoc(required=False), "batch": IngestBatchDoc(required=False)}
        )},
        responses={202: OutputSerializer},
        examples=[
            OpenApiExample("aw-sdk event", request_only=True, value={
                "model": "gpt-4o", "latency_ms": 812, "prompt_tokens": 1200, "completion_tokens": 300,
                "identified_risks": ["PII_EMAIL"], "project": "checkout-service", "team": "payments-eng",
                "session_id": "ci-run-123", "iteration_index": 4}),
        ],
        tags=["telemetry"],
    )
    def post(self, request):
        received_at = timezone.now()
        try:
            events = parse_ingest_body(parse_json_body(request.body), now=received_at)
        except ApiError:
            rejected_telemetry_count(tenant=request.tenant, reason="invalid")
            raise
        event_ids = event_batch_ingest(tenant=request.tenant, events=events, received_at=received_at)
        recorder_wake()
        return Response({"accepted": len(event_ids), "event_ids": event_ids}, status=status.HTTP_202_ACCEPTED)
