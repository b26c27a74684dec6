"""Pages of the tenants app (sign-in, tenant switcher, Settings → API keys, Members, Webhooks) and the page
helpers every app's views share: who may see a page, who may write, full page or htmx fragment."""

import functools

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from agentwatch_site.errors import ApiError
from tenants.forms import ApiKeyCreateForm, MemberAddForm, MemberRoleForm, ThrottledLoginForm, WebhookCreateForm
from tenants.middleware import SESSION_TENANT_KEY
from tenants.models import ApiKey, Membership, WebhookDelivery, WebhookEndpoint
from tenants.selectors import api_key_list, get_for_tenant_or_404, membership_list
from tenants.services import api_key_create, api_key_revoke, membership_add, membership_change_role, membership_remove
from tenants.webhooks import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_list,
    webhook_endpoint_update,
    webhook_test_send,
)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# --- Page helpers shared by tenants, usage and budgets views ----------------------------------------------

def member_required(view=None, *, owner_only: bool = False):
    """Signed-in member of a tenant. Writes (any unsafe method) need owner/admin; viewers get the 403 page.
    `owner_only` pages refuse admins and viewers alike, for reading too."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if request.tenant is None:
                return render(request, "tenants/no_tenant.html", status=403)
            if owner_only and request.membership.role != Membership.Role.OWNER:
                raise PermissionDenied
            if request.method not in SAFE_METHODS and not request.membership.can_write:
                raise PermissionDenied
            return func(request, *args, **kwargs)

        return vary_on_headers("HX-Request")(wrapper)

    return decorate(view) if view is not None else decorate


def render_page(request, template: str, context: dict, *, fragment: str | None = None, status: int = 200):
    """The full page, or only `fragment` when htmx asks (the same view serves both, as django-htmx shows)."""
    use_fragment = fragment is not None and request.htmx and not request.htmx.boosted
    return render(request, fragment if use_fragment else template, context, status=status)


def safe_next(request, fallback: str = "/") -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                   require_https=request.is_secure()):
        return target
    return fallback


# --- Sign-in, sign-out, tenant switcher --------------------------------------------------------------------

class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    authentication_form = ThrottledLoginForm
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


@require_POST
def tenant_switch(request):
    if not request.user.is_authenticated:
        return redirect_to_login("/")
    try:
        tenant_id = int(request.POST.get("tenant_id", ""))
    except ValueError:
        tenant_id = None
    membership = next((m for m in request.memberships if m.tenant_id == tenant_id), None)
    if membership is None:
        raise PermissionDenied
    request.session[SESSION_TENANT_KEY] = membership.tenant_id
    return redirect(safe_next(request, reverse("overview")))


# --- Settings → API keys -----------------------------------------------------------------------------------

@member_required
def api_keys(request):
    form = ApiKeyCreateForm(request.POST or None)
    created = raw_key = None
    if request.method == "POST" and form.is_valid():
        created, raw_key = api_key_create(tenant=request.tenant, name=form.cleaned_data["name"],
                                          scope=form.cleaned_data["scope"], created_by=request.user)
        form = ApiKeyCreateForm()
    context = {"form": form, "keys": api_key_list(tenant=request.tenant), "created": created, "raw_key": raw_key,
               "active_nav": "settings", "settings_tab": "api-keys"}
    status = 400 if request.method == "POST" and form.errors else 200
    return render_page(request, "tenants/api_keys.html", context, fragment="tenants/_api_keys_panel.html",
                       status=status)


@member_required
@require_POST
def api_key_revoke_view(request, key_id: int):
    key = get_for_tenant_or_404(ApiKey, tenant=request.tenant, pk=key_id)
    api_key_revoke(key=key)
    if request.htmx:
        key = ApiKey.objects.select_related("created_by").get(pk=key.pk)
        return render(request, "tenants/_api_key_row.html", {"key": key})
    messages.success(request, f"Key {key.display} revoked.")
    return redirect("api-keys")


# --- Settings → Members (owners only) ----------------------------------------------------------------------

def _members_context(request, add_form=None, error=None):
    return {"members": membership_list(tenant=request.tenant), "add_form": add_form or MemberAddForm(),
            "roles": Membership.Role.choices, "member_error": error, "active_nav": "settings",
            "settings_tab": "members"}


@member_required(owner_only=True)
def members(request):
    form = MemberAddForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            membership_add(tenant=request.tenant, user=form.user, role=form.cleaned_data["role"])
            form = None
        else:
            status = 400
    return render_page(request, "tenants/members.html", _members_context(request, form),
                       fragment="tenants/_members_panel.html", status=status)


@member_required(owner_only=True)
@require_POST
def member_role(request, membership_id: int):
    membership = get_for_tenant_or_404(Membership, tenant=request.tenant, pk=membership_id)
    form = MemberRoleForm(request.POST)
    error, status = None, 200
    if not form.is_valid():
        error, status = "Choose owner, admin or viewer.", 400
    else:
        try:
            membership_change_role(membership=membership, role=form.cleaned_data["role"])
        except ApiError as exc:
            error, status = exc.message, 409
    if request.htmx:
        return render(request, "tenants/_members_panel.html", _members_context(request, error=error), status=status)
    if error:
        messages.error(request, error)
    return redirect("members")


@member_required(owner_only=True)
@require_POST
def member_remove(request, membership_id: int):
    membership = get_for_tenant_or_404(Membership, tenant=request.tenant, pk=membership_id)
    error, status = None, 200
    try:
        membership_remove(membership=membership)
    except ApiError as exc:
        error, status = exc.message, 409
    if request.htmx:
        return render(request, "tenants/_members_panel.html", _members_context(request, error=error), status=status)
    if error:
        messages.error(request, error)
    return redirect("members")


# --- Settings → Webhooks -----------------------------------------------------------------------------------

WEBHOOK_LOG_SHOWN = 50


def _webhooks_context(request, **extra) -> dict:
    endpoints = list(webhook_endpoint_list(tenant=request.tenant))
    deliveries = list(WebhookDelivery.objects.for_tenant(request.tenant).select_related("endpoint")
                      .order_by("-id")[:WEBHOOK_LOG_SHOWN])
    context = {"endpoints": endpoints, "deliveries": deliveries, "form": WebhookCreateForm(),
               "active_nav": "settings", "settings_tab": "webhooks"}
    context.update(extra)
    return context


@member_required
def webhooks(request):
    if request.method != "POST":
        return render_page(request, "tenants/webhooks.html", _webhooks_context(request),
                           fragment="tenants/_webhooks_panel.html")
    form = WebhookCreateForm(request.POST)
    created = secret = None
    if form.is_valid():
        try:
            created, secret = webhook_endpoint_create(
                tenant=request.tenant, url=form.cleaned_data["url"], description=form.cleaned_data["description"],
                event_types=form.cleaned_data["event_types"])
        except ApiError as exc:
            for field, messages_ in (exc.fields or {"url": [exc.message]}).items():
                form.add_error(field if field in form.fields else None, messages_)
    status = 400 if form.errors else 200
    context = _webhooks_context(request, form=form if form.errors else WebhookCreateForm(), created=created,
                                secret=secret)
    return render_page(request, "tenants/webhooks.html", context, fragment="tenants/_webhooks_panel.html",
                       status=status)


@member_required
@require_POST
def webhook_toggle(request, endpoint_id: int):
    endpoint = get_for_tenant_or_404(WebhookEndpoint, tenant=request.tenant, pk=endpoint_id)
    webhook_endpoint_update(endpoint=endpoint, enabled=not endpoint.enabled)
    if not request.htmx:
        return redirect("webhooks")
    return render(request, "tenants/_webhooks_panel.html", _webhooks_context(request))


@member_required
@require_POST
def webhook_delete(request, endpoint_id: int):
    endpoint = get_for_tenant_or_404(WebhookEndpoint, tenant=request.tenant, pk=endpoint_id)
    webhook_endpoint_delete(endpoint=endpoint)
    if not request.htmx:
        return redirect("webhooks")
    return render(request, "tenants/_webhooks_panel.html", _webhooks_context(request))


@member_required
@require_POST
def webhook_test(request, endpoint_id: int):
    """Sends a test event now and shows the outcome inline (and in the delivery log)."""
    endpoint = get_for_tenant_or_404(WebhookEndpoint, tenant=request.tenant, pk=endpoint_id)
    delivery = webhook_test_send(endpoint=endpoint)
    if not request.htmx:
        messages.info(request, f"Test event: {delivery.status}"
                               f"{f' (HTTP {delivery.response_code})' if delivery.response_code else ''}.")
        return redirect("webhooks")
    return render(request, "tenants/_webhooks_panel.html", _webhooks_context(request, tested=endpoint.pk,
                                                                             test_delivery=delivery))
