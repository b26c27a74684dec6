import csv
import datetime
import io
import json
from decimal import Decimal

import pytest
from django.db.models import Sum

from usage.models import DailySpend, UsageEvent


def spend(tenant, day, team_name="payments-eng", project="checkout", model="gpt-4o", cost="1", events=1):
    DailySpend.objects.create(tenant=tenant, day=day, team_name=team_name, project=project, model=model,
                              events=events, prompt_tokens=100 * events, completion_tokens=10 * events,
                              cost_usd=Decimal(cost))


def export(api, **params):
    response = api.get("/v1/usage/export.csv", params)
    assert response.status_code == 200, response.content
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    return response, list(csv.reader(io.StringIO(text)))


def test_chargeback_rows_unallocated_and_exact_totals(tenant, admin_api):
    spend(tenant, datetime.date(2026, 10, 31), cost="50")
    spend(tenant, datetime.date(2026, 11, 1), cost="0.0000000001")
    spend(tenant, datetime.date(2026, 11, 1), model="gpt-4o-mini", cost="0.25", events=3)
    spend(tenant, datetime.date(2026, 11, 30), team_name="", project="", cost="2", events=2)
    spend(tenant, datetime.date(2026, 12, 1), cost="70")
    response, rows = export(admin_api, month="2026-11")
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="agentwatch-alice-2026-11.csv"'
    assert rows == [
        ["day", "team", "project", "model", "events", "prompt_tokens", "completion_tokens", "cost_usd"],
        ["2026-11-01", "payments-eng", "checkout", "gpt-4o", "1", "100", "10", "0.0000000001"],
        ["2026-11-01", "payments-eng", "checkout", "gpt-4o-mini", "3", "300", "30", "0.2500000000"],
        ["2026-11-30", "UNALLOCATED", "", "gpt-4o", "2", "200", "20", "2.0000000000"],
        ["TOTAL", "", "", "", "6", "600", "60", "2.2500000001"],
    ]


def test_group_by_collapses_columns(tenant, admin_api):
    spend(tenant, datetime.date(2026, 11, 1), cost="1.5")
    spend(tenant, datetime.date(2026, 11, 2), model="gpt-4o-mini", cost="0.5")
    spend(tenant, datetime.date(2026, 11, 2), team_name="", cost="3")
    _, rows = export(admin_api, month="2026-11", group_by="model,team")
    assert rows == [
        ["team", "model", "events", "prompt_tokens", "completion_tokens", "cost_usd"],
        ["UNALLOCATED", "gpt-4o", "1", "100", "10", "3.0000000000"],
        ["payments-eng", "gpt-4o", "1", "100", "10", "1.5000000000"],
        ["payments-eng", "gpt-4o-mini", "1", "100", "10", "0.5000000000"],
        ["TOTAL", "", "3", "300", "30", "5.0000000000"],
    ]


def test_empty_month_has_header_and_zero_totals(tenant, admin_api):
    _, rows = export(admin_api, month="2020-02")
    assert rows[0][0] == "day" and rows[-1] == ["TOTAL", "", "", "", "0", "0", "0", "0.0000000000"]


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "11-2026", "1999-11", "2026-11-01", "x" * 500, "٢٠٢٦-١١",
                                   "9999-12", "0000-01", "0001-01"])
def test_bad_month_is_a_json_400(tenant, admin_api, month):
    response = admin_api.get("/v1/usage/export.csv", {"month": month}, HTTP_ACCEPT="text/csv")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "month" in response.json()["error"]["fields"]


def test_the_earliest_event_ingest_takes_can_be_exported_in_a_time_zone_west_of_utc(tenant, admin_api,
                                                                                    telemetry_api, recording):
    """2000-01-01T00:00Z, the earliest time ingest accepts, is 31 December 1999 in Etc/GMT+12."""
    tenant.timezone = "Etc/GMT+12"
    tenant.save()
    response = telemetry_api.post("/v1/ingest", {"model": "gpt-4o", "prompt_tokens": 1_000_000, "team": "old",
                                                 "timestamp": "2000-01-01T00:00:00Z"}, format="json")
    assert response.status_code == 202
    recording()
    _, rows = export(admin_api, month="1999-12")
    assert rows[1][:2] == ["1999-12-31", "old"] and rows[-1][-1] == "3.0000000000"


