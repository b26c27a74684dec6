"""A page carries the organisation it was rendered for (htmx header, hidden field in forms); a request from a page
of another organisation than the session's (switched in another tab) is refused, never acted on the other one."""

import pytest

from budgets.models import TeamBudget
from budgets.services import budget_upsert
from tenants.middleware import SESSION_TENANT_KEY
from tenants.models import Membership
from tests.factories import MembershipFactory

from .data import event, record


@pytest.fixture
def two_org_client(owner_client, owner, other_tenant):
    """Olivia owns Alice Org and administers Bob Org; this browser has since switched to Bob Org."""
    MembershipFactory(tenant=other_tenant, user=owner, role=Membership.Role.ADMIN)
    session = owner_client.session
    session[SESSION_TENANT_KEY] = other_tenant.pk
    session.save()
    return owner_client


def test_pages_carry_their_organisation_in_htmx_headers_and_forms(owner_client, tenant):
    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=10)
    html = owner_client.get("/budgets/").content.decode()
    assert f'"X-AgentWatch-Tenant": "{tenant.pk}"' in html
    assert html.count(f'<input type="hidden" name="page_tenant" value="{tenant.pk}">') >= 3


def test_a_budget_saved_from_a_stale_tab_is_refused_in_both_organisations(two_org_client, tenant, other_tenant,
                                                                           htmx):
    data = {"team": "made-in-tab-a", "monthly_budget_usd": "10", "page_tenant": str(tenant.pk)}
    plain = two_org_client.post("/budgets/", data)
    assert plain.status_code == 409
    assert b"This page shows Alice Org, but you have since switched to Bob Org" in plain.content
    assert b"Nothing was changed" in plain.content and b"Reload" in plain.content
    headers = {**htmx("budgets-panel"), "HTTP_X_AGENTWATCH_TENANT": str(tenant.pk)}
    swapped = two_org_client.post("/budgets/", {"team": "made-in-tab-a", "monthly_budget_usd": "10"}, **headers)
    assert swapped.status_code == 409
    assert swapped["HX-Retarget"] == "#page-banner" and swapped["HX-Reswap"] == "innerHTML"
    assert b"switched to Bob Org" in swapped.content and b"<html" not in swapped.content
    assert not TeamBudget.objects.exists()


def test_a_stale_tab_does_not_read_the_other_organisations_rows(two_org_client, tenant, other_tenant, htmx):
    budget_upsert(tenant=other_tenant, team_name="bobs-team", monthly_budget_usd=10)
    headers = {**htmx("budgets-panel"), "HTTP_X_AGENTWATCH_TENANT": str(tenant.pk)}
    response = two_org_client.get("/budgets/", **headers)
    assert response["HX-Retarget"] == "#page-banner"
    assert b"bobs-team" not in response.content


def test_a_live_poll_for_a_stale_organisation_stops_polling_and_says_reload(two_org_client, tenant, other_tenant,
                                                                             htmx):
    record(other_tenant, [event(model="bobs-model")])
    headers = {**htmx(), "HTTP_HX_TRIGGER": "activity-poller", "HTTP_X_AGENTWATCH_TENANT": str(tenant.pk)}
    response = two_org_client.get("/activity/live/?after=", **headers)
    assert response.status_code == 286  # htmx stops polling on 286
    assert response["HX-Retarget"] == "#page-banner"
    assert b"Reload" in response.content and b"bobs-model" not in response.content


def test_a_request_from_the_current_organisations_page_is_served(two_org_client, other_tenant, htmx):
    headers = {**htmx("budgets-panel"), "HTTP_X_AGENTWATCH_TENANT": str(other_tenant.pk)}
    response = two_org_client.post("/budgets/", {"team": "bobs-team", "monthly_budget_usd": "10"}, **headers)
    assert response.status_code == 200
    assert TeamBudget.objects.get().tenant == other_tenant
    plain = two_org_client.post("/budgets/", {"team": "t2", "monthly_budget_usd": "5",
                                              "page_tenant": str(other_tenant.pk)})
    assert plain.status_code == 302
