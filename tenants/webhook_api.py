from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agentwatch_site.pagination import paginated_response
from agentwatch_site.serializers import (
    PAGE_PARAMETERS,
    NoUnknownFieldsMixin,
    StrictBooleanField,
    StrictCharField,
    page_of,
)
from tenants.api_base import TenantApi
from tenants.models import WebhookDelivery, WebhookEndpoint
from tenants.selectors import get_for_tenant_or_404
from tenants.webhooks import (
    EVENT_TYPES,
    webhook_delivery_list,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_list,
    webhook_endpoint_update,
    webhook_test_send,
)


class EndpointOutput(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.URLField()
    description = serializers.CharField()
    event_types = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField()
    failing_since = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class EndpointCreatedOutput(EndpointOutput):
    secret = serializers.CharField(help_text="Shown once: store it to verify signatures.")


class DeliveryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    event_id = serializers.CharField()
    event_type = serializers.CharField()
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices)
    attempts = serializers.IntegerField()
    response_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


class WebhookListCreateApi(TenantApi):
    class InputSerializer(NoUnknownFieldsMixin, serializers.Serializer):
        url = serializers.URLField(max_length=500)
        description = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
        event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES), min_length=1,
                                            max_length=len(EVENT_TYPES))
        enabled = StrictBooleanField(required=False, default=True)

    @extend_schema(responses=page_of("WebhookEndpointPage", EndpointOutput(many=True)), tags=["webhooks"],
                   operation_id="webhooks_list")
    def get(self, request):
        endpoints = webhook_endpoint_list(tenant=request.tenant)
        return Response({"results": EndpointOutput(endpoints, many=True).data, "next": None})

    @extend_schema(request=InputSerializer, responses={201: EndpointCreatedOutput}, tags=["webhooks"])
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(tenant=request.tenant, **data.validated_data)
        endpoint.secret = secret
        return Response(EndpointCreatedOutput(endpoint).data, status=201)


class WebhookDetailApi(TenantApi):
    class UpdateSerializer(NoUnknownFieldsMixin, serializers.Serializer):
        url = serializers.URLField(max_length=500, required=False)
        description = StrictCharField(max_length=200, required=False, allow_blank=True)
        event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES), min_length=1,
                                            max_length=len(EVENT_TYPES), required=False)
        enabled = StrictBooleanField(required=False)

    @extend_schema(responses=EndpointOutput, tags=["webhooks"])
    def get(self, request, endpoint_id: int):
        endpoint = get_for_tenant_or_404(WebhookEndpoint, tenant=request.tenant, pk=endpoint_id)
        return Response(EndpointOutput(endpoint).data)

    @extend_schema(request=UpdateSerializer, responses=EndpointOutput, tags=["webhooks"])
    def patch(self, request, endpoint_id: int):
        endpoint = get_for_tenant_or_404(WebhookEndpoint, tenant=request.tenant, pk=endpoint_id)
        data = self.UpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_update(endpoint=endpoint, **data.validated_data)
        return Response(EndpointOutput(endpoint).data)

    @extend_schema(responses={204: None}, tags=["webhooks"])
    def delete(self, request, endpoint_id: int):
        endpoint = get_for_tenant_or_404(WebhookEndpoint, tenant=request.tenant, pk=endpoint_id)
        webhook_endpoint_delete(endpoint=endpoint)
        return Response(status=204)


class WebhookTestApi(TenantApi):
    """Sends a `test` event to the endpoint now (one attempt, no retries) and answers with the delivery."""

    @extend_schema(request=None, responses=DeliveryOutput, tags=["webhooks"])
    def post(self, request, endpoint_id: int):
        endpoint = get_for_tenant_or_404(WebhookEndpoint, tenant=request.tenant, pk=endpoint_id)
        delivery = webhook_test_send(endpoint=endpoint)
        return Response(DeliveryOutput(delivery).data)


class WebhookDeliveryListApi(TenantApi):
    @extend_schema(parameters=PAGE_PARAMETERS, responses=page_of("WebhookDeliveryPage", DeliveryOutput(many=True)),
                   tags=["webhooks"])
    def get(self, request, endpoint_id: int):
        endpoint = get_for_tenant_or_404(WebhookEndpoint, tenant=request.tenant, pk=endpoint_id)
        return paginated_response(request, webhook_delivery_list(endpoint=endpoint), DeliveryOutput, order=("-id",))
