"""Budgets page: inline create and edit validated by the API's serializer, hard-stop toggle, delete, history."""

from decimal import Decimal

import pytest

from budgets.models import BudgetAuditLog, TeamBudget
from budgets.services import budget_alerts_check, budget_upsert
from tenants.selectors import team_by_name

from .data import event, record


def test_admin_creates_a_budget_with_the_form(admin_client, tenant):
    response = admin_client.post("/budgets/", {"team": "search", "monthly_budget_usd": "250.50",
                                               "alert_threshold_pct": "", "hard_stop": "on"})
    assert response.status_code == 302
    budget = TeamBudget.objects.get(tenant=tenant)
    assert budget.monthly_budget_usd == Decimal("250.50")
    assert budget.alert_threshold_pct == 80 and budget.hard_stop is True
    log = BudgetAuditLog.objects.get(tenant=tenant)
    assert log.actor_label == "user adam" and log.action == "created"


def test_htmx_create_returns_the_panel_with_the_new_row_and_audit_entry(admin_client, tenant, htmx):
    response = admin_client.post("/budgets/", {"team": "search", "monthly_budget_usd": "10"}, **htmx("budgets-panel"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert 'id="budget-' in html and "search" in html and "Created</strong> search" in html


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"team": "", "monthly_budget_usd": "10"}, "team", "This field may not be blank."),
    ({"team": "t", "monthly_budget_usd": "0"}, "monthly_budget_usd", "Must be greater than 0."),
    ({"team": "t", "monthly_budget_usd": "abc"}, "monthly_budget_usd", "A valid number is required."),
    ({"team": "t", "monthly_budget_usd": "1.234"}, "monthly_budget_usd", "decimal places"),
    ({"team": "t", "monthly_budget_usd": "5", "alert_threshold_pct": "101"}, "alert_threshold_pct",
     "less than or equal to 100"),
])
def test_invalid_budget_shows_the_apis_error_next_to_the_field(admin_client, tenant, htmx, data, field, message,
                                                               admin_api):
    response = admin_client.post("/budgets/", data, **htmx("budgets-panel"))
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#budget-form" and response["HX-Reswap"] == "outerHTML"
    html = response.content.decode()
    ids = {"team": "bf-team-err", "monthly_budget_usd": "bf-amount-err", "alert_threshold_pct": "bf-threshold-err"}
    error_list = html[html.index(f'id="{ids[field]}"'):]
    assert message in error_list[:400]
    assert not TeamBudget.objects.exists()
    api_body = {k: v for k, v in data.items() if v != ""} | {"team": data["team"]}
    if field != "team":
        api = admin_api.post("/v1/teams/budgets", api_body, format="json")
        assert api.status_code == 400 and any(message in m for m in api.json()["error"]["fields"][field])


def test_inline_edit_shows_the_form_then_saves(admin_client, tenant, htmx):
    budget, _ = budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("100"))
    form = admin_client.get(f"/budgets/{budget.pk}/?edit=1", **htmx(f"budget-{budget.pk}"))
    assert b'class="editing"' in form.content and b'value="100.00"' in form.content
    bad = admin_client.post(f"/budgets/{budget.pk}/edit/", {"monthly_budget_usd": "-1", "alert_threshold_pct": "80"},
                            **htmx("budgets-panel"))
    assert bad.status_code == 400 and bad["HX-Retarget"] == f"#budget-{budget.pk}"
    assert b"Must be greater than 0." in bad.content
    ok = admin_client.post(f"/budgets/{budget.pk}/edit/", {"monthly_budget_usd": "120", "alert_threshold_pct": "90",
                                                           "hard_stop": "on"}, **htmx("budgets-panel"))
    assert ok.status_code == 200
    budget.refresh_from_db()
    assert (budget.monthly_budget_usd, budget.alert_threshold_pct, budget.hard_stop) == (Decimal("120"), 90, True)
    assert b"was $100.00" in ok.content


def test_cancel_edit_returns_the_read_only_row(admin_client, tenant, htmx):
    budget, _ = budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("100"))
    row = admin_client.get(f"/budgets/{budget.pk}/", **htmx(f"budget-{budget.pk}"))
    assert b'class="editing"' not in row.content and b"Edit</a>" in row.content


def test_hard_stop_toggle_flips_and_is_audited(admin_client, tenant, htmx):
    budget, _ = budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("100"))
    admin_client.post(f"/budgets/{budget.pk}/hard-stop/", **htmx("budgets-panel"))
    budget.refresh_from_db()
    assert budget.hard_stop is True
    admin_client.post(f"/budgets/{budget.pk}/hard-stop/")
    budget.refresh_from_db()
    assert budget.hard_stop is False
    assert BudgetAuditLog.objects.filter(action="updated").count() == 2


def test_delete_removes_the_budget_and_keeps_the_team(admin_client, tenant, htmx):
    budget, _ = budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("100"))
    response = admin_client.post(f"/budgets/{budget.pk}/delete/", **htmx("budgets-panel"))
    assert response.status_code == 200
    assert not TeamBudget.objects.exists()
    assert team_by_name(tenant=tenant, name="search") is not None
    assert b"Deleted</strong> search" in response.content


def test_delete_button_asks_for_confirmation(admin_client, tenant):
    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("100"))
    assert b'hx-confirm="Delete the budget of search?' in admin_client.get("/budgets/").content


