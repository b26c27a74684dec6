"""The telemetry endpoints are served without DRF (tenants.api_base.LeanDispatch): everything a client sees must
be what the DRF-dispatched endpoints give — authentication errors, scope, rate limits, wrong methods, the error
envelope and the JSON itself."""

from decimal import Decimal

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

from budgets.api import SessionBudgetCheckApi, TeamBudgetCheckApi
from budgets.services import budget_upsert
from tenants.models import Tenant
from tenants.services import api_key_create, api_key_revoke
from tests.tenants.test_authentication import assert_401
from usage.api import IngestApi

INGEST_BODY = {"model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 5, "session_id": "lean-1"}

# (method, path, body, scope the endpoint needs)
LEAN_ENDPOINTS = [
    ("post", "/v1/ingest", INGEST_BODY, "telemetry"),
    ("get", "/v1/budget-check?session_id=lean-1&limit_usd=2", None, "telemetry"),
    ("get", "/v1/teams/budget-check?team=search", None, "admin"),
]


def call(client: APIClient, method: str, path: str, body):
    if method == "post":
        return client.post(path, body, format="json")
    return client.get(path)


@pytest.fixture
def search_budget(tenant):
    budget, _ = budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("100.00"),
                              hard_stop=True)
    return budget


@pytest.mark.parametrize(("method", "path", "body", "scope"), LEAN_ENDPOINTS)
@pytest.mark.parametrize(("header", "code", "words"), [
    (None, "missing_authorization", "missing"),
    ("Token aw_live_abc", "invalid_auth_scheme", "bearer"),
    ("Bearer sk-live-abc", "malformed_api_key", "aw_"),
    ("Bearer aw_live_" + "x" * 40, "invalid_api_key", "unknown"),
])
@pytest.mark.django_db
def test_authentication_errors_are_the_same_401_as_elsewhere(method, path, body, scope, header, code, words):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    assert_401(call(client, method, path, body), code, words)


@pytest.mark.parametrize(("method", "path", "body", "scope"), LEAN_ENDPOINTS)
def test_a_revoked_key_is_refused(tenant, method, path, body, scope):
    key, raw = api_key_create(tenant=tenant, name="soon revoked", scope=scope)
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert call(client, method, path, body).status_code in (200, 202, 404)
    api_key_revoke(key=key)
    assert_401(call(client, method, path, body), "revoked_api_key", "revoked")


def test_a_telemetry_key_cannot_read_team_budgets(telemetry_api, search_budget):
    response = telemetry_api.get("/v1/teams/budget-check?team=search")
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "insufficient_scope")
    assert "admin-scope" in error["message"]


@pytest.mark.parametrize(("method", "path", "body", "scope"), LEAN_ENDPOINTS)
def test_the_tenant_rate_limit_applies_with_retry_after(tenant, method, path, body, scope):
    field = f"{scope}_rate_limit_per_minute"
    Tenant.objects.filter(pk=tenant.pk).update(**{field: 2})
    _, raw = api_key_create(tenant=tenant, name="limited", scope=scope)
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    statuses = [call(client, method, path, body).status_code for _ in range(3)]
    assert statuses[2] == 429 and 429 not in statuses[:2]
    response = call(client, method, path, body)
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert f"{2} {scope} requests per minute" in response.json()["error"]["message"]
    assert 1 <= int(response["Retry-After"]) <= 60


@pytest.mark.parametrize(("method", "path"), [("get", "/v1/ingest"), ("put", "/v1/budget-check"),
                                              ("delete", "/v1/teams/budget-check")])
def test_other_methods_get_the_405_envelope(admin_api, method, path):
    response = getattr(admin_api, method)(path)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_options_still_describes_the_endpoint(telemetry_api):
    response = telemetry_api.options("/v1/ingest")
    assert response.status_code == 200
    assert "POST" in response["Allow"]


@pytest.fixture
def through_drf(monkeypatch):
    """Serve the lean endpoints through DRF's own dispatch instead, for comparison."""
    def switch():
        for view in (IngestApi, SessionBudgetCheckApi, TeamBudgetCheckApi):
            monkeypatch.setattr(view, "lean_methods", frozenset())
    return switch


