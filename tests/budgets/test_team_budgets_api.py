"""Team budgets over the admin REST API: the seed's examples, create/replace, read, PATCH, DELETE, validation,
audit log, tenant isolation and scope."""

import datetime
import json
import subprocess
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from budgets.models import BudgetAuditLog, TeamBudget
from tenants.models import Team
from tests.factories import TeamFactory
from usage.models import DailySpend, MonthlyTeamSpend, UsageEvent

# The seed's curl -d body, byte for byte.
SEED_BODY = """{
    "team": "backend-engineers",
    "monthly_budget_usd": 500.00,
    "alert_threshold_pct": 80,
    "hard_stop": true
  }"""
SEED_CHECK_RESPONSE = """{
  "team": "backend-engineers",
  "monthly_budget_usd": 500.00,
  "current_spend": 342.50,
  "pct_used": 68.5,
  "hard_stop": true,
  "status": "ok"
}"""
BUDGET_KEYS = {"team", "monthly_budget_usd", "alert_threshold_pct", "hard_stop", "current_spend", "pct_used",
               "status", "created_at", "updated_at"}


def spend(tenant, team_name: str, amount: str, day=None, model: str = "gpt-4o") -> None:
    """Spend as the recorder rolls it up: the day's row and the team's month total."""
    day = day or timezone.now().date()
    DailySpend.objects.create(tenant=tenant, day=day, team_name=team_name, model=model, cost_usd=Decimal(amount))
    month, _ = MonthlyTeamSpend.objects.get_or_create(tenant=tenant, month=day.replace(day=1), team_name=team_name)
    MonthlyTeamSpend.objects.filter(pk=month.pk).update(cost_usd=F("cost_usd") + Decimal(amount))


def create(api, **fields):
    body = {"team": "backend-engineers", "monthly_budget_usd": 500, **fields}
    return api.post("/v1/teams/budgets", body, format="json")


def field_errors(response) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "validation_error"
    assert error["message"] and error["request_id"]
    return error["fields"]


def curl(live_server, *args) -> tuple[int, dict]:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


def test_seed_curl_examples_replayed_verbatim_give_the_documented_shape(tenant, admin_key, live_server):
    status, created = curl(
        live_server, "-X", "POST", f"{live_server.url}/v1/teams/budgets",
        "-H", f"Authorization: Bearer {admin_key}", "-H", "Content-Type: application/json", "-d", SEED_BODY,
    )
    assert status == 201, created
    assert set(created) == BUDGET_KEYS
    for key, value in json.loads(SEED_BODY).items():
        assert created[key] == value and type(created[key]) is type(value), key
    spend(tenant, "backend-engineers", "300.00")
    spend(tenant, "backend-engineers", "42.50", model="gpt-4o-mini")

    status, checked = curl(live_server, "-H", f"Authorization: Bearer {admin_key}",
                           f"{live_server.url}/v1/teams/budget-check?team=backend-engineers")
    assert status == 200
    documented = json.loads(SEED_CHECK_RESPONSE)
    assert list(checked) == list(documented)
    for key, value in documented.items():
        assert checked[key] == value, key
        # Money and percentages are JSON numbers, never strings.
        assert isinstance(checked[key], type(value)) or (isinstance(value, float) and type(checked[key]) is float)


def test_post_twice_creates_then_replaces_with_defaults_restored(tenant, admin_api):
    first = create(admin_api, alert_threshold_pct=50, hard_stop=True)
    assert first.status_code == 201
    second = create(admin_api, team="Backend-Engineers", monthly_budget_usd=750.25)
    assert second.status_code == 200
    body = second.json()
    # The team keeps its first spelling; a replace sets every field, defaults included.
    assert (body["team"], body["monthly_budget_usd"], body["alert_threshold_pct"], body["hard_stop"]) == (
        "backend-engineers", 750.25, 80, False)
    assert Team.objects.filter(tenant=tenant).count() == 1
    assert TeamBudget.objects.get(tenant=tenant).monthly_budget_usd == Decimal("750.25")


