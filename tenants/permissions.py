from rest_framework import exceptions, permissions

from tenants.models import ApiKey


class HasApiScope(permissions.BasePermission):
    """`required_scope = "telemetry"` admits any key; anything else needs an admin key."""

    def has_permission(self, request, view):
        key = getattr(request, "api_key", None)
        if key is None:
            return False
        required = getattr(view, "required_scope", ApiKey.Scope.ADMIN)
        if required == ApiKey.Scope.TELEMETRY or key.scope == ApiKey.Scope.ADMIN:
            return True
        raise exceptions.PermissionDenied(
            f"This endpoint needs an admin-scope API key; this key ({key.prefix}…) has scope {key.scope}.",
            code="insufficient_scope",
        )
