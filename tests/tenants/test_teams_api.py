import datetime
from decimal import Decimal

import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tenants.services import team_get_or_create
from usage.models import DailySpend


def spend(tenant, day, team_name, cost, events=1, project="p", model="gpt-4o"):
    DailySpend.objects.create(tenant=tenant, day=day, team_name=team_name, project=project, model=model,
                              events=events, prompt_tokens=10, completion_tokens=5, cost_usd=Decimal(cost))


@time_machine.travel(datetime.datetime(2026, 11, 20, 12, tzinfo=datetime.UTC), tick=False)
def test_teams_carry_month_to_date_spend_from_the_roll_ups(tenant, admin_api):
    team_get_or_create(tenant=tenant, name="payments-eng")
    team_get_or_create(tenant=tenant, name="search")
    team_get_or_create(tenant=tenant, name="idle")
    spend(tenant, datetime.date(2026, 11, 1), "payments-eng", "1.2500000001")
    spend(tenant, datetime.date(2026, 11, 19), "payments-eng", "0.0000000009", events=2, model="gpt-4o-mini")
    spend(tenant, datetime.date(2026, 10, 31), "payments-eng", "100")  # last month
    spend(tenant, datetime.date(2026, 11, 5), "search", "3.5")
    spend(tenant, datetime.date(2026, 11, 5), "", "7")  # unallocated: no team
    with CaptureQueriesContext(connection) as queries:
        response = admin_api.get("/v1/teams")
    # Teams and their month's spend come in one query, whatever the number of teams.
    reads = [q["sql"] for q in queries.captured_queries if "usage_dailyspend" in q["sql"] or "tenants_team" in q["sql"]]
    assert len(reads) == 1 and "usage_dailyspend" in reads[0] and "tenants_team" in reads[0]
    assert response.status_code == 200
    body = response.json()
    assert body["month"] == "2026-11"
    teams = {t["name"]: t for t in body["results"]}
    assert list(teams) == ["idle", "payments-eng", "search"]
    assert Decimal(str(teams["payments-eng"]["month_spend_usd"])) == Decimal("1.2500000010")
    assert teams["payments-eng"]["month_events"] == 3
    assert teams["search"]["month_spend_usd"] == 3.5
    assert teams["idle"]["month_spend_usd"] == 0 and teams["idle"]["month_events"] == 0
    assert isinstance(teams["idle"]["month_spend_usd"], (int, float))


@time_machine.travel(datetime.datetime(2026, 12, 1, 3, tzinfo=datetime.UTC), tick=False)
def test_month_is_the_tenants_local_month(tenant, admin_api):
    tenant.timezone = "America/New_York"  # 2026-11-30 22:00 there
    tenant.save()
    team_get_or_create(tenant=tenant, name="payments-eng")
    spend(tenant, datetime.date(2026, 11, 30), "payments-eng", "2")
    body = admin_api.get("/v1/teams").json()
    assert body["month"] == "2026-11"
    assert body["results"][0]["month_spend_usd"] == 2


def test_teams_are_tenant_scoped_and_admin_only(tenant, other_tenant, admin_api, telemetry_api, other_admin_api):
    team_get_or_create(tenant=tenant, name="mine")
    team_get_or_create(tenant=other_tenant, name="theirs")
    spend(other_tenant, datetime.date.today(), "mine", "5")  # same name, other tenant
    assert [t["name"] for t in admin_api.get("/v1/teams").json()["results"]] == ["mine"]
    assert admin_api.get("/v1/teams").json()["results"][0]["month_spend_usd"] == 0
    assert [t["name"] for t in other_admin_api.get("/v1/teams").json()["results"]] == ["theirs"]
    assert telemetry_api.get("/v1/teams").status_code == 403


def walk(api, url: str) -> list[list[str]]:
    """Each page's names, following `next` to the end."""
    pages = []
    while url:
        body = api.get(url).json()
        names = [row.get("team", row.get("name")) for row in body["results"]]
        pages.append(names)
        url = body["next"]
    return pages


def test_the_team_and_budget_lists_are_paged_like_every_list(tenant, admin_api):
    """README: lists answer {results, next} with `limit` 1–1,000 (default 100); these two were one page whatever
    their size, and took any limit or cursor without a word."""
    for name in ("delta", "Alpha", "charlie", "bravo", "echo"):
        admin_api.post("/v1/teams/budgets", {"team": name, "monthly_budget_usd": 10}, format="json")
    expected = [["Alpha", "bravo"], ["charlie", "delta"], ["echo"]]
    if connection.vendor == "postgresql":  # ordered by the database's collation: letters before case
        assert walk(admin_api, "/v1/teams/budgets?limit=2") == expected
        assert walk(admin_api, "/v1/teams?limit=2") == expected
    for url in ("/v1/teams/budgets", "/v1/teams"):
        pages = walk(admin_api, f"{url}?limit=2")
        assert [len(page) for page in pages] == [2, 2, 1]
        assert sorted(sum(pages, [])) == sorted(sum(expected, []))
        assert walk(admin_api, url) == [sum(pages, [])]  # one page at the default size, in the same order
        for bad in ("limit=0", "limit=abc", "limit=1001", "cursor=zz"):
            response = admin_api.get(f"{url}?{bad}")
            assert response.status_code == 400, (url, bad)
            assert set(response.json()["error"]["fields"]) == {bad.split("=")[0]}