def test_list_shows_every_budget_with_month_spend_in_one_query_for_spend(tenant, admin_api):
    for n in range(5):
        create(admin_api, team=f"team-{n}", monthly_budget_usd=100)
        spend(tenant, f"team-{n}", f"{n * 10}.00")
    spend(tenant, "team-1", "5.00", day=timezone.now().date().replace(day=1) - datetime.timedelta(days=1))
    TeamFactory(tenant=tenant, name="no-budget")
    with CaptureQueriesContext(connection) as queries:
        response = admin_api.get("/v1/teams/budgets")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [r["team"] for r in rows] == [f"team-{n}" for n in range(5)]
    assert [r["current_spend"] for r in rows] == [0, 10.0, 20.0, 30.0, 40.0]
    assert [r["pct_used"] for r in rows] == [0, 10.0, 20.0, 30.0, 40.0]
    spend_queries = [q for q in queries.captured_queries if "usage_dailyspend" in q["sql"]]
    assert len(spend_queries) == 1


def test_get_one_budget_matches_the_team_ignoring_case(tenant, admin_api):
    create(admin_api, team="Backend-Engineers")
    spend(tenant, "Backend-Engineers", "450.00")
    response = admin_api.get("/v1/teams/budgets/BACKEND-engineers")
    assert response.status_code == 200
    assert (response.json()["team"], response.json()["status"], response.json()["pct_used"]) == (
        "Backend-Engineers", "alert", 90.0)


@pytest.mark.parametrize(("spent", "pct_used", "status"), [
    ("2.3999970000", 79.99, "ok"), ("2.4", 80.0, "alert"), ("2.9999970000", 99.99, "alert"), ("3", 100.0, "exceeded"),
])
def test_pct_used_reaches_a_level_exactly_when_status_does(tenant, admin_api, spent, pct_used, status):
    """Rounded down: a script comparing pct_used with the threshold (or 100) agrees with status."""
    create(admin_api, team="tight", monthly_budget_usd=3, alert_threshold_pct=80)
    spend(tenant, "tight", spent)
    for body in (admin_api.get("/v1/teams/budget-check?team=tight").json(),
                 admin_api.get("/v1/teams/budgets/tight").json()):
        assert (body["pct_used"], body["status"]) == (pct_used, status)


def test_team_name_with_slash_and_spaces_reaches_its_budget(admin_api):
    assert create(admin_api, team="infra / platform").status_code == 201
    response = admin_api.get("/v1/teams/budgets/infra%20%2F%20platform")
    assert response.status_code == 200 and response.json()["team"] == "infra / platform"


def test_a_team_name_with_surrounding_spaces_is_the_same_team_everywhere(tenant, admin_api, telemetry_api,
                                                                          recording):
    assert create(admin_api, team="ws-team", monthly_budget_usd=2, hard_stop=True).status_code == 201
    # An event accepted before names were trimmed at ingest (stored with the spaces) counts for ws-team.
    UsageEvent.objects.create(tenant=tenant, event_id="old", model="gpt-4o", prompt_tokens=1_000_000,
                              team_name=" WS-team", timestamp=timezone.now(), received_at=timezone.now())
    # From the SDK, with a stray space: the spend lands on ws-team's budget, not on a team of its own.
    response = telemetry_api.post("/v1/ingest", {"model": "gpt-4o", "prompt_tokens": 1_000_000, "team": "ws-team "},
                                  format="json")
    assert response.status_code == 202
    recording()
    assert list(Team.objects.filter(tenant=tenant).values_list("name", flat=True)) == ["ws-team"]
    team = Team.objects.get(tenant=tenant)
    assert set(UsageEvent.objects.filter(tenant=tenant).values_list("team_id", flat=True)) == {team.pk}
    assert UsageEvent.objects.exclude(event_id="old").get(tenant=tenant).team_name == "ws-team"
    for path in ("/v1/teams/budgets/ws-team", "/v1/teams/budgets/ws-team%20", "/v1/teams/budget-check?team=ws-team%20"):
        response = admin_api.get(path)
        assert response.status_code == 200, (path, response.content)
        assert (response.json()["current_spend"], response.json()["status"]) == (6.0, "exceeded"), path
    assert create(admin_api, team=" ws-team ", monthly_budget_usd=10).status_code == 200  # replaces, no new team
    assert Team.objects.filter(tenant=tenant).count() == 1


