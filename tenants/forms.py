import hashlib
import logging

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.cache import cache
from django.forms.utils import ErrorDict

from agentwatch_site.http import client_ip, client_ip_is_a_proxys
from tenants.models import ApiKey, Membership, WebhookEndpoint

logger = logging.getLogger(__name__)

LOGIN_MAX_FAILURES = getattr(settings, "LOGIN_MAX_FAILURES", 5)
# Failures from one address across all usernames (password spraying), in the same window.
LOGIN_MAX_FAILURES_PER_ADDRESS = getattr(settings, "LOGIN_MAX_FAILURES_PER_ADDRESS", 50)
LOGIN_FAILURE_WINDOW_SECONDS = getattr(settings, "LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60)


def login_failure_key(username: str, ip: str) -> str:
    digest = hashlib.sha256(f"{username.strip().lower()}|{ip}".encode()).hexdigest()[:32]
    return f"login-fail:{digest}"


def _address_failure_key(ip: str) -> str:
    return f"login-fail-ip:{hashlib.sha256(ip.encode()).hexdigest()[:32]}"


class LoginThrottle:
    """For a sign-in form: refuse a username from an address after LOGIN_MAX_FAILURES failed attempts, and any
    sign-in from an address after LOGIN_MAX_FAILURES_PER_ADDRESS, within LOGIN_FAILURE_WINDOW_SECONDS, before the
    password is even checked (so guessing stops paying). The address is the client's, through the trusted proxies
    (agentwatch_site.http.client_ip): counted per proxy address, anyone could lock anyone out."""

    throttled_message = "Too many failed sign-in attempts. Wait 15 minutes and try again."

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request) if self.request is not None else "unknown"
        keys = {login_failure_key(username, ip): LOGIN_MAX_FAILURES}
        if self.request is None or not client_ip_is_a_proxys(self.request):
            # Behind an undeclared proxy every client shares its address: counted per address alone, 50 failures
            # by anyone would lock everyone out.
            keys[_address_failure_key(ip)] = LOGIN_MAX_FAILURES_PER_ADDRESS
        try:
            failures = cache.get_many(list(keys))
        except Exception:
            logger.warning("login throttle cache unavailable")
            failures = {}
        if any(failures.get(key, 0) >= limit for key, limit in keys.items()):
            raise forms.ValidationError(self.throttled_message, code="throttled")
        try:
            return super().clean()
        except forms.ValidationError:
            for key in keys:
                self._count_failure(key)
            raise

    @staticmethod
    def _count_failure(key: str) -> None:
        try:
            if not cache.add(key, 1, LOGIN_FAILURE_WINDOW_SECONDS):
                cache.incr(key)
        except ValueError:
            cache.set(key, 1, LOGIN_FAILURE_WINDOW_SECONDS)
        except Exception:
            logger.warning("login throttle cache unavailable")


class ThrottledLoginForm(LoginThrottle, AuthenticationForm):
    """The dashboard's sign-in form."""


class ThrottledAdminLoginForm(LoginThrottle, AdminAuthenticationForm):
    """The Django admin's sign-in form (staff and superusers, who see every tenant), under the same throttle."""


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name", help_text="Where the key is used, e.g. checkout-agent.")
    scope = forms.ChoiceField(
        choices=[(ApiKey.Scope.TELEMETRY, "Telemetry — ingest and budget-check (recommended for agents)"),
                 (ApiKey.Scope.ADMIN, "Admin — everything, for scripts managing budgets")],
        initial=ApiKey.Scope.TELEMETRY, widget=forms.RadioSelect, label="Scope",
    )

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the key a name.")
        return name


class InvitationCreateForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.VIEWER, label="Role")
    # A note for the owner's list only: never looked up, so no answer tells whether such an account exists.
    email = forms.EmailField(max_length=254, required=False, label="E-mail (optional)",
                             help_text="Whom the link is for, as a note in the list below.")


# Refused account creations from one address in LOGIN_FAILURE_WINDOW_SECONDS: "that username already exists" tells
# whether an account exists, so an owner with a link of their own must not be able to try names without end.
SIGNUP_MAX_FAILURES_PER_ADDRESS = getattr(settings, "SIGNUP_MAX_FAILURES_PER_ADDRESS", 20)


class InvitationSignupForm(UserCreationForm):
    """A new account from an invitation link: Django's own form (username unique ignoring case, the password twice
    through AUTH_PASSWORD_VALIDATORS), with an e-mail that is stored, never checked against other accounts.
    Throttled per client address: after SIGNUP_MAX_FAILURES_PER_ADDRESS refused attempts it checks nothing."""

    email = forms.EmailField(max_length=254, label="E-mail")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request

    def full_clean(self):
        key = _signup_failure_key(client_ip(self.request) if self.request is not None else "unknown")
        if self.request is not None and client_ip_is_a_proxys(self.request):
            key = None  # every client shares the proxy's address (see LoginThrottle)
        if self.is_bound and key is not None:
            try:
                failures = cache.get(key, 0)
            except Exception:
                logger.warning("sign-up throttle cache unavailable")
                failures = 0
            if failures >= SIGNUP_MAX_FAILURES_PER_ADDRESS:
                self._errors, self.cleaned_data = ErrorDict(), {}
                self.add_error(None, forms.ValidationError(
                    "Too many refused attempts to create an account. Wait 15 minutes and try again.",
                    code="throttled"))
                return
        super().full_clean()
        if self.is_bound and self._errors and key is not None:
            LoginThrottle._count_failure(key)


def _signup_failure_key(ip: str) -> str:
    return f"signup-fail-ip:{hashlib.sha256(ip.encode()).hexdigest()[:32]}"


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices, label="Role")


class WebhookCreateForm(forms.Form):
    url = forms.URLField(max_length=500, label="URL", assume_scheme="https")
    description = forms.CharField(max_length=200, required=False, label="Description")
    event_types = forms.MultipleChoiceField(
        choices=WebhookEndpoint.EventType.choices, widget=forms.CheckboxSelectMultiple, label="Events",
        initial=list(WebhookEndpoint.EventType.values),
    )