def test_names_a_spreadsheet_would_run_as_formulas_are_defused(tenant, admin_api):
    # Team, project and model names come from any telemetry key: none may run in the admin's spreadsheet.
    spend(tenant, datetime.date(2026, 11, 1), team_name="=HYPERLINK(\"http://evil\")", project="+cmd",
          model="@SUM(1+1)")
    spend(tenant, datetime.date(2026, 11, 2), team_name="-team", project="ok", model="gpt-4o")
    _, rows = export(admin_api, month="2026-11")
    assert rows[1][1:4] == ["'=HYPERLINK(\"http://evil\")", "'+cmd", "'@SUM(1+1)"]
    assert rows[2][1:4] == ["'-team", "ok", "gpt-4o"]
    assert rows[-1][0] == "TOTAL"


def test_bad_group_by_is_a_400(tenant, admin_api):
    response = admin_api.get("/v1/usage/export.csv", {"month": "2026-11", "group_by": "customer"})
    assert response.status_code == 400 and "group_by" in response.json()["error"]["fields"]


def test_export_is_tenant_scoped_and_admin_only(tenant, other_tenant, admin_api, other_admin_api, telemetry_api):
    spend(other_tenant, datetime.date(2026, 11, 3), team_name="theirs", cost="9")
    _, rows = export(admin_api, month="2026-11")
    assert len(rows) == 2 and rows[-1][-1] == "0.0000000000"
    _, theirs = export(other_admin_api, month="2026-11")
    assert theirs[1][1] == "theirs"
    assert telemetry_api.get("/v1/usage/export.csv").status_code == 403


def test_csv_total_equals_summary_and_event_costs_exactly(tenant, telemetry_api, admin_api, recording):
    """Through the real path: ingest, record (worker), roll up; catalog prices give 10-decimal costs; the tenant's
    month (New York) is not the UTC month."""
    tenant.cost_mode = "catalog"
    tenant.timezone = "America/New_York"
    tenant.save()
    models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "mystery-model"]
    events = []
    for i in range(240):
        moment = datetime.datetime(2026, 10, 1, 2, tzinfo=datetime.UTC) + datetime.timedelta(hours=3 * i + i % 3)
        events.append({
            "model": models[i % 4], "prompt_tokens": 1000 + 37 * i, "completion_tokens": 13 * i + 1,
            "team": ["payments-eng", "Search", None][i % 3], "project": ["checkout", "", "index"][i % 3] or None,
            "timestamp": moment.isoformat(), "event_id": f"e{i}",
        })
    assert telemetry_api.post("/v1/ingest", {"events": events}, format="json").status_code == 202
    recording()

    # October 2026 in New York: 2026-10-01T04:00Z to 2026-11-01T04:00Z.
    start = datetime.datetime(2026, 10, 1, 4, tzinfo=datetime.UTC)
    end = datetime.datetime(2026, 11, 1, 4, tzinfo=datetime.UTC)
    month_events = UsageEvent.objects.filter(tenant=tenant, timestamp__gte=start, timestamp__lt=end)
    event_total = sum((e.cost_usd for e in month_events), Decimal("0"))
    assert 0 < month_events.count() < 240 and event_total > 0
    assert UsageEvent.objects.filter(tenant=tenant, timestamp__lt=start).exists()

    _, rows = export(admin_api, month="2026-10")
    total = rows[-1]
    assert total[0] == "TOTAL"
    assert Decimal(total[-1]) == event_total
    assert int(total[4]) == month_events.count()
    assert sum(Decimal(row[-1]) for row in rows[1:-1]) == Decimal(total[-1])
    assert all("E" not in row[-1] and "e" not in row[-1] for row in rows[1:])
    assert any(row[1] == "UNALLOCATED" for row in rows[1:-1])
    assert {row[1] for row in rows[1:-1]} == {"payments-eng", "Search", "UNALLOCATED"}

    response = admin_api.get("/v1/usage/summary", {"from": "2026-10-01", "to": "2026-10-31", "group_by": "team"})
    summary = json.loads(response.content, parse_float=Decimal)
    assert summary["totals"]["cost_usd"] == event_total == Decimal(total[-1])
    assert summary["totals"]["events"] == month_events.count()
    assert DailySpend.objects.filter(tenant=tenant, day__month=10).aggregate(s=Sum("cost_usd"))["s"] == event_total


def test_a_format_other_than_csv_is_a_406(tenant, admin_api):
    for wanted in ("xml", "json"):
        response = admin_api.get("/v1/usage/export.csv", {"format": wanted})
        assert response.status_code == 406
        assert response.json()["error"]["code"] == "not_acceptable" and "csv" in response.json()["error"]["message"]
    assert export(admin_api, format="csv")[1][0][0] == "day"
