"""Roles are enforced on the server: a viewer's writes get the 403 page, whatever the page showed."""

import pytest

from budgets.services import budget_upsert
from tenants.models import ApiKey, Invitation, Membership, WebhookEndpoint
from tenants.services import api_key_create, invitation_create
from usage.models import Anomaly

WRITES = [
    ("/budgets/", {"team": "x", "monthly_budget_usd": "10"}),
    ("/budgets/{budget}/edit/", {"monthly_budget_usd": "10"}),
    ("/budgets/{budget}/hard-stop/", {}),
    ("/budgets/{budget}/delete/", {}),
    ("/settings/api-keys/", {"name": "k", "scope": "telemetry"}),
    ("/settings/api-keys/{key}/revoke/", {}),
    ("/anomalies/{anomaly}/acknowledge/", {}),
    ("/settings/webhooks/", {"url": "https://example.com/h", "event_types": ["budget.exceeded"]}),
    ("/settings/webhooks/{endpoint}/toggle/", {}),
    ("/settings/webhooks/{endpoint}/test/", {}),
    ("/settings/webhooks/{endpoint}/delete/", {}),
    ("/settings/pricing/mode/", {"cost_mode": "catalog"}),
    ("/settings/pricing/overrides/", {"model": "m", "input_per_mtok": "1", "output_per_mtok": "2"}),
    ("/settings/retention/", {"retention_days": "30"}),
    ("/settings/members/invitations/", {"role": "owner"}),
    ("/settings/members/invitations/{invitation}/revoke/", {}),
]


@pytest.fixture
def objects(tenant, owner):
    from django.utils import timezone

    budget, _ = budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=100)
    key, _ = api_key_create(tenant=tenant, name="k", scope=ApiKey.Scope.TELEMETRY)
    now = timezone.now()
    anomaly = Anomaly.objects.create(tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP, session_id="s", first_seen=now,
                                     last_seen=now, details={"iterations": [1, 2, 3, 4], "ratios": [2, 2, 2]})
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/h", secret="whsec_x",
                                              event_types=["budget.exceeded"])
    invitation, _ = invitation_create(tenant=tenant, role=Membership.Role.VIEWER, created_by=owner)
    return {"budget": budget.pk, "key": key.pk, "anomaly": anomaly.pk, "endpoint": endpoint.pk,
            "invitation": invitation.pk}


@pytest.mark.parametrize(("url", "data"), WRITES)
def test_viewer_writes_get_the_403_page_and_change_nothing(viewer_client, objects, url, data, tenant):
    from budgets.models import BudgetAuditLog

    audit_before = BudgetAuditLog.objects.count()
    response = viewer_client.post(url.format(**objects), data)
    assert response.status_code == 403
    assert b"Not allowed" in response.content
    members = url.startswith("/settings/members/")
    reason = b"Only an owner" if members else b"Viewers can see everything here but change nothing"
    assert reason in response.content
    assert BudgetAuditLog.objects.count() == audit_before
    assert ApiKey.objects.filter(tenant=tenant).count() == 1
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()
    assert Anomaly.objects.get().status == Anomaly.Status.OPEN
    assert WebhookEndpoint.objects.get().enabled
    assert Invitation.objects.get().revoked_at is None
    tenant.refresh_from_db()
    assert tenant.retention_days == 90 and tenant.cost_mode == "blended"


OBJECT_URLS = [
    ("get", "/budgets/{budget}/?edit=1"),
    ("post", "/budgets/{budget}/edit/"),
    ("post", "/budgets/{budget}/hard-stop/"),
    ("post", "/budgets/{budget}/delete/"),
    ("post", "/settings/api-keys/{key}/revoke/"),
    ("post", "/anomalies/{anomaly}/acknowledge/"),
    ("post", "/settings/webhooks/{endpoint}/toggle/"),
    ("post", "/settings/webhooks/{endpoint}/test/"),
    ("post", "/settings/webhooks/{endpoint}/delete/"),
    ("get", "/sessions/s/"),
    ("post", "/settings/members/invitations/{invitation}/revoke/"),
]


@pytest.mark.parametrize(("method", "url"), OBJECT_URLS)
def test_another_tenants_objects_are_not_found(other_tenant, objects, method, url, tenant):
    from django.test import Client

    from tests.factories import MembershipFactory, UserFactory

    from .data import record, runaway_session

    record(tenant, runaway_session(session_id="s"))
    stranger = UserFactory(username="bob")
    MembershipFactory(tenant=other_tenant, user=stranger, role=Membership.Role.OWNER)
    client = Client()
    client.force_login(stranger)
    data = {"monthly_budget_usd": "1"} if "edit" in url else {}
    response = getattr(client, method)(url.format(**objects), data, HTTP_HX_REQUEST="true")
    assert response.status_code == 404
    assert ApiKey.objects.get(pk=objects["key"]).revoked_at is None
    assert WebhookEndpoint.objects.filter(pk=objects["endpoint"]).exists()
    assert Invitation.objects.get(pk=objects["invitation"]).revoked_at is None


def test_an_admin_on_the_owner_only_members_page_is_told_only_an_owner_can(admin_client):
    response = admin_client.get("/settings/members/")
    assert response.status_code == 403
    assert b"Only an owner of this organisation can do this. Ask an owner." in response.content
    assert b"Ask an owner or admin" not in response.content
