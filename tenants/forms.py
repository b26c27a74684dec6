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


# --- Failure counters (the shared cache): sign-in, and account creation from invitation links ----------------

def _failure_key(kind: str, *parts: str) -> str:
    return f"{kind}:{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:32]}"


def _failure_limits(request, kind: str, limit: int, per_name: dict[str, int] | None = None) -> dict[str, int]:
    """{cache key: limit}: one per `per_name` entry ({name: limit}, counted per name and client address), and the
    client address's own key — except behind an undeclared proxy, where every client shares its address and a limit per
    address alone would stop everyone at once (agentwatch_site.http.client_ip_is_a_proxys)."""
    ip = client_ip(request) if request is not None else "unknown"
    limits = {_failure_key(kind, name.strip().lower(), ip): name_limit
              for name, name_limit in (per_name or {}).items()}
    if request is None or not client_ip_is_a_proxys(request):
        limits[_failure_key(f"{kind}-ip", ip)] = limit
    return limits


def _any_limit_reached(limits: dict[str, int]) -> bool:
    try:
        counts = cache.get_many(list(limits))
    except Exception:
        logger.warning("failure throttle cache unavailable")
        return False
    return any(counts.get(key, 0) >= limit for key, limit in limits.items())


def _count_failures(keys) -> None:
    for key in keys:
        try:
            if not cache.add(key, 1, LOGIN_FAILURE_WINDOW_SECONDS):
                cache.incr(key)
        except ValueError:
            cache.set(key, 1, LOGIN_FAILURE_WINDOW_SECONDS)
        except Exception:
            logger.warning("failure throttle cache unavailable")


class LoginThrottle:
    """For a sign-in form: refuse a username from an address after LOGIN_MAX_FAILURES failed attempts, and any
    sign-in from an address after LOGIN_MAX_FAILURES_PER_ADDRESS, within LOGIN_FAILURE_WINDOW_SECONDS, before the
    password is even checked (so guessing stops paying). The address is the client's, through the trusted proxies
    (agentwatch_site.http.client_ip): counted per proxy address, anyone could lock anyone out."""

    throttled_message = "Too many failed sign-in attempts. Wait 15 minutes and try again."

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        limits = _failure_limits(self.request, "login-fail", LOGIN_MAX_FAILURES_PER_ADDRESS,
                                 per_name={username: LOGIN_MAX_FAILURES})
        if _any_limit_reached(limits):
            raise forms.ValidationError(self.throttled_message, code="throttled")
        try:
            return super().clean()
        except forms.ValidationError:
            _count_failures(limits)
            raise


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
        limits = _failure_limits(self.request, "signup-fail", SIGNUP_MAX_FAILURES_PER_ADDRESS) if self.is_bound else {}
        if _any_limit_reached(limits):
            self._errors, self.cleaned_data = ErrorDict(), {}
            self.add_error(None, forms.ValidationError(
                "Too many refused attempts to create an account. Wait 15 minutes and try again.", code="throttled"))
            return
        super().full_clean()
        if self._errors:
            _count_failures(limits)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices, label="Role")


class WebhookCreateForm(forms.Form):
    url = forms.URLField(max_length=500, label="URL", assume_scheme="https")
    description = forms.CharField(max_length=200, required=False, label="Description")
    event_types = forms.MultipleChoiceField(
        choices=WebhookEndpoint.EventType.choices, widget=forms.CheckboxSelectMultiple, label="Events",
        initial=list(WebhookEndpoint.EventType.values),
    )