def test_patch_changes_only_the_fields_sent(tenant, admin_api):
    create(admin_api, alert_threshold_pct=70, hard_stop=True)
    response = admin_api.patch("/v1/teams/budgets/backend-engineers", {"monthly_budget_usd": 900.5},
                               format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["monthly_budget_usd"], body["alert_threshold_pct"], body["hard_stop"]) == (900.5, 70, True)
    response = admin_api.patch("/v1/teams/budgets/backend-engineers", {"hard_stop": False}, format="json")
    assert response.json()["hard_stop"] is False and response.json()["monthly_budget_usd"] == 900.5


def test_patch_validates_like_post_and_cannot_move_the_budget(admin_api):
    create(admin_api)
    fields = field_errors(admin_api.patch("/v1/teams/budgets/backend-engineers", {"hard_stop": "yes"},
                                          format="json"))
    assert list(fields) == ["hard_stop"]
    fields = field_errors(admin_api.patch("/v1/teams/budgets/backend-engineers", {"team": "other"},
                                          format="json"))
    assert list(fields) == ["team"]
    assert admin_api.patch("/v1/teams/budgets/backend-engineers", {"team": "BACKEND-ENGINEERS"},
                           format="json").status_code == 200


def test_delete_removes_the_budget_but_keeps_the_team(tenant, admin_api):
    create(admin_api)
    assert admin_api.delete("/v1/teams/budgets/backend-engineers").status_code == 204
    assert not TeamBudget.objects.filter(tenant=tenant).exists()
    assert Team.objects.filter(tenant=tenant, name="backend-engineers").exists()
    response = admin_api.get("/v1/teams/budgets/backend-engineers")
    assert response.status_code == 404 and response.json()["error"]["code"] == "budget_not_found"
    assert admin_api.delete("/v1/teams/budgets/backend-engineers").status_code == 404


def test_unknown_team_and_team_without_budget_are_404s_with_different_messages(tenant, admin_api):
    TeamFactory(tenant=tenant, name="no-budget")
    unknown = admin_api.get("/v1/teams/budget-check?team=nobody")
    no_budget = admin_api.get("/v1/teams/budget-check?team=no-budget")
    assert unknown.status_code == no_budget.status_code == 404
    unknown, no_budget = unknown.json()["error"], no_budget.json()["error"]
    assert unknown["type"] == no_budget["type"] == "not_found_error"
    assert (unknown["code"], no_budget["code"]) == ("team_not_found", "budget_not_found")
    assert "No team named 'nobody'" in unknown["message"]
    assert "has no budget set" in no_budget["message"]
    for path in ("/v1/teams/budgets/nobody", "/v1/teams/budgets/no-budget"):
        assert admin_api.patch(path, {"hard_stop": True}, format="json").status_code == 404


def test_budget_check_without_team_is_a_400(admin_api):
    for query in ("", "?team=", "?team=%20"):
        assert list(field_errors(admin_api.get(f"/v1/teams/budget-check{query}"))) == ["team"]


@pytest.mark.parametrize(("field", "value"), [
    ("team", ""),
    ("team", "   "),
    ("team", "x" * 101),
    ("team", "tab\there"),
    ("team", "bell\x07"),
    ("team", "\u200b"),  # a zero-width space alone: a budget row with a blank name
    ("team", " \ufeff\u200d "),
    ("team", 42),
    ("monthly_budget_usd", 0),
    ("monthly_budget_usd", -5),
    ("monthly_budget_usd", 10.001),
    ("monthly_budget_usd", 10_000_000.01),
    ("monthly_budget_usd", "NaN"),
    ("monthly_budget_usd", "Infinity"),
    ("monthly_budget_usd", "lots"),
    ("monthly_budget_usd", True),
    ("monthly_budget_usd", None),
    ("alert_threshold_pct", 0),
    ("alert_threshold_pct", 101),
    ("alert_threshold_pct", 50.5),
    ("alert_threshold_pct", "eighty"),
    ("hard_stop", "yes"),
    ("hard_stop", "true"),
    ("hard_stop", 1),
    ("hard_stop", None),
])
def test_each_validation_rule_gives_a_400_naming_the_field(admin_api, field, value):
    body = {"team": "backend-engineers", "monthly_budget_usd": 500, field: value}
    fields = field_errors(admin_api.post("/v1/teams/budgets", body, format="json"))
    assert list(fields) == [field] and fields[field][0]
    assert not TeamBudget.objects.exists()


