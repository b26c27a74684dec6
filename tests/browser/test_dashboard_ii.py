"""Dashboard II in real Chromium: a session's runaway loop on its chart, acknowledging an anomaly, a webhook
test delivery, members and the last-owner rule; a screenshot of every page."""

import re

import pytest
from playwright.sync_api import expect

from tenants.models import Membership
from tests.browser.conftest import screenshot, sign_in
from tests.factories import MembershipFactory, UserFactory
from tests.fakes import WebhookReceiver
from tests.pages.data import demo_month, record, runaway_session

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def usage(tenant):
    record(tenant, demo_month(days=10, per_day=6) + runaway_session(session_id="agent/run 7", iterations=12))


def test_session_page_marks_the_runaway_loop_on_its_chart(page, owner, usage):
    sign_in(page, "olivia")
    page.get_by_role("link", name="Sessions", exact=True).click()
    expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
    page.get_by_label("Only flagged").check()
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"/sessions/\?.*flagged=1"))
    screenshot(page, "08-sessions")
    page.get_by_role("link", name="agent/run 7").click()
    expect(page).to_have_url(re.compile(r"/sessions/agent%2Frun%207/$"))
    expect(page.get_by_role("alert")).to_contain_text("Runaway loop")
    expect(page.locator("svg.chart rect.loop-zone")).to_have_count(4)
    expect(page.locator("svg.chart text.loop-mark")).to_contain_text("runaway loop")
    screenshot(page, "09-session-runaway-loop")


def test_admin_acknowledges_an_anomaly(page, owner, usage):
    sign_in(page, "olivia")
    expect(page.locator(".mainnav .badge")).to_contain_text("1")
    page.get_by_role("link", name=re.compile("^Anomalies")).click()
    row = page.locator("tr", has_text="agent/run 7")
    screenshot(page, "10-anomalies")
    row.get_by_role("button", name="Acknowledge").click()
    expect(row).to_contain_text("acknowledged")
    # The nav's badge follows at once, and the table still holds the row (the badge came out of band).
    expect(page.locator(".mainnav .badge")).to_have_count(0)
    expect(page.locator("#anomaly-rows tr", has_text="agent/run 7")).to_have_count(1)
    page.reload()
    expect(page.locator(".mainnav .badge")).to_have_count(0)


def test_webhook_test_send_reaches_a_local_receiver_and_is_logged(page, owner, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with WebhookReceiver() as receiver:
        sign_in(page, "olivia")
        page.goto("/settings/webhooks/")
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("Description").fill("ops channel")
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.locator("#new-secret")).to_contain_text("whsec_")
        page.get_by_role("button", name="Send test").click()
        expect(page.locator(".test-result")).to_contain_text("succeeded")
        expect(page.locator("#delivery-log")).to_contain_text("test")
        expect(page.locator("#delivery-log")).to_contain_text("200")
        assert len(receiver.requests) == 1
        screenshot(page, "11-webhooks")


def test_member_role_change_and_the_last_owner_rule(page, owner, tenant):
    viewer = UserFactory(username="vera")
    MembershipFactory(tenant=tenant, user=viewer, role=Membership.Role.VIEWER)
    sign_in(page, "olivia")
    page.goto("/settings/members/")
    vera = page.locator("tr", has_text="vera")
    vera.get_by_label("Role of vera").select_option("admin")
    with page.expect_response(lambda r: "/role/" in r.url):
        vera.get_by_role("button", name="Save").click()
    expect(page.locator("tr", has_text="vera").get_by_label("Role of vera")).to_have_value("admin")
    assert Membership.objects.get(user=viewer).role == "admin"
    olivia = page.locator("tr", has_text="olivia")
    olivia.get_by_label("Role of olivia").select_option("viewer")
    with page.expect_response(lambda r: "/role/" in r.url) as answer:
        olivia.get_by_role("button", name="Save").click()
    assert answer.value.status == 409
    expect(page.get_by_role("alert")).to_contain_text("The last owner cannot be demoted")
    assert Membership.objects.get(user=owner).role == "owner"
    screenshot(page, "12-members")


def test_pricing_and_retention_pages(page, owner, usage):
    sign_in(page, "olivia")
    page.goto("/settings/pricing/")
    expect(page.get_by_role("heading", name="Models without a price (last 30 days)")).to_be_visible()
    page.get_by_label("Catalog — per-model prices", exact=False).check()
    page.get_by_role("button", name="Save cost mode").click()
    expect(page.get_by_role("status")).to_contain_text("Saved the cost mode")
    screenshot(page, "13-pricing")
    page.goto("/settings/retention/")
    page.get_by_label("Keep events for (days, 1–3,650)").fill("0")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".errorlist")).to_be_visible()
    page.get_by_label("Keep events for (days, 1–3,650)").fill("5")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#expired-count")).to_be_visible()
    screenshot(page, "14-retention")


PHONE_PAGES = ["/", "/activity/", "/budgets/", "/sessions/", "/sessions/agent/run%207/", "/anomalies/",
               "/settings/api-keys/", "/settings/webhooks/", "/settings/pricing/", "/settings/retention/",
               "/settings/members/"]


WIDER_THAN_SCREEN = """() => Array.from(document.querySelectorAll('main *'))
    .filter(e => e.getBoundingClientRect().right > window.innerWidth).slice(0, 8)
    .map(e => e.tagName + '.' + e.className + ' in ' + e.parentElement.tagName + '.' + e.parentElement.className)"""


def test_every_page_fits_a_phone_screen(page, owner, usage, tenant):
    from budgets.services import budget_upsert

    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=40)
    sign_in(page, "olivia")
    page.set_viewport_size({"width": 390, "height": 844})
    for url in PHONE_PAGES:
        page.goto(url)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        wide = [] if overflow <= 0 else page.evaluate(WIDER_THAN_SCREEN)
        assert overflow <= 0, f"{url} is {overflow}px wider than the phone screen: {wide}"
        name = url.strip("/").replace("/", "-").replace("%20", "_") or "overview"
        screenshot(page, f"phone-{name}")
