from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agentwatch_site.pagination import paginated_response
from agentwatch_site.serializers import PAGE_PARAMETERS, page_of
from tenants.api_base import TenantApi
from tenants.selectors import get_for_tenant_or_404
from usage.models import Anomaly
from usage.services.anomalies import anomaly_acknowledge, anomaly_list

# "closed" is what the issue calls an acknowledged anomaly.
STATUS_FILTERS = {"open": Anomaly.Status.OPEN, "acknowledged": Anomaly.Status.ACKNOWLEDGED,
                  "closed": Anomaly.Status.ACKNOWLEDGED}


class AnomalyOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Anomaly.Kind.choices)
    status = serializers.ChoiceField(choices=Anomaly.Status.choices)
    team = serializers.CharField(source="team.name", allow_null=True, default=None)
    session_id = serializers.CharField(allow_null=True)
    day = serializers.DateField(allow_null=True)
    details = serializers.JSONField()
    count = serializers.IntegerField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.CharField(allow_null=True)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["session_id"] = data["session_id"] or None
        data["acknowledged_by"] = data["acknowledged_by"] or None
        return data


class AnomalyListApi(TenantApi):
    class FilterSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=Anomaly.Kind.values, required=False)
        team = serializers.CharField(max_length=100, required=False)
        session_id = serializers.CharField(max_length=200, required=False)
        session = serializers.CharField(max_length=200, required=False)
        status = serializers.ChoiceField(choices=list(STATUS_FILTERS), required=False)

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, enum=Anomaly.Kind.values),
            OpenApiParameter("team", str),
            OpenApiParameter("session_id", str, description="Also accepted as `session`."),
            OpenApiParameter("status", str, enum=list(STATUS_FILTERS), description="`closed` = acknowledged."),
            *PAGE_PARAMETERS,
        ],
        responses=page_of("AnomalyPage", AnomalyOutput(many=True)), tags=["anomalies"], operation_id="anomalies_list",
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        anomalies = anomaly_list(
            tenant=request.tenant, kind=data.get("kind"), team=data.get("team"),
            session_id=data.get("session_id") or data.get("session"),
            status=STATUS_FILTERS[data["status"]] if data.get("status") else None,
        )
        return paginated_response(request, anomalies, AnomalyOutput, order=("-id",))


class AnomalyAcknowledgeApi(TenantApi):
    @extend_schema(request=None, responses=AnomalyOutput, tags=["anomalies"])
    def post(self, request, anomaly_id: int):
        anomaly = get_for_tenant_or_404(Anomaly, tenant=request.tenant, pk=anomaly_id)
        anomaly = anomaly_acknowledge(anomaly=anomaly, by=f"api key {request.api_key.display}")
        return Response(AnomalyOutput(anomaly).data)
