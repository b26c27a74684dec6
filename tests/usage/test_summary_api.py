import datetime
from decimal import Decimal

import pytest
import time_machine

from usage.models import DailySpend


def spend(tenant, day, team_name="payments-eng", project="checkout", model="gpt-4o", cost="1", events=1,
          prompt=100, completion=10):
    DailySpend.objects.create(tenant=tenant, day=day, team_name=team_name, project=project, model=model,
                              events=events, prompt_tokens=prompt, completion_tokens=completion,
                              cost_usd=Decimal(cost))


def summary(api, **params):
    response = api.get("/v1/usage/summary", params)
    assert response.status_code == 200, response.content
    return response.json()


def as_decimal(number) -> Decimal:
    return Decimal(str(number))


@pytest.fixture
def month_of_spend(tenant):
    spend(tenant, datetime.date(2026, 10, 31), cost="50")
    spend(tenant, datetime.date(2026, 11, 1), cost="0.0000000001")
    spend(tenant, datetime.date(2026, 11, 1), model="gpt-4o-mini", cost="0.25", events=3)
    spend(tenant, datetime.date(2026, 11, 2), team_name="search", project="index", cost="1.1")
    spend(tenant, datetime.date(2026, 11, 2), team_name="", project="", cost="2", events=2)


def test_group_by_team_sums_the_roll_ups_with_totals(tenant, admin_api, month_of_spend):
    body = summary(admin_api, group_by="team", **{"from": "2026-11-01", "to": "2026-11-30"})
    assert body["group_by"] == ["team"]
    assert body["rows"] == [
        {"team": None, "events": 2, "prompt_tokens": 100, "completion_tokens": 10, "cost_usd": 2.0},
        {"team": "payments-eng", "events": 4, "prompt_tokens": 200, "completion_tokens": 20,
         "cost_usd": 0.2500000001},
        {"team": "search", "events": 1, "prompt_tokens": 100, "completion_tokens": 10, "cost_usd": 1.1},
    ]
    assert body["totals"]["events"] == 7
    assert as_decimal(body["totals"]["cost_usd"]) == Decimal("3.3500000001")


def test_group_by_several_dimensions(tenant, admin_api, month_of_spend):
    body = summary(admin_api, group_by="day,model", **{"from": "2026-11-01"})
    keys = [(row["day"], row["model"]) for row in body["rows"]]
    assert keys == [("2026-11-01", "gpt-4o"), ("2026-11-01", "gpt-4o-mini"), ("2026-11-02", "gpt-4o")]
    assert set(body["rows"][0]) == {"day", "model", "events", "prompt_tokens", "completion_tokens", "cost_usd"}
    every = summary(admin_api, group_by="day,team,project,model", **{"from": "2026-10-01"})
    assert len(every["rows"]) == 5


def test_without_group_by_one_row_for_the_range(tenant, admin_api, month_of_spend):
    body = summary(admin_api, **{"from": "2026-10-01", "to": "2026-10-31"})
    assert body["rows"] == [{"events": 1, "prompt_tokens": 100, "completion_tokens": 10, "cost_usd": 50.0}]
    assert body["totals"]["cost_usd"] == 50.0
    empty = summary(admin_api, **{"from": "2020-01-01", "to": "2020-01-31"})
    assert empty["totals"] == {"events": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}


@time_machine.travel(datetime.datetime(2026, 11, 15, 12, tzinfo=datetime.UTC), tick=False)
def test_default_range_is_the_current_month(tenant, admin_api, month_of_spend):
    body = summary(admin_api, group_by="day")
    assert body["date_from"] == "2026-11-01" and body["date_to"] is None
    assert [row["day"] for row in body["rows"]] == ["2026-11-01", "2026-11-02"]
    assert summary(admin_api, group_by="day", **{"from": ""})["date_from"] == "2026-11-01"
    october = summary(admin_api, group_by="day", to="2026-10-31")
    assert october["date_from"] == "2026-10-01" and [row["day"] for row in october["rows"]] == ["2026-10-31"]


def test_money_is_a_json_number(tenant, admin_api, month_of_spend):
    raw = admin_api.get("/v1/usage/summary", {"group_by": "team", "from": "2026-11-01"}).content.decode()
    assert '"cost_usd":"' not in raw.replace(" ", "")


@pytest.mark.parametrize("params, field", [
    ({"group_by": "week"}, "group_by"), ({"group_by": "team,team"}, "group_by"), ({"group_by": "team;day"}, "group_by"),
    ({"from": "November"}, "from"), ({"to": "2026-02-30"}, "to"), ({"from": "2026-11-05", "to": "2026-11-01"}, "to"),
])
def test_bad_parameters_are_400(tenant, admin_api, params, field):
    response = admin_api.get("/v1/usage/summary", params)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_summary_is_tenant_scoped_and_admin_only(tenant, other_tenant, admin_api, other_admin_api, telemetry_api,
                                                 month_of_spend):
    spend(other_tenant, datetime.date(2026, 11, 1), cost="999")
    mine = summary(admin_api, **{"from": "2026-11-01"})
    assert as_decimal(mine["totals"]["cost_usd"]) == Decimal("3.3500000001")
    theirs = summary(other_admin_api, **{"from": "2026-11-01"})
    assert theirs["totals"]["cost_usd"] == 999
    assert telemetry_api.get("/v1/usage/summary").status_code == 403
