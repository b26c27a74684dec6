"""Property-based hostile input: random and malicious bodies, fields and headers never produce a 5xx, and the
database holds only valid rows afterwards."""

import json
from decimal import Decimal

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgets.services import budget_upsert
from usage.models import UsageEvent

NASTY_STRINGS = [
    "'; DROP TABLE usage_usageevent; --", "{{ settings.SECRET_KEY }}", "{% debug %}", "<script>alert(1)</script>",
    "\x00", "a\x00b", "\ud800", "../../etc/passwd", "${jndi:ldap://x}", "%00", "💸" * 50, "x" * 10_000,
    "' OR '1'='1", "\u202e", "NaN", "Infinity", "-1", "1e309",
]
FIELDS = ["model", "prompt_tokens", "completion_tokens", "latency_ms", "identified_risks", "project", "team",
          "session_id", "iteration_index", "event_id", "timestamp", "provider", "customer_id", "user_id",
          "feature_id", "status", "metadata"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=300), st.sampled_from(NASTY_STRINGS),
)
json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=20), children, max_size=5)), max_leaves=20)
events = st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, json_values)) | json_values
bodies = st.one_of(events, st.fixed_dictionaries({"events": st.lists(events, max_size=5)}), json_values)
HYPOTHESIS = settings(max_examples=150, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_only_valid_rows():
    for event in UsageEvent.objects.all():
        assert event.model.strip() and len(event.model) <= 200
        assert event.prompt_tokens >= 0 and event.completion_tokens >= 0 and event.latency_ms >= 0
        assert "\x00" not in event.model + event.team_name + event.project + event.session_id
        assert isinstance(event.identified_risks, list)
        assert event.status in ("ok", "error")


@HYPOTHESIS
@given(body=bodies)
def test_random_json_bodies_never_get_a_5xx(tenant, telemetry_key, body):
    response = Client().post("/v1/ingest", json.dumps(body), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code in (202, 400), response.content[:500]
    assert "error" in response.json() or response.status_code == 202
    assert_only_valid_rows()


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/v1/ingest"), ("post", "/v1/teams/budgets"), ("patch", "/v1/teams/budgets/ops"), ("post", "/v1/keys"),
    ("post", "/v1/webhooks"),
])
def test_absurdly_nested_json_is_a_400_on_every_endpoint(tenant, admin_key, method, path):
    budget_upsert(tenant=tenant, team_name="ops", monthly_budget_usd=Decimal("10"))
    body = "[" * 100_000 + "]" * 100_000
    response = getattr(Client(), method)(path, body, content_type="application/json",
                                         HTTP_AUTHORIZATION=f"Bearer {admin_key}")
    assert response.status_code == 400, response.content[:300]
    assert "nested too deeply" in response.json()["error"]["message"]


def test_an_unknown_format_is_a_406_not_a_404(tenant, admin_key):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {admin_key}")
    response = client.get("/v1/teams/budgets", {"format": "xml"})
    assert response.status_code == 406
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "xml" in response.json()["error"]["message"]
    assert client.get("/v1/teams/budgets", {"format": "json"}).status_code == 200


