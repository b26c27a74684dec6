from django.urls import path

from tenants import api

urlpatterns = [
    path("me", api.MeApi.as_view(), name="api-me"),
    path("keys", api.ApiKeyListCreateApi.as_view(), name="api-key-list"),
    path("keys/<str:key>", api.ApiKeyRevokeApi.as_view(), name="api-key-detail"),
]
