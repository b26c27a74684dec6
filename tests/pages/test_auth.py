"""Sign-in (with throttling), sign-out, the tenant switcher and who may open which page."""

import pytest
from django.test import Client

from tenants.middleware import SESSION_TENANT_KEY
from tenants.models import Membership
from tests.factories import MembershipFactory, TenantFactory, UserFactory
from tests.pages.conftest import PASSWORD

PAGES = ["/", "/activity/", "/budgets/", "/sessions/", "/sessions/some-run/", "/anomalies/", "/settings/api-keys/",
         "/settings/webhooks/", "/settings/pricing/", "/settings/retention/", "/settings/members/",
         "/activity/export.csv"]


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitor_is_sent_to_sign_in(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_sign_in_page_renders_without_inline_script_or_style(client, db):
    response = client.get("/login/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>" not in html and "style=" not in html and "onclick" not in html
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_member_signs_in_and_lands_on_the_overview(client, owner):
    response = client.post("/login/", {"username": "olivia", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert b"Alice Org" in page.content


def test_wrong_password_gets_a_form_error(client, owner):
    response = client.post("/login/", {"username": "olivia", "password": "nope"})
    assert response.status_code == 200
    assert b"correct username and password" in response.content


def test_five_failures_lock_out_that_username_from_that_address_even_with_the_right_password(client, owner):
    for _ in range(5):
        client.post("/login/", {"username": "olivia", "password": "guess"})
    response = client.post("/login/", {"username": "olivia", "password": PASSWORD})
    assert response.status_code == 200
    assert b"Too many failed sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session
    other_address = Client(REMOTE_ADDR="10.9.8.7")
    assert other_address.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302


def test_failures_for_another_username_do_not_lock_out_this_one(client, owner):
    for _ in range(6):
        client.post("/login/", {"username": "mallory", "password": "guess"})
    assert client.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302


def test_sign_out_is_a_post_and_ends_the_session(owner_client):
    assert owner_client.get("/").status_code == 200
    # Typed in the address bar: a page with the button, and still signed in.
    page = owner_client.get("/logout/")
    assert page.status_code == 200 and b"Sign out?" in page.content and b'action="/logout/"' in page.content
    assert owner_client.get("/").status_code == 200
    response = owner_client.post("/logout/")
    assert response.status_code == 302
    assert owner_client.get("/").status_code == 302
    assert b"You are signed out." in owner_client.get("/logout/").content


def test_tenant_switcher_changes_the_current_tenant_in_the_session(owner, owner_client, tenant):
    second = TenantFactory(name="Second Org", slug="second")
    MembershipFactory(tenant=second, user=owner, role=Membership.Role.VIEWER)
    page = owner_client.get("/")
    assert b"Second Org (viewer)" in page.content
    response = owner_client.post("/switch-tenant/", {"tenant_id": second.pk})
    assert response.status_code == 302
    assert owner_client.session[SESSION_TENANT_KEY] == second.pk
    assert b"<span class=\"tenant-name\">Second Org</span>" in owner_client.get("/").content


def test_switching_to_a_tenant_the_user_is_not_a_member_of_is_refused(owner_client, other_tenant):
    response = owner_client.post("/switch-tenant/", {"tenant_id": other_tenant.pk})
    assert response.status_code == 403
    assert SESSION_TENANT_KEY not in owner_client.session


def test_user_without_a_tenant_is_told_so(db):
    client = Client()
    client.force_login(UserFactory(username="loner"))
    response = client.get("/")
    assert response.status_code == 403
    assert b"No organisation yet" in response.content


def test_members_page_is_for_owners_only(admin_client, viewer_client, owner_client):
    assert owner_client.get("/settings/members/").status_code == 200
    assert admin_client.get("/settings/members/").status_code == 403
    assert viewer_client.get("/settings/members/").status_code == 403
