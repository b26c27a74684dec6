from django.urls import path

from tenants import api

urlpatterns = [
    path("me", api.MeApi.as_view(), name="api-me"),
]
