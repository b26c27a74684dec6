"""Tenant isolation matrix: every URL pattern of the project, from the URL resolver, is requested by tenant A
(alice) against tenant B's (bob's) objects. Each attempt gets 404 (or 403 where nothing is addressed by id)
and never B's data, never a 5xx. A new URL pattern without an entry here fails the test."""

import datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from budgets.models import BudgetAlert, BudgetAuditLog, TeamBudget
from tenants.models import ApiKey, Invitation, Membership, Team, WebhookEndpoint
from tenants.services import api_key_create, invitation_create, membership_set
from tests.factories import TenantFactory
from usage.models import Anomaly, DailySpend, ModelPrice, SessionState, UsageEvent

B_MARKERS = ("bob-team-secret", "bob-session-secret", "bob-project-secret", "bob-model-secret",
             "https://bob-hook.example.com", "bob_user", "bob-invitee@example.com")

# Not tenant-facing: Django's own admin is for staff/superusers only and has no tenant scoping to test.
EXCLUDED_PREFIXES = ("admin/",)


def url_patterns():
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern)

    return [route for route in walk(get_resolver().url_patterns) if not route.startswith(EXCLUDED_PREFIXES)]


@pytest.fixture
def world(db, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    User = get_user_model()
    alice_tenant = TenantFactory(name="Alice Org", slug="alice")
    bob_tenant = TenantFactory(name="Bob Org", slug="bob")
    alice = User.objects.create_user("alice_user", password="pw-alice-123456")
    bob = User.objects.create_user("bob_user", password="pw-bob-123456")
    membership_set(tenant=alice_tenant, user=alice, role=Membership.Role.OWNER)
    bob_membership = membership_set(tenant=bob_tenant, user=bob, role=Membership.Role.OWNER)
    _, alice_key = api_key_create(tenant=alice_tenant, name="alice admin", scope="admin")
    bob_key, _ = api_key_create(tenant=bob_tenant, name="bob admin", scope="admin")
    bob_invitation, _ = invitation_create(tenant=bob_tenant, role=Membership.Role.OWNER,
                                          email="bob-invitee@example.com", created_by=bob)
    now = timezone.now()
    team = Team.objects.create(tenant=bob_tenant, name="bob-team-secret")
    budget = TeamBudget.objects.create(tenant=bob_tenant, team=team, monthly_budget_usd=Decimal("100"),
                                       alert_threshold_pct=80, hard_stop=True)
    BudgetAlert.objects.create(tenant=bob_tenant, team=team, month=now.date().replace(day=1), level="threshold",
                               threshold_pct=80, spend_usd=Decimal("81"), budget_usd=Decimal("100"))
    BudgetAuditLog.objects.create(tenant=bob_tenant, team_name=team.name, action="created", actor_user=bob,
                                  actor_label="user bob_user", after={"monthly_budget_usd": "100.00"})
    endpoint = WebhookEndpoint.objects.create(tenant=bob_tenant, url="https://bob-hook.example.com/x",
                                              secret="whsec_bob", event_types=["anomaly.detected"])
    bob_event = UsageEvent.objects.create(
        tenant=bob_tenant, event_id="bob-event", model="bob-model-secret", team=team, team_name=team.name,
        project="bob-project-secret", session_id="bob-session-secret", iteration_index=1, prompt_tokens=10,
        timestamp=now, received_at=now, recorded_at=now, cost_usd=Decimal("0.5"), priced_by="blended")
    DailySpend.objects.create(tenant=bob_tenant, day=now.date(), team_name=team.name, project="bob-project-secret",
                              model="bob-model-secret", events=1, prompt_tokens=10, cost_usd=Decimal("0.5"))
    SessionState.objects.create(tenant=bob_tenant, session_id="bob-session-secret", team=team,
                                spent_usd=Decimal("0.5"), events=1, iterations=1, first_seen=now, last_seen=now,
                                expires_at=now + datetime.timedelta(hours=24))
    anomaly = Anomaly.objects.create(tenant=bob_tenant, kind="runaway_loop", session_id="bob-session-secret",
                                     team=team, first_seen=now, last_seen=now, details={"ratios": [1.5, 1.5, 1.5]})
    price = ModelPrice.objects.create(tenant=bob_tenant, model="bob-model-secret", input_per_mtok=1,
                                      output_per_mtok=2)
    page, page_to_log_out = Client(), Client()
    page.force_login(alice)
    page_to_log_out.force_login(alice)
    return {
        "api": Client(HTTP_AUTHORIZATION=f"Bearer {alice_key}"), "page": page, "anon": Client(),
        "page_to_log_out": page_to_log_out,
        "bob_tenant": bob_tenant, "bob_key": bob_key, "team": team, "budget": budget, "endpoint": endpoint,
        "anomaly": anomaly, "price": price, "bob_membership": bob_membership, "event": bob_event,
        "bob_invitation": bob_invitation,
    }


# route → list of (client, method, path builder, expected statuses). Expectation "nodata" = 2xx/3xx allowed,
# but no B marker may appear; a number = that exact status.
def matrix(w):
    t, b = w["team"], w["budget"]
    return {
        "healthz": [("anon", "get", "/healthz", "nodata")],
        "livez": [("anon", "get", "/livez", "nodata")],
        "readyz": [("anon", "get", "/readyz", "nodata")],
        "metrics": [("anon", "get", "/metrics", "nodata")],
        "v1/schema": [("anon", "get", "/v1/schema", "nodata")],
        "v1/docs": [("anon", "get", "/v1/docs", "nodata")],
        "v1/me": [("api", "get", "/v1/me", "nodata")],
        "v1/keys": [("api", "get", "/v1/keys", "nodata")],
        "v1/keys/<str:key>": [("api", "delete", f"/v1/keys/{w['bob_key'].prefix}", 404),
                              ("api", "delete", f"/v1/keys/{w['bob_key'].pk}", 404)],
        "v1/webhooks": [("api", "get", "/v1/webhooks", "nodata")],
        "v1/webhooks/<int:endpoint_id>": [("api", "delete", f"/v1/webhooks/{w['endpoint'].pk}", 404)],
        "v1/webhooks/<int:endpoint_id>/test": [("api", "post", f"/v1/webhooks/{w['endpoint'].pk}/test", 404)],
        "v1/webhooks/<int:endpoint_id>/deliveries": [
            ("api", "get", f"/v1/webhooks/{w['endpoint'].pk}/deliveries", 404)],
        "v1/ingest": [("api", "post", "/v1/ingest", "nodata")],
        "v1/usage/events": [("api", "get", "/v1/usage/events?session_id=bob-session-secret", "nodata"),
                            ("api", "get", "/v1/usage/events", "nodata")],
        "v1/usage/summary": [("api", "get", "/v1/usage/summary?group_by=team,project,model", "nodata")],
        "v1/usage/export.csv": [
            ("api", "get", f"/v1/usage/export.csv?month={timezone.now():%Y-%m}", "nodata")],
        "v1/sessions": [("api", "get", "/v1/sessions", "nodata")],
        "v1/sessions/<path:session_id>": [("api", "get", "/v1/sessions/bob-session-secret", 404)],
        "v1/teams": [("api", "get", "/v1/teams", "nodata")],
        "v1/anomalies": [("api", "get", "/v1/anomalies", "nodata")],
        "v1/anomalies/<int:anomaly_id>/ack": [("api", "post", f"/v1/anomalies/{w['anomaly'].pk}/ack", 404)],
        "v1/budget-check": [("api", "get", "/v1/budget-check?session_id=bob-session-secret&limit_usd=0.1",
                             "nodata")],
        "v1/teams/budget-check": [("api", "get", f"/v1/teams/budget-check?team={t.name}", 404)],
        "v1/teams/budgets": [("api", "get", "/v1/teams/budgets", "nodata")],
        "v1/teams/budgets/<path:team>": [("api", "get", f"/v1/teams/budgets/{t.name}", 404),
                                         ("api", "patch", f"/v1/teams/budgets/{t.name}", 404),
                                         ("api", "delete", f"/v1/teams/budgets/{t.name}", 404)],
        "v1/alerts": [("api", "get", "/v1/alerts", "nodata")],
        "v1/audit-log": [("api", "get", "/v1/audit-log", "nodata")],
        "^v1(?:/.*)?$": [("api", "get", f"/v1/teams/budgets-x/{t.name}", 404)],
        "login/": [("anon", "get", "/login/", "nodata")],
        "logout/": [("page_to_log_out", "post", "/logout/", "nodata")],
        "switch-tenant/": [("page", "post", "/switch-tenant/", (403, 404))],
        "settings/api-keys/": [("page", "get", "/settings/api-keys/", "nodata")],
        "settings/api-keys/<int:key_id>/revoke/": [
            ("page", "post", f"/settings/api-keys/{w['bob_key'].pk}/revoke/", 404)],
        "settings/members/": [("page", "get", "/settings/members/", "nodata")],
        "settings/members/<int:membership_id>/role/": [
            ("page", "post", f"/settings/members/{w['bob_membership'].pk}/role/", 404)],
        "settings/members/<int:membership_id>/remove/": [
            ("page", "post", f"/settings/members/{w['bob_membership'].pk}/remove/", 404)],
        "settings/members/invitations/": [("page", "post", "/settings/members/invitations/", "nodata")],
        "settings/members/invitations/<int:invitation_id>/revoke/": [
            ("page", "post", f"/settings/members/invitations/{w['bob_invitation'].pk}/revoke/", 404)],
        # Only the link's token opens an invitation: a guessed one is the same 404, signed in or not.
        # Without a link opened in this session first, the accept page has no invitation to show or accept.
        "invitations/accept/": [("page", "get", "/invitations/accept/", 404),
                                ("page", "post", "/invitations/accept/", 404),
                                ("anon", "get", "/invitations/accept/", 404)],
        "invitations/<str:token>/": [("page", "get", "/invitations/not-a-token/", 404),
                                     ("page", "post", "/invitations/not-a-token/", 404),
                                     ("anon", "get", f"/invitations/{w['bob_invitation'].token_hash}/", 404)],
        "settings/webhooks/": [("page", "get", "/settings/webhooks/", "nodata")],
        "settings/webhooks/<int:endpoint_id>/toggle/": [
            ("page", "post", f"/settings/webhooks/{w['endpoint'].pk}/toggle/", 404)],
        "settings/webhooks/<int:endpoint_id>/delete/": [
            ("page", "post", f"/settings/webhooks/{w['endpoint'].pk}/delete/", 404)],
        "settings/webhooks/<int:endpoint_id>/test/": [
            ("page", "post", f"/settings/webhooks/{w['endpoint'].pk}/test/", 404)],
        "activity/": [("page", "get", "/activity/?session=bob-session-secret", "nodata"),
                      ("page", "get", "/activity/", "nodata")],
        "activity/events/<int:event_pk>/": [("page", "get", f"/activity/events/{w['event'].pk}/", 404)],
        "activity/live/": [("page", "get", "/activity/live/", "nodata")],
        "activity/export.csv": [("page", "get", "/activity/export.csv", "nodata")],
        "sessions/": [("page", "get", "/sessions/", "nodata")],
        "sessions/<path:session_id>/": [("page", "get", "/sessions/bob-session-secret/", 404)],
        "session/": [("page", "get", "/session/?id=bob-session-secret", 404)],
        "anomalies/": [("page", "get", "/anomalies/", "nodata")],
        "anomalies/<int:anomaly_id>/acknowledge/": [
            ("page", "post", f"/anomalies/{w['anomaly'].pk}/acknowledge/", 404)],
        "settings/pricing/": [("page", "get", "/settings/pricing/", "nodata")],
        "settings/pricing/mode/": [("page", "post", "/settings/pricing/mode/", "nodata")],
        "settings/pricing/overrides/": [("page", "post", "/settings/pricing/overrides/", "nodata")],
        "settings/pricing/overrides/<int:price_id>/delete/": [
            ("page", "post", f"/settings/pricing/overrides/{w['price'].pk}/delete/", 404)],
        "settings/retention/": [("page", "get", "/settings/retention/", "nodata")],
        "": [("page", "get", "/", "nodata")],
        "budgets/": [("page", "get", "/budgets/", "nodata")],
        "budgets/<int:budget_id>/": [("page", "get", f"/budgets/{b.pk}/", 404)],
        "budgets/<int:budget_id>/edit/": [("page", "post", f"/budgets/{b.pk}/edit/", 404)],
        "budgets/<int:budget_id>/hard-stop/": [("page", "post", f"/budgets/{b.pk}/hard-stop/", 404)],
        "budgets/<int:budget_id>/delete/": [("page", "post", f"/budgets/{b.pk}/delete/", 404)],
    }


BODIES = {"post": {"model": "gpt-4o", "monthly_budget_usd": 1, "tenant_id": None},
          "patch": {"monthly_budget_usd": 1, "hard_stop": False}}


def test_every_url_pattern_is_covered_and_never_leaks_another_tenant(world):
    cases = matrix(world)
    routes = url_patterns()
    missing = [route for route in routes if route not in cases]
    assert not missing, f"URL patterns without an isolation case: {missing}"
    stale = [route for route in cases if route not in routes]
    assert not stale, f"isolation cases for URL patterns that no longer exist: {stale}"

    attempts = failures = 0
    problems = []
    for route in routes:
        for client_name, method, path, expected in cases[route]:
            attempts += 1
            client = world[client_name]
            body = dict(BODIES.get(method, {}))
            if "tenant_id" in body:
                body["tenant_id"] = world["bob_tenant"].pk
            kwargs = {"content_type": "application/json"} if path.startswith("/v1") else {}
            data = body if method in ("post", "patch") else None
            if data is not None and path.startswith("/v1"):
                import json

                data = json.dumps(data)
            response = getattr(client, method)(path, data, **kwargs) if data is not None else \
                getattr(client, method)(path, REMOTE_ADDR="127.0.0.1")
            content = b"".join(response.streaming_content) if response.streaming else response.content
            text = content.decode("utf-8", errors="replace")
            # A marker the request itself carried (an id in the path) may be echoed back; any other is a leak.
            leaked = [marker for marker in B_MARKERS if marker in text and marker not in path]
            ok = response.status_code < 500 and not leaked
            if expected != "nodata":
                allowed = expected if isinstance(expected, tuple) else (expected,)
                ok = ok and response.status_code in allowed
            if not ok:
                failures += 1
                problems.append(f"{method.upper()} {path} → {response.status_code}: {text[:200]}")
    print(f"isolation matrix: {len(routes)} URL patterns × {attempts} attempts, {failures} failures")
    assert not problems, "\n".join(problems)

    # Bob's session, asked about by alice's key, is an unknown session to her: spent 0.
    check = world["api"].get("/v1/budget-check?session_id=bob-session-secret&limit_usd=0.1").json()
    assert check["spent_usd"] == 0 and check["exceeded"] is False

    # And nothing of bob's was changed by any of those attempts.
    bob = world["bob_tenant"]
    assert ApiKey.objects.get(pk=world["bob_key"].pk).revoked_at is None
    assert TeamBudget.objects.get(pk=world["budget"].pk).monthly_budget_usd == Decimal("100")
    assert TeamBudget.objects.get(pk=world["budget"].pk).hard_stop is True
    assert WebhookEndpoint.objects.filter(pk=world["endpoint"].pk, enabled=True).exists()
    assert Anomaly.objects.get(pk=world["anomaly"].pk).status == "open"
    assert ModelPrice.objects.filter(pk=world["price"].pk).exists()
    assert Membership.objects.get(pk=world["bob_membership"].pk).role == "owner"
    assert Invitation.objects.get(pk=world["bob_invitation"].pk).revoked_at is None
    assert not Membership.objects.filter(tenant=bob).exclude(pk=world["bob_membership"].pk).exists()
    assert UsageEvent.objects.filter(tenant=bob).count() == 1
    assert bob.cost_mode == type(bob).objects.get(pk=bob.pk).cost_mode