@pytest.mark.parametrize(("method", "path", "body", "api"), [
    ("post", "/v1/ingest", {**INGEST_BODY, "event_id": "lean-ü"}, "telemetry"),
    ("get", "/v1/budget-check?session_id=lean-1&limit_usd=1e-05&team=search", None, "telemetry"),
    ("get", "/v1/teams/budget-check?team=SEARCH", None, "admin"),
    # Errors: 400 with fields, 404 naming a team with U+2028 in it (JSONRenderer escapes it), 401, 403.
    ("get", "/v1/budget-check?session_id=&limit_usd=-1", None, "telemetry"),
    ("get", "/v1/teams/budget-check?team=a%E2%80%A8b", None, "admin"),
    ("get", "/v1/budget-check?session_id=x&limit_usd=1", None, "none"),
    ("get", "/v1/teams/budget-check?team=search", None, "telemetry"),
])
def test_answers_are_byte_for_byte_what_drf_dispatch_gives(telemetry_api, admin_api, search_budget, through_drf,
                                                           method, path, body, api):
    client = {"telemetry": telemetry_api, "admin": admin_api, "none": APIClient()}[api]
    headers = {"HTTP_X_REQUEST_ID": "compare-request-0001"}

    def answer():
        if method == "post":
            return client.post(path, body, format="json", **headers)
        return client.get(path, **headers)

    lean = answer()
    through_drf()
    drf = answer()
    assert lean.status_code == drf.status_code
    assert lean.content == drf.content
    for header in ("Content-Type", "Allow", "WWW-Authenticate", "Retry-After"):
        assert lean.get(header) == drf.get(header), header
    if path.startswith("/v1/ingest"):
        assert lean.json() == {"accepted": 1, "event_ids": ["lean-ü"]}
        assert "lean-ü".encode() in lean.content  # UTF-8, not \u escapes


def test_an_unexpected_error_is_a_500_envelope_with_the_request_id(telemetry_api, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("budgets.api.session_budget_check", broken)
    response = telemetry_api.get("/v1/budget-check?session_id=s&limit_usd=1", HTTP_X_REQUEST_ID="lean-request-0001")
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["code"], error["request_id"]) == ("internal_error", "lean-request-0001")
    assert "boom" not in response.content.decode()


def test_a_database_outage_is_a_503_envelope(telemetry_api, monkeypatch):
    def unreachable(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("usage.api.event_batch_ingest", unreachable)
    response = telemetry_api.post("/v1/ingest", INGEST_BODY, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"


@pytest.mark.parametrize(("method", "path", "body", "scope"), LEAN_ENDPOINTS)
def test_a_format_or_accept_they_do_not_answer_in_is_a_406_as_elsewhere(tenant, search_budget, method, path, body,
                                                                         scope):
    """They answer JSON only: ?format=csv or Accept: text/csv is the same 406 as on every other endpoint (it was a
    200 in JSON); what clients send (nothing, */*, application/json, a browser's list) still gets JSON."""
    _, raw = api_key_create(tenant=tenant, name="negotiating", scope=scope)
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    separator = "&" if "?" in path else "?"
    for refused in (call(client, method, f"{path}{separator}format=csv", body),
                    call(APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_ACCEPT="text/csv"), method, path, body)):
        assert refused.status_code == 406, refused.content
        assert (refused.json()["error"]["code"], refused["Content-Type"]) == ("not_acceptable", "application/json")
    for accept in ("", "*/*", "application/json", "application/json, text/plain, */*",
                   "text/html,application/xhtml+xml,*/*;q=0.8"):
        answered = call(APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_ACCEPT=accept), method, path, body)
        assert answered.status_code in (200, 202) and answered["Content-Type"] == "application/json", accept
    assert call(client, method, f"{path}{separator}format=json", body).status_code in (200, 202)


def test_a_parameter_given_twice_is_a_400_on_the_team_check_and_the_first_counts_on_aw_sdks(admin_api,
                                                                                           telemetry_api,
                                                                                           search_budget):
    response = admin_api.get("/v1/teams/budget-check?team=search&team=other")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"team": ["Given more than once: send it once."]}
    # aw-sdk builds its URL by hand: the first of a repeated parameter counts, as documented.
    checked = telemetry_api.get("/v1/budget-check?session_id=a&limit_usd=0&session_id=b")
    assert checked.status_code == 200 and checked.json()["session_id"] == "a"