def test_alert_history_lists_threshold_crossings(admin_client, tenant):
    budget, _ = budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("1"))
    record(tenant, [event(team="search", prompt_tokens=1_000_000, completion_tokens=0)])
    budget_alerts_check(tenant=tenant, team_ids=[budget.team_id])
    html = admin_client.get("/budgets/").content.decode()
    assert "exceeded</span>" in html and "80% reached" in html


def test_alerts_of_two_months_are_told_apart_by_their_month_on_budgets_and_the_overview(admin_client, tenant):
    """Late events of last month raise last month's alerts after this month's: without the month the two rows
    read as one alert twice."""
    import datetime

    from budgets.models import BudgetAlert

    budget, _ = budget_upsert(tenant=tenant, team_name="late", monthly_budget_usd=Decimal("1"))
    for month in (datetime.date(2026, 10, 1), datetime.date(2026, 11, 1)):
        BudgetAlert.objects.create(tenant=tenant, team_id=budget.team_id, month=month, threshold_pct=80,
                                   level=BudgetAlert.Level.EXCEEDED, spend_usd=Decimal("1.2"),
                                   budget_usd=Decimal("1"))
    budgets = admin_client.get("/budgets/").content.decode()
    assert "<td>October 2026</td>" in budgets and "<td>November 2026</td>" in budgets
    overview = admin_client.get("/").content.decode()
    assert "Oct 2026" in overview and "Nov 2026" in overview


def test_viewer_sees_budgets_without_write_controls(viewer_client, tenant):
    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("100"))
    html = viewer_client.get("/budgets/").content.decode()
    assert "search" in html
    assert "Save budget" not in html and "Delete</button>" not in html and "Edit</a>" not in html


def test_budgets_page_query_count_is_flat(admin_client, tenant, django_assert_max_num_queries):
    for n in range(12):
        budget_upsert(tenant=tenant, team_name=f"team-{n}", monthly_budget_usd=Decimal("100"))
    with django_assert_max_num_queries(9):
        assert admin_client.get("/budgets/").status_code == 200


def test_clearing_the_alert_threshold_in_the_inline_edit_is_a_form_error(admin_client, tenant, htmx):
    budget, _ = budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("100"),
                              alert_threshold_pct=50)
    response = admin_client.post(f"/budgets/{budget.pk}/edit/", {"monthly_budget_usd": "100",
                                                                  "alert_threshold_pct": " "},
                                 **htmx("budgets-panel"))
    assert response.status_code == 400 and response["HX-Retarget"] == f"#budget-{budget.pk}"
    assert b"Required: the percent of the budget" in response.content
    budget.refresh_from_db()
    assert budget.alert_threshold_pct == 50
    kept = admin_client.post(f"/budgets/{budget.pk}/edit/", {"monthly_budget_usd": "120"}, **htmx("budgets-panel"))
    assert kept.status_code == 200
    budget.refresh_from_db()
    assert (budget.monthly_budget_usd, budget.alert_threshold_pct) == (Decimal("120"), 50)


def test_the_whole_audit_log_can_be_paged_through_on_the_budgets_page(owner_client, tenant, htmx):
    import re

    for n in range(55):
        BudgetAuditLog.objects.create(tenant=tenant, team_name=f"team-{n:02d}", action="created",
                                      actor_label="user alice", after={"monthly_budget_usd": "5.00",
                                                                       "alert_threshold_pct": 80, "hard_stop": False})
    page = owner_client.get("/budgets/").content.decode()
    assert "team-54" in page and "team-05" in page and "team-04" not in page  # the newest 50
    more = re.search(r'hx-get="(/budgets/\?audit_cursor=[^"]+)"', page).group(1).replace("&amp;", "&")
    older = owner_client.get(more, **htmx("audit-more")).content.decode()
    assert "<html" not in older and 'hx-swap-oob="beforeend:#audit-rows"' in older
    assert [int(n) for n in re.findall(r"team-(\d\d)", older)] == [4, 3, 2, 1, 0]
    assert 'id="audit-more"' not in older  # nothing older left
    # Without JavaScript the link shows the older page in the card; a cursor that does not parse starts over.
    assert "team-04" in owner_client.get(more).content.decode()
    assert "team-54" in owner_client.get("/budgets/?audit_cursor=garbage").content.decode()


@pytest.mark.parametrize(("method", "path"), [("get", "/budgets/{pk}/?edit=1"), ("get", "/budgets/{pk}/"),
                                               ("post", "/budgets/{pk}/edit/"), ("post", "/budgets/{pk}/hard-stop/"),
                                               ("post", "/budgets/{pk}/delete/")])
def test_a_row_whose_budget_was_deleted_meanwhile_gets_the_list_as_it_is(admin_client, tenant, htmx, method, path):
    """A 404 that brings the current list (the stale row goes) and says why in the banner; without htmx, a 404."""
    gone, _ = budget_upsert(tenant=tenant, team_name="gone", monthly_budget_usd=Decimal("10"))
    budget_upsert(tenant=tenant, team_name="kept", monthly_budget_usd=Decimal("10"))
    path = path.format(pk=gone.pk)
    TeamBudget.objects.filter(pk=gone.pk).delete()  # by someone else, after this page was rendered
    data = {"monthly_budget_usd": "12", "alert_threshold_pct": "80"} if "edit/" in path else {}
    response = getattr(admin_client, method)(path, data, **htmx("budgets-panel"))
    assert response.status_code == 404
    assert response["HX-Retarget"] == "#budgets-panel" and "deleted it meanwhile" in response["AW-Banner"]
    assert b">kept</a>" in response.content and b">gone</a>" not in response.content
    assert getattr(admin_client, method)(path, data).status_code == 404
