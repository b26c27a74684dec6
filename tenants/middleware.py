from agentwatch_site.middleware import PROBE_PATHS
from tenants.selectors import memberships_for_user

SESSION_TENANT_KEY = "tenant_id"


class TenantMembershipMiddleware:
    """Pages: request.tenant and request.membership come from the signed-in user's memberships and the tenant
    chosen in the session (the tenant switcher), never from the URL or a form."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(("/v1/", "/static/", *PROBE_PATHS)):
            self._resolve(request)
        return self.get_response(request)

    @staticmethod
    def _resolve(request):
        request.memberships = []
        request.membership = None
        request.tenant = None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return
        memberships = memberships_for_user(user=user)
        request.memberships = memberships
        if not memberships:
            return
        chosen = request.session.get(SESSION_TENANT_KEY)
        membership = next((m for m in memberships if m.tenant_id == chosen), memberships[0])
        request.membership = membership
        request.tenant = membership.tenant
