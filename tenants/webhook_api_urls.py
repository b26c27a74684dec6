from django.urls import path

from tenants import webhook_api

urlpatterns = [
    path("webhooks", webhook_api.WebhookListCreateApi.as_view(), name="api-webhooks"),
    path("webhooks/<int:endpoint_id>", webhook_api.WebhookDetailApi.as_view(), name="api-webhook"),
    path("webhooks/<int:endpoint_id>/test", webhook_api.WebhookTestApi.as_view(), name="api-webhook-test"),
    path("webhooks/<int:endpoint_id>/deliveries", webhook_api.WebhookDeliveryListApi.as_view(),
         name="api-webhook-deliveries"),
]