def test_missing_fields_and_non_object_bodies_are_400s(admin_api):
    assert set(field_errors(admin_api.post("/v1/teams/budgets", {}, format="json"))) == {
        "team", "monthly_budget_usd"}
    assert admin_api.post("/v1/teams/budgets", [1, 2], format="json").status_code == 400
    response = admin_api.post("/v1/teams/budgets", "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_upper_bound_and_two_decimals_are_accepted(admin_api):
    response = create(admin_api, monthly_budget_usd=10_000_000)
    assert response.status_code == 201 and response.json()["monthly_budget_usd"] == 10_000_000
    assert create(admin_api, team="small", monthly_budget_usd=0.01).json()["monthly_budget_usd"] == 0.01


def test_every_change_is_in_the_audit_log_with_who_what_and_when(tenant, admin_api):
    create(admin_api, monthly_budget_usd=500)
    create(admin_api, monthly_budget_usd=500)  # same values: nothing changed, nothing logged
    admin_api.patch("/v1/teams/budgets/backend-engineers", {"hard_stop": True}, format="json")
    admin_api.delete("/v1/teams/budgets/backend-engineers")
    rows = list(BudgetAuditLog.objects.filter(tenant=tenant).order_by("created_at", "id"))
    assert [r.action for r in rows] == ["created", "updated", "deleted"]
    key_prefix = rows[0].actor_key.prefix
    assert all(r.actor_label == f"key {key_prefix}…" and r.team_name == "backend-engineers" for r in rows)
    assert rows[0].before is None and rows[0].after == {
        "monthly_budget_usd": "500.00", "alert_threshold_pct": 80, "hard_stop": False}
    assert rows[1].before["hard_stop"] is False and rows[1].after["hard_stop"] is True
    assert rows[2].before["hard_stop"] is True and rows[2].after is None
    assert all(r.created_at is not None for r in rows)


def test_the_audit_log_is_readable_over_the_api_newest_first_paged_by_team_and_never_across_tenants(
        tenant, admin_api, other_admin_api):
    create(admin_api, monthly_budget_usd=500)
    admin_api.patch("/v1/teams/budgets/backend-engineers", {"monthly_budget_usd": "750.5"}, format="json")
    create(admin_api, team="ops", monthly_budget_usd=20, hard_stop=True)
    admin_api.delete("/v1/teams/budgets/backend-engineers")
    key_label = f"key {BudgetAuditLog.objects.filter(tenant=tenant).first().actor_key.prefix}…"

    first = admin_api.get("/v1/audit-log?limit=3").json()
    assert [(e["team"], e["action"]) for e in first["results"]] == [
        ("backend-engineers", "deleted"), ("ops", "created"), ("backend-engineers", "updated")]
    updated = first["results"][2]
    assert updated["actor"] == key_label
    assert updated["before"] == {"monthly_budget_usd": 500.0, "alert_threshold_pct": 80, "hard_stop": False}
    assert updated["after"] == {"monthly_budget_usd": 750.5, "alert_threshold_pct": 80, "hard_stop": False}
    assert first["results"][0]["after"] is None
    rest = admin_api.get(first["next"]).json()
    assert [(e["team"], e["action"], e["before"]) for e in rest["results"]] == [
        ("backend-engineers", "created", None)]
    assert rest["next"] is None

    only = admin_api.get("/v1/audit-log?team= OPS ").json()["results"]
    assert [(e["team"], e["action"]) for e in only] == [("ops", "created")]
    assert other_admin_api.get("/v1/audit-log").json() == {"results": [], "next": None}
    assert admin_api.get("/v1/audit-log?limit=0").status_code == 400


def test_telemetry_keys_cannot_read_the_audit_log(telemetry_api):
    assert telemetry_api.get("/v1/audit-log").status_code == 403


def test_another_tenants_budgets_are_404_never_403(tenant, other_tenant, admin_api, other_admin_api):
    create(admin_api, team="secret-team")
    spend(tenant, "secret-team", "100.00")
    assert other_admin_api.get("/v1/teams/budgets").json()["results"] == []
    for method, path in [
        ("get", "/v1/teams/budgets/secret-team"),
        ("patch", "/v1/teams/budgets/secret-team"),
        ("delete", "/v1/teams/budgets/secret-team"),
        ("get", "/v1/teams/budget-check?team=secret-team"),
    ]:
        response = getattr(other_admin_api, method)(path, {"hard_stop": True} if method == "patch" else None,
                                                    format="json")
        assert response.status_code == 404, (method, path)
        assert "secret" not in json.dumps(response.json()["error"]).replace("secret-team'", "")
    # The same name in the other tenant is its own team with its own budget and spend.
    response = create(other_admin_api, team="secret-team", monthly_budget_usd=1)
    assert response.status_code == 201 and response.json()["current_spend"] == 0
    assert TeamBudget.objects.get(tenant=tenant).monthly_budget_usd == Decimal("500")
    assert Team.objects.filter(tenant=other_tenant).count() == 1


def test_telemetry_key_gets_403_on_every_budget_admin_endpoint(telemetry_api):
    for method, path in [
        ("post", "/v1/teams/budgets"), ("get", "/v1/teams/budgets"), ("get", "/v1/teams/budgets/x"),
        ("patch", "/v1/teams/budgets/x"), ("delete", "/v1/teams/budgets/x"),
        ("get", "/v1/teams/budget-check?team=x"), ("get", "/v1/alerts"),
    ]:
        response = getattr(telemetry_api, method)(path, {} if method in ("post", "patch") else None, format="json")
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["type"] == "permission_error"


def test_paths_with_trailing_slash_are_404_not_redirects(admin_api):
    response = admin_api.get("/v1/teams/budgets/")
    assert response.status_code == 404


@pytest.mark.parametrize("amount", ["1_000", " 500 ", "٥٠٠", "500\n", "0x1F4", "5e", True])
def test_amounts_are_numbers_or_plainly_spelled_numbers(tenant, admin_api, amount):
    # Decimal() reads all of these; a client sending them has a bug to hear about.
    assert field_errors(create(admin_api, monthly_budget_usd=amount)) == {
        "monthly_budget_usd": ["A valid number is required."]}
    assert not TeamBudget.objects.exists()


@pytest.mark.parametrize(("amount", "stored"), [("500", "500"), ("12.50", "12.5"), ("1e2", "100"), (0.01, "0.01")])
def test_amounts_as_strings_or_numbers(tenant, admin_api, amount, stored):
    assert create(admin_api, monthly_budget_usd=amount).status_code == 201
    assert TeamBudget.objects.get().monthly_budget_usd == Decimal(stored)


def test_a_budget_deleted_by_another_request_mid_way_is_a_404_and_the_log_records_what_was_deleted(tenant,
                                                                                                   admin_api):
    """Two admins (or scripts) at once: a PATCH whose budget another request deleted after it was read is a 404
    (it was a 500), and a DELETE logs the values it deleted, not those it read before another change."""
    from agentwatch_site.errors import NotFound
    from budgets.selectors import budget_with_spend
    from budgets.services import budget_delete, budget_update

    create(admin_api, monthly_budget_usd=10)
    team = Team.objects.get()
    read_by_first = budget_with_spend(tenant=tenant, team=team)
    read_by_second = budget_with_spend(tenant=tenant, team=team)
    budget_update(budget=read_by_second, monthly_budget_usd=Decimal("30"))
    budget_delete(budget=read_by_first)
    deleted = BudgetAuditLog.objects.get(action=BudgetAuditLog.Action.DELETED)
    assert deleted.before["monthly_budget_usd"] == "30.00"

    with pytest.raises(NotFound) as raised:
        budget_update(budget=read_by_second, hard_stop=True)
    assert raised.value.status == 404 and raised.value.code == "budget_not_found"
    with pytest.raises(NotFound):
        budget_delete(budget=read_by_second)
    assert BudgetAuditLog.objects.filter(action=BudgetAuditLog.Action.DELETED).count() == 1


def test_a_post_answers_with_what_it_wrote_even_if_deleted_right_after(tenant, admin_api, monkeypatch):
    from budgets import api
    from budgets.services import budget_upsert

    def upsert_then_someone_deletes(**kwargs):
        written = budget_upsert(**kwargs)
        TeamBudget.objects.all().delete()
        return written

    monkeypatch.setattr(api, "budget_upsert", upsert_then_someone_deletes)
    response = create(admin_api, monthly_budget_usd=42)
    assert response.status_code == 201
    assert (response.json()["monthly_budget_usd"], response.json()["current_spend"]) == (42, 0)


def test_the_alert_and_audit_filters_name_a_team_as_the_budget_endpoints_do(tenant, admin_api):
    """?team= on /v1/alerts and /v1/audit-log matches ignoring case exactly as the teams' unique constraint (and so
    /v1/teams/budgets/{team}) does: "σας" is not "ΣΑΣ", and "istanbul" finds "İstanbul" where the database folds
    it so."""
    from budgets.models import BudgetAlert
    from tenants.selectors import team_by_name

    for name in ("İstanbul", "ΣΑΣ", "σας"):
        assert create(admin_api, team=name, monthly_budget_usd=1).status_code == 201
        spend(tenant, name, "2.00")
        BudgetAlert.objects.create(tenant=tenant, team=team_by_name(tenant=tenant, name=name),
                                   month=timezone.now().date().replace(day=1), level="exceeded", threshold_pct=100,
                                   spend_usd=Decimal("2"), budget_usd=Decimal("1"))
    # The database's lower() folds "ΣΑΣ" to "σασ", not to "σας" (final sigma) as Python's lower() does.
    assert {e["team"] for e in admin_api.get("/v1/audit-log", {"team": "σας"}).json()["results"]} == {"σας"}
    assert {a["team"] for a in admin_api.get("/v1/alerts", {"team": "ΣΑΣ"}).json()["results"]} == {"ΣΑΣ"}
    for asked in ("istanbul", "İSTANBUL", "σας", "ΣΑΣ", "ςας"):
        team = team_by_name(tenant=tenant, name=asked)
        expected = {team.name} if team else set()
        found = admin_api.get(f"/v1/teams/budgets/{asked}")
        assert (found.status_code == 200) == bool(team) and (not team or found.json()["team"] == team.name)
        audit = admin_api.get("/v1/audit-log", {"team": asked}).json()["results"]
        alerts = admin_api.get("/v1/alerts", {"team": asked}).json()["results"]
        assert {entry["team"] for entry in audit} == expected, asked
        assert {alert["team"] for alert in alerts} == expected, asked


def test_a_long_amount_string_is_refused_by_its_length(tenant, admin_api):
    """A pattern that backtracked between two runs of digits took seconds on a few thousand digits (and a body may
    hold a megabyte): the length is checked first (the pattern itself is linear)."""
    errors = field_errors(create(admin_api, monthly_budget_usd="1" * 200_000 + "x"))
    assert errors == {"monthly_budget_usd": ["String value too large."]}


def test_an_unknown_field_is_reported_with_the_other_field_errors(tenant, admin_api):
    assert field_errors(create(admin_api, monthly_budget_usd=-1, hardstop=True)) == {
        "monthly_budget_usd": ["Must be greater than 0."],
        "hardstop": ["Unknown field; the fields are team, monthly_budget_usd, alert_threshold_pct, hard_stop."]}


def test_a_patch_naming_its_own_team_as_the_database_folds_it_is_accepted(tenant, admin_api):
    assert create(admin_api, team="Payments").status_code == 201
    response = admin_api.patch("/v1/teams/budgets/payments", {"team": "PAYMENTS", "hard_stop": True}, format="json")
    assert response.status_code == 200 and response.json()["hard_stop"] is True
    moved = admin_api.patch("/v1/teams/budgets/payments", {"team": "search"}, format="json")
    assert field_errors(moved) == {"team": ["Does not match the team in the URL."]}
