"""Pages of the tenants app (sign-in, tenant switcher, Settings → API keys, Members, Webhooks) and the page
helpers every app's views share: who may see a page, who may write, full page or htmx fragment."""

import functools
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from agentwatch_site.errors import ApiError, NotFound, json_error
from agentwatch_site.middleware import is_api_path
from tenants.forms import (
    ApiKeyCreateForm,
    InvitationCreateForm,
    InvitationSignupForm,
    MemberRoleForm,
    ThrottledLoginForm,
    WebhookCreateForm,
)
from tenants.middleware import SESSION_TENANT_KEY
from tenants.models import ApiKey, Invitation, Membership, WebhookDelivery, WebhookEndpoint
from tenants.selectors import (
    api_key_list,
    get_for_tenant_or_404,
    invitation_by_token,
    invitation_by_token_hash,
    invitation_pending_list,
    membership_list,
)
from tenants.services import (
    api_key_create,
    api_key_revoke,
    invitation_accept,
    invitation_accept_as_new_user,
    invitation_create,
    invitation_revoke,
    membership_change_role,
    membership_remove,
)
from tenants.webhooks import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_list,
    webhook_endpoint_update,
    webhook_test_send,
)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# --- Page helpers shared by tenants, usage and budgets views ----------------------------------------------

# The organisation a page was rendered for: htmx sends it as a header (hx-headers on <body>), plain forms as a
# hidden field. A request without either (an old page, a script) is served for the session's organisation.
PAGE_TENANT_HEADER = "X-AgentWatch-Tenant"
PAGE_TENANT_FIELD = "page_tenant"
BANNER_TARGET = "#page-banner"


def banner_response(request, message: str, *, status: int, link: str | None = None):
    """For htmx: `message` in the page's one error banner (app.js shows it), whatever the request targeted."""
    html = render_to_string("_banner.html", {"message": message, "link": link}, request=request)
    return reswap(retarget(HttpResponse(html, status=status), BANNER_TARGET), "innerHTML")


def _stale_tenant_response(request, page_tenant: str):
    """The page was rendered for another organisation than the session's (switched in another tab): act on
    neither. A stale live poll gets 286, which stops htmx polling."""
    rendered_for = next((m.tenant for m in request.memberships if str(m.tenant_id) == page_tenant), None)
    page_name = rendered_for.name if rendered_for else "another organisation"
    message = (f"This page shows {page_name}, but you have since switched to {request.tenant.name} "
               f"(in another tab or window). Nothing was changed. Reload the page to continue.")
    if request.htmx and not request.htmx.history_restore_request:
        status = 286 if request.method in SAFE_METHODS else 409
        return banner_response(request, message, status=status, link=_page_path(request))
    return render(request, "stale_page.html", {"message": message, "reload_url": _reload_url(request)},
                  status=409)


def _reload_url(request) -> str:
    """Where "Reload" goes from a refused request: the page it came from (a POST's URL may have no page)."""
    if request.method in SAFE_METHODS:
        return request.get_full_path()
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()},
                                                   require_https=request.is_secure()):
        return referer
    return settings.LOGIN_URL if request.path == settings.LOGIN_URL else "/"


def _page_path(request) -> str:
    """The path of the page an htmx request came from (HX-Current-URL, sent by the client): a path on this site,
    else "/" (django-htmx reduces https://host//evil.example/x to //evil.example/x, a link off the site)."""
    path = request.htmx.current_url_abs_path or "/"
    if path.startswith("/") and url_has_allowed_host_and_scheme(path, allowed_hosts={request.get_host()},
                                                                require_https=request.is_secure()):
        return path
    return "/"


def _page_tenant(request) -> str:
    value = request.headers.get(PAGE_TENANT_HEADER, "")
    if not value and request.method not in SAFE_METHODS:
        value = request.POST.get(PAGE_TENANT_FIELD, "")
    return value.strip()


