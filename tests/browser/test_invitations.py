"""Inviting a member in real Chromium: the owner makes a link on Settings → Members (htmx), a new person opens it in
a browser of their own, creates an account and lands in the organisation; the link then works no more."""

import re

import pytest
from playwright.sync_api import expect

from tenants.models import Invitation, Membership
from tests.browser.conftest import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "plum-orchard-lantern-42"


def test_an_owner_invites_a_new_person_who_creates_an_account_and_joins(page, chromium, live_server, owner, tenant):
    sign_in(page, "olivia")
    page.goto("/settings/members/")
    page.get_by_label("Role", exact=True).select_option("admin")
    page.get_by_label("E-mail (optional)").fill("nina@example.com")
    page.get_by_role("button", name="Create invitation link").click()
    link_box = page.locator("#new-invitation-link")
    expect(link_box).to_be_visible()
    link = link_box.inner_text().strip()
    assert re.fullmatch(rf"{re.escape(live_server.url)}/invitations/[\w-]{{40,}}/", link), link
    expect(page.locator("#invitations")).to_contain_text("nina@example.com")
    screenshot(page, "members-invitation-created")

    # Nina, in a browser of her own: not signed in, no account yet.
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    nina = context.new_page()
    nina.set_default_timeout(10_000)
    try:
        nina.goto(link)
        expect(nina.get_by_role("heading", name="Join Alice Org")).to_be_visible()
        # The token leaves the address bar (and with it history and Referer headers) once the link is opened.
        assert nina.url == f"{live_server.url}/invitations/accept/"
        expect(nina.get_by_label("E-mail")).to_have_value("nina@example.com")
        nina.get_by_label("Username").fill("nina")
        nina.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
        nina.get_by_label("Password again").fill(NEW_PASSWORD)
        nina.get_by_role("button", name="Create account and accept").click()
        nina.wait_for_url(re.compile(r"/$"))
        expect(nina.get_by_text("Welcome, nina: you joined Alice Org as admin.")).to_be_visible()
        expect(nina.locator(".tenant-name")).to_have_text("Alice Org")
        screenshot(nina, "invitation-accepted-overview")
        # Used: the same link is a dead end now, for her and anyone else.
        nina.goto(link)
        expect(nina.get_by_role("heading", name=re.compile("not valid|no longer|not found", re.I))).to_be_visible()
    finally:
        context.close()
    assert Membership.objects.get(tenant=tenant, user__username="nina").role == "admin"
    assert Invitation.objects.get().accepted_by.username == "nina"

    page.reload()
    expect(page.locator("#members-panel")).to_contain_text("nina")
    expect(page.locator("#invitations")).not_to_contain_text("nina@example.com")
