"""Dashboard I in real Chromium: sign-in, Overview, Budgets, API keys, Activity filters, viewer restrictions."""

import re

import pytest
from playwright.sync_api import expect
from rest_framework.test import APIClient

from tenants.models import ApiKey, Membership
from tests.browser.conftest import screenshot, sign_in
from tests.factories import MembershipFactory, UserFactory
from tests.pages.data import demo_month, record, runaway_session

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def viewer(tenant):
    user = UserFactory(username="vera")
    MembershipFactory(tenant=tenant, user=user, role=Membership.Role.VIEWER)
    return user


@pytest.fixture
def usage(tenant):
    record(tenant, demo_month(days=30, per_day=8) + runaway_session())


def test_sign_in_shows_the_overview_with_charts_and_budget_bars(page, owner, usage):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    screenshot(page, "01-login")
    sign_in(page, "olivia")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#kpi-mtd")).to_contain_text("$")
    expect(page.locator("svg.chart rect.seg").first).to_be_attached()
    screenshot(page, "02-overview")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "02-overview-phone")


def test_wrong_password_is_refused_with_a_message(page, owner):
    page.goto("/login/")
    page.get_by_label("Username").fill("olivia")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")


def test_admin_sets_a_team_budget_and_sees_its_bar(page, owner, usage):
    sign_in(page, "olivia")
    page.get_by_role("link", name="Budgets", exact=True).first.click()
    page.get_by_label("Team").fill("payments-eng")
    page.get_by_label("Monthly budget (USD)").fill("abc")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator("#bf-amount-err")).to_contain_text("valid number")
    page.get_by_label("Monthly budget (USD)").fill("50")
    page.get_by_label("Hard stop at 100%").check()
    page.get_by_role("button", name="Save budget").click()
    row = page.locator("tr", has=page.get_by_role("rowheader", name="payments-eng"))
    expect(row).to_be_visible()
    expect(row.locator("svg.bar rect.fill")).to_be_attached()
    expect(page.locator("#audit")).to_contain_text("Created payments-eng")
    expect(page).to_have_url(re.compile(r"/budgets/$"))
    screenshot(page, "03-budgets")
    row.get_by_role("link", name="Edit").click()
    editing = page.locator("tr.editing")
    editing.get_by_label("Monthly budget (USD)").fill("-5")
    editing.get_by_role("button", name="Save", exact=True).click()
    expect(editing.locator(".errorlist")).to_contain_text("greater than 0")
    editing.get_by_label("Monthly budget (USD)").fill("75")
    editing.get_by_role("button", name="Save", exact=True).click()
    expect(row).to_contain_text("$75.00")
    expect(page.locator("tr.editing")).to_have_count(0)
    page.goto("/")
    expect(page.locator(".budget-line", has_text="payments-eng").locator("svg.bar")).to_be_visible()


def focused(page) -> str:
    """What has keyboard focus: its accessible name or field label, or "body"."""
    return page.evaluate("""() => { const e = document.activeElement;
        if (!e || e === document.body) return "body";
        return (e.labels && e.labels[0] ? e.labels[0].textContent : e.textContent).trim(); }""")


