"""Dashboard III in real Chromium: a stale tab after switching organisation, Back and Clear on Activity's
filters, htmx errors in one banner, and narrow windows (nav, long team names, budget buttons)."""

import re

import pytest
from playwright.sync_api import expect

from budgets.models import TeamBudget
from budgets.services import budget_upsert
from tenants.models import Membership
from tests.browser.conftest import screenshot, sign_in
from tests.factories import MembershipFactory, TenantFactory
from tests.pages.data import event, record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_tab_left_on_another_organisation_cannot_save_into_the_new_one(page, owner, tenant):
    other = TenantFactory(name="Bob Org", slug="bob")
    MembershipFactory(tenant=other, user=owner, role=Membership.Role.ADMIN)
    sign_in(page, "olivia")
    page.goto("/budgets/")
    tab_b = page.context.new_page()
    tab_b.goto("/")
    tab_b.locator("details.menu summary").click()
    with tab_b.expect_navigation():
        tab_b.get_by_label("Organisation").select_option(str(other.pk))
    expect(tab_b.locator(".tenant-name")).to_have_text("Bob Org")
    page.get_by_label("Team").fill("made-in-tab-a")
    page.get_by_label("Monthly budget (USD)").fill("10")
    with page.expect_response(lambda r: r.url.endswith("/budgets/") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Save budget").click()
    assert answer.value.status == 409
    expect(page.locator("#page-banner")).to_contain_text("switched to Bob Org")
    assert not TeamBudget.objects.exists()


def test_back_and_clear_keep_activitys_filter_form_in_step_with_the_url(page, owner, tenant):
    record(tenant, [event(team="search", model="m-search"), event(team="ops", model="m-ops")])
    sign_in(page, "olivia")
    page.goto("/activity/")
    team = page.get_by_label("Team")
    team.select_option("search")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"team=search"))
    page.get_by_label("Team").select_option("ops")
    page.get_by_label("Model").fill("m-ops")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"team=ops"))
    page.go_back()
    expect(page).to_have_url(re.compile(r"team=search"))
    expect(page.get_by_label("Team")).to_have_value("search")
    expect(page.get_by_label("Model")).to_have_value("")
    page.get_by_role("link", name="Clear").click()
    expect(page).to_have_url(re.compile(r"/activity/$"))
    expect(page.get_by_label("Team")).to_have_value("")


def test_htmx_errors_show_one_banner_that_the_next_success_clears(page, owner, tenant):
    sign_in(page, "olivia")
    page.goto("/activity/")
    banner = page.locator("#page-banner")
    page.route(re.compile(r"/activity/\?"), lambda route: route.fulfill(status=500, body="boom"))
    for _ in range(2):
        page.get_by_role("button", name="Apply").click()
        expect(banner).to_have_text("Something went wrong; try again.")
    expect(page.get_by_role("alert")).to_have_count(1)
    # The live poll (every 5 s) succeeding does not clear an error from what the user did.
    with page.expect_response(re.compile(r"/activity/live/"), timeout=10_000):
        pass
    page.wait_for_timeout(200)
    expect(banner).to_have_text("Something went wrong; try again.")
    page.unroute(re.compile(r"/activity/\?"))
    page.route(re.compile(r"/activity/\?"), lambda route: route.abort())
    page.get_by_role("button", name="Apply").click()
    expect(banner).to_contain_text("Could not reach AgentWatch")
    page.unroute(re.compile(r"/activity/\?"))
    page.get_by_role("button", name="Apply").click()
    expect(banner).to_be_empty()
    expect(banner).to_be_hidden()


LONG_TEAM = "a" * 100


@pytest.mark.parametrize("width", [390, 600, 700, 800])
def test_narrow_windows_show_the_whole_nav_and_long_team_names_fit(page, owner, tenant, width):
    budget_upsert(tenant=tenant, team_name=LONG_TEAM, monthly_budget_usd=40)
    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=40)
    sign_in(page, "olivia")
    page.set_viewport_size({"width": width, "height": 800})
    for url in ("/", "/budgets/"):
        page.goto(url)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{url} is {overflow}px wider than a {width}px window"
        for name in ("Overview", "Activity", "Budgets", "Sessions", "Anomalies", "Settings"):
            box = page.get_by_role("navigation", name="Main").get_by_role("link", name=name).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, f"{name} is cut off at {width}px"
    for button in page.locator(".budgets-table .actions .btn").all():
        box = button.bounding_box()
        assert box["x"] + box["width"] <= width, f"{button.inner_text()} is off-screen at {width}px"
    screenshot(page, f"narrow-budgets-{width}")


