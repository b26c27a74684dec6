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


def test_behind_a_proxy_failures_count_per_client_address_so_no_one_can_lock_another_out(owner, settings):
    """Behind the README's nginx every request comes from the proxy's address; the client's is the last entry of
    X-Forwarded-For. An attacker's five failures must not lock the real user out from their own address."""
    settings.TRUSTED_PROXY_COUNT = 1
    attacker = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.66")
    for _ in range(5):
        attacker.post("/login/", {"username": "olivia", "password": "guess"})
    assert b"Too many failed" in attacker.post("/login/", {"username": "olivia", "password": PASSWORD}).content
    # The attacker cannot get round it by choosing the entries left of the proxy's own.
    spoofed = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7, 203.0.113.66")
    assert b"Too many failed" in spoofed.post("/login/", {"username": "olivia", "password": PASSWORD}).content
    user = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert user.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302


def test_behind_an_undeclared_proxy_no_one_can_lock_every_user_out(owner, settings, caplog, monkeypatch):
    """TRUSTED_PROXY_COUNT left at 0 behind nginx: every request comes from the proxy's address, so the limit per
    address (50 failures) would be one limit for everybody. It is not applied then, and the log says why."""
    from agentwatch_site import http

    monkeypatch.setattr(http, "_warned_about_proxy", False)  # once per process: whichever test came first
    settings.TRUSTED_PROXY_COUNT = 0
    proxied = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.66"}
    attacker = Client(**proxied)
    for n in range(60):
        attacker.post("/login/", {"username": f"user{n}", "password": "Winter2026!"})
    assert Client(**{**proxied, "HTTP_X_FORWARDED_FOR": "198.51.100.7"}).post(
        "/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302
    assert "TRUSTED_PROXY_COUNT is 0" in caplog.text


def test_a_client_reaching_gunicorn_directly_cannot_pick_its_address_with_x_forwarded_for(owner, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for n in range(5):
        Client(REMOTE_ADDR="8.8.8.8", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}").post(
            "/login/", {"username": "olivia", "password": "guess"})
    fresh_claim = Client(REMOTE_ADDR="8.8.8.8", HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert b"Too many failed" in fresh_claim.post("/login/", {"username": "olivia", "password": PASSWORD}).content


def test_one_address_failing_for_many_usernames_is_stopped_too(owner, settings):
    """Password spraying: one guess per username never reaches the per-username limit."""
    sprayer = Client(REMOTE_ADDR="203.0.113.9")
    for n in range(50):
        sprayer.post("/login/", {"username": f"user{n}", "password": "Winter2026!"})
    response = sprayer.post("/login/", {"username": "olivia", "password": PASSWORD})
    assert b"Too many failed" in response.content
    assert Client(REMOTE_ADDR="203.0.113.10").post("/login/", {"username": "olivia",
                                                               "password": PASSWORD}).status_code == 302


def test_the_django_admin_sign_in_is_throttled_too(db):
    """Staff and superusers see every tenant: their sign-in page must not allow unlimited guesses."""
    UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client(REMOTE_ADDR="203.0.113.20")
    for _ in range(5):
        assert client.post("/admin/login/", {"username": "root", "password": "guess"}).status_code == 200
    response = client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
    assert response.status_code == 200
    assert b"Too many failed sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session
    other = Client(REMOTE_ADDR="203.0.113.21")
    assert other.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD}).status_code == 302


def test_a_signed_in_user_sent_back_to_sign_in_goes_to_the_overview_not_an_error(owner_client):
    for url in ("/login/?next=/login/", "/login/?next=/login/%3Fnext%3D/"):
        response = owner_client.get(url)
        assert response.status_code == 302, url
        assert response["Location"] == "/"


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