def test_inline_edit_by_keyboard_keeps_focus_with_the_row(page, owner, tenant):
    """Keyboard users: Enter on Edit puts focus in the form, Save and Cancel give it back to the row's Edit, and the
    hard-stop toggle keeps it (focus fell to <body>, and the next Tab skipped the form)."""
    from budgets.services import budget_upsert

    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=10)
    sign_in(page, "olivia")
    page.goto("/budgets/")
    row = page.locator("tr", has=page.get_by_role("rowheader", name="search"))
    row.get_by_role("link", name="Edit").focus()
    page.keyboard.press("Enter")
    expect(page.locator("tr.editing")).to_have_count(1)
    expect(page.locator("tr.editing").get_by_label("Monthly budget (USD)")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("-1")
    page.keyboard.press("Enter")  # submits the form
    expect(page.locator("tr.editing .errorlist")).to_contain_text("greater than 0")
    expect(page.locator("tr.editing").get_by_label("Monthly budget (USD)")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("12")
    page.keyboard.press("Enter")
    expect(row).to_contain_text("$12.00")
    expect(row.get_by_role("link", name="Edit")).to_be_focused()
    page.keyboard.press("Enter")
    page.locator("tr.editing").get_by_role("link", name="Cancel").focus()
    page.keyboard.press("Enter")
    expect(page.locator("tr.editing")).to_have_count(0)
    expect(row.get_by_role("link", name="Edit")).to_be_focused()
    row.get_by_role("button", name="Off").focus()
    page.keyboard.press("Enter")
    expect(row.get_by_role("button", name="On")).to_be_focused()
    assert focused(page) == "On"


def test_a_row_deleted_meanwhile_by_someone_else_leaves_the_list_with_a_note(page, owner, tenant):
    from budgets.services import budget_delete, budget_upsert

    kept, _ = budget_upsert(tenant=tenant, team_name="kept", monthly_budget_usd=10)
    gone, _ = budget_upsert(tenant=tenant, team_name="gone", monthly_budget_usd=10)
    sign_in(page, "olivia")
    page.goto("/budgets/")
    stale = page.locator("tr", has=page.get_by_role("rowheader", name="gone"))
    stale.get_by_role("link", name="Edit").click()
    expect(page.locator("tr.editing")).to_have_count(1)
    budget_delete(budget=gone)  # another admin, in another tab
    page.locator("tr.editing").get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#page-banner")).to_contain_text("someone deleted it meanwhile")
    expect(page.locator("tr.editing")).to_have_count(0)
    expect(page.get_by_role("rowheader", name="gone")).to_have_count(0)
    expect(page.get_by_role("rowheader", name="kept")).to_be_visible()


def test_the_connection_banner_clears_once_the_server_answers_again(page, owner, usage):
    """"Could not reach AgentWatch … The page updates again once it is back": after a click that failed, the
    next answer (Activity's live poll) clears it, as it says (it stayed for good)."""
    sign_in(page, "olivia")
    page.goto("/activity/")
    expect(page.locator("#activity-poller")).to_be_attached()
    page.route(re.compile(r"/activity/\?"), lambda route: route.abort(), times=1)  # the filter's request only
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#page-banner")).to_contain_text("Could not reach AgentWatch")
    expect(page.locator("#page-banner")).to_have_text("", timeout=15_000)  # a live poll every 5 s


def test_generated_key_is_shown_once_and_revoking_it_refuses_the_api(page, owner, tenant):
    sign_in(page, "olivia")
    page.goto("/settings/api-keys/")
    expect(page.get_by_label(re.compile("Telemetry"))).to_be_checked()
    page.get_by_label("Name").fill("checkout-agent")
    page.get_by_role("button", name="Generate key").click()
    raw = page.locator("#new-key-value").inner_text().strip()
    assert raw.startswith("aw_live_")
    expect(page.locator("#new-key")).to_contain_text("will not be shown again")
    screenshot(page, "04-api-key-created")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/v1/budget-check", {"session_id": "s1", "limit_usd": "1"}).status_code == 200

    page.reload()
    expect(page.locator("#new-key-value")).to_have_count(0)
    assert raw not in page.content()
    key = ApiKey.objects.get(tenant=tenant, name="checkout-agent")
    expect(page.locator(f"#key-{key.pk}")).to_contain_text(key.prefix)

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"#key-{key.pk}").get_by_role("button", name="Revoke").click()
    expect(page.locator(f"#key-{key.pk}")).to_contain_text("revoked")
    screenshot(page, "05-api-keys")
    assert api.get("/v1/budget-check", {"session_id": "s1", "limit_usd": "1"}).status_code == 401


def test_filtering_activity_by_team_changes_the_url(page, owner, usage):
    sign_in(page, "olivia")
    page.goto("/activity/")
    expect(page.locator("details.evt").first).to_be_visible()
    page.get_by_label("Team").select_option("search")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"/activity/\?team=search"))
    rows = page.locator("details.evt")
    expect(rows.first).to_be_visible()
    for text in rows.locator("summary .cell:nth-child(3)").all_inner_texts()[:10]:
        assert text == "search"
    rows.first.locator("summary").click()
    expect(rows.first.locator("dl.details")).to_be_visible()
    screenshot(page, "06-activity")
    page.go_back()
    expect(page).to_have_url(re.compile(r"/activity/$"))


def test_activity_shows_new_events_live_without_losing_filters(page, owner, tenant, usage):
    from tests.pages.data import event

    sign_in(page, "olivia")
    page.goto("/activity/?team=search")
    before = page.locator("details.evt").count()
    record(tenant, [event(team="search", model="live-model-x"), event(team="support-bots", model="live-model-y")])
    expect(page.locator("details.evt", has_text="live-model-x")).to_be_visible(timeout=15_000)
    expect(page.locator("details.evt", has_text="live-model-y")).to_have_count(0)
    assert page.locator("details.evt").count() == before + 1
    expect(page).to_have_url(re.compile(r"team=search"))


def test_viewer_sees_no_write_controls(page, viewer, owner, usage, tenant):
    from budgets.services import budget_upsert

    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=100)
    sign_in(page, "vera")
    page.goto("/budgets/")
    expect(page.get_by_role("rowheader", name="search")).to_be_visible()
    expect(page.get_by_role("button", name="Save budget")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    page.goto("/settings/api-keys/")
    expect(page.get_by_role("button", name="Generate key")).to_have_count(0)
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(page.get_by_role("link", name="Members")).to_have_count(0)
    screenshot(page, "07-viewer-api-keys")
