from django.urls import path

from usage import anomaly_api

urlpatterns = [
    path("anomalies", anomaly_api.AnomalyListApi.as_view(), name="api-anomalies"),
    path("anomalies/<int:anomaly_id>/ack", anomaly_api.AnomalyAcknowledgeApi.as_view(), name="api-anomaly-ack"),
]