@HYPOTHESIS
@given(raw=st.binary(max_size=2000))
def test_random_bytes_never_get_a_5xx(tenant, telemetry_key, raw):
    response = Client().post("/v1/ingest", raw, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code in (202, 400)
    assert_only_valid_rows()


@HYPOTHESIS
@given(header=st.text(max_size=500))
def test_random_authorization_headers_get_401(header):
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        header = header.encode("utf-8").decode("latin-1")
    response = Client().get("/v1/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("value", NASTY_STRINGS[:4])
def test_injection_text_in_a_valid_field_is_stored_verbatim(tenant, telemetry_key, value, recording):
    body = {"model": "gpt-4o", "team": value, "project": value, "session_id": value, "prompt_tokens": 10}
    response = Client().post("/v1/ingest", json.dumps(body), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code == 202
    recording()
    event = UsageEvent.objects.get(tenant=tenant)
    assert (event.team.name, event.project, event.session_id) == (value, value, value)


BUDGET_FIELDS = ["team", "monthly_budget_usd", "alert_threshold_pct", "hard_stop"]
budget_bodies = st.one_of(
    st.fixed_dictionaries({}, optional=dict.fromkeys(BUDGET_FIELDS, json_values)),
    st.fixed_dictionaries({"team": st.text(min_size=1, max_size=120) | st.sampled_from(NASTY_STRINGS),
                           "monthly_budget_usd": st.one_of(
                               st.integers(min_value=-(10**20), max_value=10**20),
                               st.floats(allow_nan=False, allow_infinity=False),
                               st.decimals(allow_nan=False, allow_infinity=False).map(str))}),
    json_values,
)


def assert_only_valid_budgets():
    from budgets.models import TeamBudget

    for budget in TeamBudget.objects.select_related("team"):
        assert 0 < budget.monthly_budget_usd <= 10_000_000
        assert 1 <= budget.alert_threshold_pct <= 100
        assert budget.team.name.strip() and "\x00" not in budget.team.name and len(budget.team.name) <= 100


@pytest.fixture
def unlimited_admin_key(tenant):
    """Hundreds of generated requests in a minute: lift the admin rate limit (0 = unlimited) before any request."""
    from tests.conftest import make_key

    tenant.admin_rate_limit_per_minute = 0
    tenant.save()
    return make_key(tenant, "admin", "fuzz")


@HYPOTHESIS
@given(body=budget_bodies, method=st.sampled_from(["post", "patch"]))
def test_random_budget_writes_never_get_a_5xx(unlimited_admin_key, body, method):
    admin_key = unlimited_admin_key
    client = Client(HTTP_AUTHORIZATION=f"Bearer {admin_key}")
    path = "/v1/teams/budgets" if method == "post" else "/v1/teams/budgets/some-team"
    response = getattr(client, method)(path, json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 201, 400, 404), response.content[:500]
    if response.status_code >= 400:
        assert response.json()["error"]["type"] in ("invalid_request_error", "not_found_error")
    assert_only_valid_budgets()


@HYPOTHESIS
@given(session_id=st.text(max_size=300), limit=st.one_of(st.text(max_size=40), st.floats().map(repr)),
       team=st.none() | st.text(max_size=150))
def test_random_budget_checks_answer_200_or_a_clear_400(tenant, telemetry_key, session_id, limit, team):
    from urllib.parse import quote

    query = f"session_id={quote(session_id, safe='')}&limit_usd={quote(limit, safe='')}"
    if team is not None:
        query += f"&team={quote(team, safe='')}"
    response = Client().get(f"/v1/budget-check?{query}", HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code in (200, 400), response.content[:500]
    body = response.json()
    if response.status_code == 200:
        assert isinstance(body["spent_usd"], (int, float)) and isinstance(body["limit_usd"], (int, float))
    else:
        assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("name", ["'; DROP TABLE usage_usageevent; --", "{{ settings.SECRET_KEY }}",
                                  "<script>alert(1)</script>"])
def test_injection_text_in_a_team_name_is_shown_verbatim_and_escaped(tenant, admin_key, name):
    from django.conf import settings as django_settings
    from django.contrib.auth import get_user_model

    from tenants.models import Membership
    from tenants.services import membership_set

    client = Client(HTTP_AUTHORIZATION=f"Bearer {admin_key}")
    response = client.post("/v1/teams/budgets", json.dumps({"team": name, "monthly_budget_usd": 10}),
                           content_type="application/json")
    assert response.status_code == 201 and response.json()["team"] == name
    user = get_user_model().objects.create_user("escaper", password="pw-escaper-123456")
    membership_set(tenant=tenant, user=user, role=Membership.Role.OWNER)
    page = Client()
    page.force_login(user)
    html = page.get("/budgets/").content.decode()
    from django.utils.html import escape

    assert escape(name) in html
    assert "<script>alert(1)</script>" not in html
    if len(django_settings.SECRET_KEY) >= 20:  # a one-letter test key would match any page
        assert django_settings.SECRET_KEY not in html


def test_the_django_admin_never_shows_a_key_hash(tenant, admin_key):
    from django.contrib.auth import get_user_model

    from tenants.keys import hash_key
    from tenants.models import ApiKey

    get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123456")
    client = Client()
    client.login(username="root", password="pw-root-123456")
    key = ApiKey.objects.get(key_hash=hash_key(admin_key))
    for path in ("/admin/tenants/apikey/", f"/admin/tenants/apikey/{key.pk}/change/"):
        html = client.get(path).content.decode()
        assert key.prefix in html
        assert key.key_hash not in html and admin_key not in html


def test_the_django_admin_lists_invitations_without_their_token_or_its_hash(tenant):
    from django.contrib.auth import get_user_model

    from tenants.models import Invitation
    from tenants.services import invitation_create

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123456")
    _, raw_token = invitation_create(tenant=tenant, role="admin", email="nina@example.com", created_by=root)
    invitation = Invitation.objects.get()
    client = Client()
    client.login(username="root", password="pw-root-123456")
    for path in ("/admin/tenants/invitation/", f"/admin/tenants/invitation/{invitation.pk}/change/"):
        response = client.get(path)
        assert response.status_code == 200
        html = response.content.decode()
        assert "nina@example.com" in html
        assert raw_token not in html and invitation.token_hash not in html
    response = client.post("/admin/tenants/invitation/", {"action": "revoke", "_selected_action": [invitation.pk]})
    assert response.status_code == 302
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    assert Client().get(f"/invitations/{raw_token}/").status_code == 404