def test_load_more_appends_older_rows_in_place(page, owner, tenant, console):
    """The "Load older …" buttons (here the audit log's) add the next page's rows to the same table, once."""
    from budgets.models import BudgetAuditLog

    for n in range(55):
        BudgetAuditLog.objects.create(tenant=tenant, team_name=f"team-{n:02d}", action="created",
                                      actor_label="user olivia", after={"monthly_budget_usd": "5.00",
                                                                        "alert_threshold_pct": 80, "hard_stop": False})
    sign_in(page, "olivia")
    page.goto("/budgets/")
    rows = page.locator("#audit-rows tr")
    expect(rows).to_have_count(50)
    page.get_by_role("link", name="Load older changes").click()
    expect(rows).to_have_count(55)
    expect(rows.last).to_contain_text("team-00")
    expect(page.get_by_role("link", name="Load older changes")).to_have_count(0)
    assert page.url.endswith("/budgets/")
    assert console.errors() == []


def test_live_refresh_drops_the_empty_message_and_prices_a_pending_row(page, owner, tenant):
    """An event arrives while the list is empty and no worker has priced it yet: the live poll prepends it in
    place of the empty-state message, and once it is recorded a later poll replaces its "pending" badge."""
    from django.utils import timezone

    from usage.models import UsageEvent
    from usage.services.ingest import event_batch_ingest, parse_ingest_body
    from usage.services.recording import events_record_pending

    sign_in(page, "olivia")
    page.goto("/activity/")
    expect(page.locator("#no-events")).to_be_visible()
    now = timezone.now()
    event_batch_ingest(tenant=tenant, events=parse_ingest_body({"events": [event(event_id="late-1")]}, now=now),
                       received_at=now)
    row = page.locator(f"#evt-{UsageEvent.objects.get(event_id='late-1').pk}")
    expect(row).to_contain_text("pending", timeout=12_000)
    expect(page.locator("#no-events")).to_have_count(0)
    events_record_pending()
    expect(row).to_contain_text("$0.0036", timeout=12_000)
    expect(row).not_to_contain_text("pending")
    expect(page.locator("details.evt")).to_have_count(1)


def test_a_long_open_activity_tab_keeps_its_list_bounded_and_loses_no_row(page, owner, tenant, monkeypatch):
    """Live refresh pushes the oldest rows out of the bottom once the list is over its cap, and "Load older
    events" then starts right after the last row kept: every event is still reachable, once, in order. Rows the
    user loaded stay until new events push them out."""
    import datetime

    from django.utils import timezone

    from usage import views

    monkeypatch.setattr(views, "ACTIVITY_MAX_ROWS", 5)
    now = timezone.now()

    def at(minutes_ago: int, name: str) -> dict:
        return event(model=name, timestamp=now - datetime.timedelta(minutes=minutes_ago))

    def models_shown() -> list[str]:
        return page.locator("details.evt .cell.mono[title]").evaluate_all(
            "cells => cells.filter(c => !c.classList.contains('hide-sm')).map(c => c.textContent)")

    record(tenant, [at(30, "old-1"), at(29, "old-2"), at(28, "old-3")])
    sign_in(page, "olivia")
    page.goto("/activity/")
    expect(page.locator("details.evt")).to_have_count(3)
    record(tenant, [at(4, "new-1"), at(3, "new-2"), at(2, "new-3"), at(1, "new-4")])
    expect(page.locator("details.evt", has_text="new-4")).to_be_visible(timeout=15_000)
    expect(page.locator("details.evt")).to_have_count(5)
    assert models_shown() == ["new-4", "new-3", "new-2", "new-1", "old-3"]

    page.get_by_role("link", name="Load older events").click()
    expect(page.locator("details.evt")).to_have_count(7)
    assert models_shown() == ["new-4", "new-3", "new-2", "new-1", "old-3", "old-2", "old-1"]
    page.wait_for_timeout(6_000)  # a poll with nothing new leaves the rows the user loaded
    expect(page.locator("details.evt")).to_have_count(7)

    record(tenant, [event(model="new-5")])
    expect(page.locator("details.evt", has_text="new-5")).to_be_visible(timeout=15_000)
    assert models_shown() == ["new-5", "new-4", "new-3", "new-2", "new-1", "old-3", "old-2"]
    page.get_by_role("link", name="Load older events").click()
    expect(page.locator("details.evt", has_text="old-1")).to_be_visible()
    assert models_shown() == ["new-5", "new-4", "new-3", "new-2", "new-1", "old-3", "old-2", "old-1"]
    expect(page.get_by_role("link", name="Load older events")).to_have_count(0)