def member_required(view=None, *, owner_only: bool = False):
    """Signed-in member of a tenant. Writes (any unsafe method) need owner/admin; viewers get the 403 page.
    `owner_only` pages refuse admins and viewers alike, for reading too. A request from a page rendered for
    another organisation than the session's is refused (see PAGE_TENANT_HEADER)."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return _sign_in_redirect(request)
            if request.tenant is None:
                return render(request, "tenants/no_tenant.html", status=403)
            page_tenant = _page_tenant(request)
            if page_tenant and page_tenant != str(request.tenant.pk):
                return _stale_tenant_response(request, page_tenant)
            if owner_only and request.membership.role != Membership.Role.OWNER:
                raise PermissionDenied("Only an owner of this organisation can do this. Ask an owner.")
            if request.method not in SAFE_METHODS and not request.membership.can_write:
                raise PermissionDenied("Viewers can see everything here but change nothing. Ask an owner or admin.")
            return func(request, *args, **kwargs)

        return vary_on_headers("HX-Request", "HX-History-Restore-Request")(wrapper)

    return decorate(view) if view is not None else decorate


def _sign_in_redirect(request):
    """htmx would swap the sign-in page into whatever element asked; the browser must go there instead, and
    come back to the page (not the fragment's URL) afterwards."""
    if request.htmx and not request.htmx.history_restore_request:
        back_to = _page_path(request)
        login_url = redirect_to_login(back_to)["Location"]
        return HttpResponseClientRedirect(login_url)
    return redirect_to_login(request.get_full_path())


def render_page(request, template: str, context: dict, *, fragment: str | None = None, status: int = 200):
    """The full page, or only `fragment` when htmx asks (the same view serves both, as django-htmx shows).
    History restore (Back after the cached page was evicted) swaps the answer into <body>: the full page."""
    use_fragment = (fragment is not None and request.htmx and not request.htmx.boosted
                    and not request.htmx.history_restore_request)
    return render(request, fragment if use_fragment else template, context, status=status)


def csrf_failure(request, reason: str = ""):
    """settings.CSRF_FAILURE_VIEW: a stale token (signed in or out in another tab, a page left open across a
    sign-in) says so and offers a reload, instead of Django's bare page or a misleading "not allowed"."""
    if is_api_path(request.path):
        return json_error(status=403, type="invalid_request_error", code="csrf_failed",
                          message="CSRF verification failed.")
    message = "This page is out of date (you may have signed in or out in another tab). Reload it and try again."
    if request.htmx:
        return banner_response(request, message, status=403, link=_page_path(request))
    return render(request, "stale_page.html", {"message": message, "reload_url": _reload_url(request)},
                  status=403)


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

    def get_redirect_url(self):
        """`next` back to the sign-in page itself would send a signed-in user round in a loop (Django refuses it with
        an error): they go to the default page instead."""
        url = super().get_redirect_url()
        if url and urlsplit(url).path == self.request.path:
            return ""
        return url


class LogoutView(auth_views.LogoutView):
    """Signing out is a POST (a link or a prefetch must not sign anyone out); /logout/ typed in the address bar
    gets a page with the button instead of an empty 405."""

    http_method_names = ["get", "post", "options"]

    def get(self, request, *args, **kwargs):
        return render(request, "registration/logout_confirm.html")

    def post(self, request, *args, **kwargs):
        # "Not you? Sign out" on an invitation: the link opened stays open for whoever signs in next.
        opened = request.session.get(INVITATION_SESSION_KEY)
        response = super().post(request, *args, **kwargs)
        if opened is not None:
            request.session[INVITATION_SESSION_KEY] = opened
        return response


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

def _members_context(request, invite_form=None, error=None, **extra):
    context = {"members": membership_list(tenant=request.tenant),
               "invitations": invitation_pending_list(tenant=request.tenant),
               "invite_form": invite_form or InvitationCreateForm(), "roles": Membership.Role.choices,
               "member_error": error, "active_nav": "settings", "settings_tab": "members"}
    context.update(extra)
    return context


@member_required(owner_only=True)
@require_safe
def members(request):
    """Members and pending invitations. People join only through an invitation link they accept themselves: no
    page looks accounts up by username or e-mail, so none tells whether one exists elsewhere on the instance."""
    return render_page(request, "tenants/members.html", _members_context(request),
                       fragment="tenants/_members_panel.html")


@member_required(owner_only=True)
@require_POST
def invitation_create_view(request):
    """The link is in this answer only: the token is stored as a hash, like an API key."""
    form = InvitationCreateForm(request.POST)
    if not form.is_valid():
        return render_page(request, "tenants/members.html", _members_context(request, form),
                           fragment="tenants/_members_panel.html", status=400)
    invitation, raw_token = invitation_create(tenant=request.tenant, role=form.cleaned_data["role"],
                                              email=form.cleaned_data["email"], created_by=request.user)
    link = request.build_absolute_uri(reverse("invitation", args=[raw_token]))
    if settings.HTTPS and link.startswith("http://"):
        # Served over TLS by a proxy this request did not say so through: the token must not travel in clear.
        link = "https://" + link.removeprefix("http://")
    context = _members_context(request, created_invitation=invitation, invitation_link=link)
    return render_page(request, "tenants/members.html", context, fragment="tenants/_members_panel.html")


@member_required(owner_only=True)
@require_POST
def invitation_revoke_view(request, invitation_id: int):
    invitation = get_for_tenant_or_404(Invitation, tenant=request.tenant, pk=invitation_id)
    invitation_revoke(invitation=invitation, revoked_by=request.user)
    if request.htmx:
        return render(request, "tenants/_members_panel.html", _members_context(request))
    messages.success(request, "Invitation revoked: its link no longer works.")
    return redirect("members")


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
    if error is None and membership.user_id == request.user.pk and membership.role != Membership.Role.OWNER:
        return _left_members_page(request, "You are no longer an owner of this organisation.")
    if request.htmx:
        return render(request, "tenants/_members_panel.html", _members_context(request, error=error), status=status)
    if error:
        messages.error(request, error)
    return redirect("members")


def _left_members_page(request, message: str):
    """The owner changed their own membership: Members (owner-only) is no longer theirs to see."""
    messages.info(request, message)
    if request.htmx:
        return HttpResponseClientRedirect("/")
    return redirect("/")


@member_required(owner_only=True)
@require_POST
def member_remove(request, membership_id: int):
    membership = get_for_tenant_or_404(Membership, tenant=request.tenant, pk=membership_id)
    error, status = None, 200
    try:
        membership_remove(membership=membership)
    except ApiError as exc:
        error, status = exc.message, 409
    if error is None and membership.user_id == request.user.pk:
        return _left_members_page(request, f"You left {request.tenant.name}.")
    if request.htmx:
        return render(request, "tenants/_members_panel.html", _members_context(request, error=error), status=status)
    if error:
        messages.error(request, error)
    return redirect("members")


# --- An invitation link (/invitations/<token>/), signed in or not ---------------------------------------------

def _invitation_not_found(request):
    """One answer for unknown, expired, revoked and used links alike: nothing tells them apart."""
    return render(request, "tenants/invitation_invalid.html", status=404)


# An opened link is kept in the session (the hash of its token, as the invitations table keeps it, and when it was
# opened): the page it leads to has an address without the token, so the token is not repeated in the address bar,
# history, Referer headers, the sign-in link's ?next= or the access log of later requests (as Django's
# password-reset link does). The forms name the invitation they show, so a second link opened in another tab
# cannot change what an Accept already on screen joins.
INVITATION_SESSION_KEY = "_invitation"
INVITATION_SESSION_SECONDS = 3600


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def invitation_page(request, token: str):
    """The link itself: remembers it in the session and leads to /invitations/accept/. (A form posted to the link,
    from a page opened before the token left the address, is answered here as there.)"""
    invitation = invitation_by_token(raw_token=token)
    if invitation is None:
        return _invitation_not_found(request)
    request.session[INVITATION_SESSION_KEY] = {"hash": invitation.token_hash, "opened": time.time()}
    if request.method == "POST":
        return _invitation_answer(request, invitation)
    return redirect("invitation-accept")


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def invitation_accept_page(request):
    """Signed in: the organisation and role, and Accept. Signed out: sign in and come back (the session keeps the
    link across signing in), or create an account, which accepts too. Accepting switches the session to the
    organisation joined."""
    held = request.session.get(INVITATION_SESSION_KEY)
    if not isinstance(held, dict) or not time.time() - held.get("opened", 0) <= INVITATION_SESSION_SECONDS:
        # Nothing opened in this browser lately (another browser, cookies blocked, an hour gone, signed in as
        # someone else): the link itself may well still work.
        return render(request, "tenants/invitation_open_link.html", status=404)
    invitation = invitation_by_token_hash(token_hash=str(held.get("hash", "")))
    if invitation is None:
        return _invitation_not_found(request)
    if request.method == "POST" and request.POST.get("invitation") != str(invitation.pk):
        # The form on screen was for another link, opened earlier in this browser: show the one it holds now.
        messages.warning(request, "Another invitation link was opened in this browser since: this is the one it "
                                  "holds now. Check it before accepting.")
        return redirect("invitation-accept")
    return _invitation_answer(request, invitation)


def _invitation_answer(request, invitation: Invitation):
    if request.user.is_authenticated:
        return _invitation_accept(request, invitation)
    return _invitation_sign_up(request, invitation)


def _invitation_accept(request, invitation: Invitation):
    if request.method != "POST":
        return render(request, "tenants/invitation.html", {"invitation": invitation})
    try:
        membership, joined = invitation_accept(invitation=invitation, user=request.user)
    except NotFound:
        return _invitation_not_found(request)
    request.session.pop(INVITATION_SESSION_KEY, None)
    request.session[SESSION_TENANT_KEY] = membership.tenant_id
    tenant_name, role = invitation.tenant.name, membership.get_role_display().lower()
    if joined:
        messages.success(request, f"You joined {tenant_name} as {role}.")
    else:
        messages.info(request, f"You are already a member of {tenant_name} ({role}); your role is unchanged.")
    return redirect("overview")


def _invitation_sign_up(request, invitation: Invitation):
    form = InvitationSignupForm(request.POST if request.method == "POST" else None,
                                initial={"email": invitation.email}, request=request)
    if form.is_bound and form.is_valid():
        try:
            user, membership = invitation_accept_as_new_user(
                invitation=invitation, username=form.cleaned_data["username"], email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"])
        except NotFound:
            return _invitation_not_found(request)
        except IntegrityError:  # the same username registered a moment ago
            form.add_error("username", "A user with that username already exists.")
        else:
            login(request, user)
            request.session.pop(INVITATION_SESSION_KEY, None)
            request.session[SESSION_TENANT_KEY] = membership.tenant_id
            messages.success(request, f"Welcome, {user.get_username()}: you joined {invitation.tenant.name} as "
                                      f"{membership.get_role_display().lower()}.")
            return redirect("overview")
    context = {"invitation": invitation, "form": form,
               "login_url": redirect_to_login(reverse("invitation-accept"))["Location"]}
    return render(request, "tenants/invitation.html", context, status=400 if form.errors else 200)


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
