"""The Overview: month-to-date, forecast, budget bars, the 30-day chart, top lists and rejected telemetry."""

import re
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from budgets.services import budget_upsert
from tenants.models import RejectedTelemetry
from tenants.services import rejected_telemetry_count
from usage.models import DailySpend

from .data import demo_month, event, record, runaway_session


def test_overview_shows_month_to_date_spend_from_the_roll_ups(owner_client, tenant):
    record(tenant, [event(prompt_tokens=1_000_000, completion_tokens=0, team="search")])
    response = owner_client.get("/")
    assert response.status_code == 200
    assert re.search(rb'id="kpi-mtd">\$3\.00<', response.content)


def test_overview_draws_budget_bars_coloured_by_status(owner_client, tenant):
    record(tenant, [event(prompt_tokens=1_000_000, completion_tokens=0, team="search"),
                    event(prompt_tokens=100_000, completion_tokens=0, team="support")])
    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("2"))
    budget_upsert(tenant=tenant, team_name="support", monthly_budget_usd=Decimal("100"))
    html = owner_client.get("/").content.decode()
    assert 'class="fill exceeded" width="100.00"' in html
    assert 'class="fill ok" width="0.30"' in html
    assert 'status-exceeded">150%' in html


def test_overview_chart_stacks_thirty_days_by_team_as_svg(owner_client, tenant):
    record(tenant, demo_month(days=30, per_day=3))
    html = owner_client.get("/").content.decode()
    assert '<svg class="chart"' in html
    assert html.count('class="seg ') >= 30
    for team in ("payments-eng", "search", "unallocated"):
        assert f"</span>{team}</li>" in html


def test_the_charts_figures_are_also_a_table_for_keyboards_and_screen_readers(owner_client, tenant):
    """The bars' figures were only in tooltips inside an <svg role="img"> (hidden from screen readers, out of
    reach of the keyboard): the same figures are a table under the chart, one row per day with spend."""
    record(tenant, demo_month(days=30, per_day=3))
    html = owner_client.get("/").content.decode()
    table = html[html.index('<details class="chart-figures">'):]
    table = table[:table.index("</details>")]
    rows = re.findall(r'<tr><th scope="row">([^<]+)</th><td>([^<]+)</td><td class="num">([^<]+)</td></tr>', table)
    tooltips = re.findall(r"<title>(\w{3} \d+) · ([^:]+): (\$[\d,.]+)</title>", html)
    assert rows and len(rows) == len({day for day, _, _ in tooltips})
    for day, team, amount in tooltips:
        row = next(r for r in rows if r[0] == day)
        assert f"{team} {amount}" in row[1], (day, team, amount, row)


def test_overview_forecast_extends_the_recent_pace_to_month_end(owner_client, tenant):
    record(tenant, [event(prompt_tokens=1_000_000, completion_tokens=0)])
    response = owner_client.get("/")
    today = timezone.now().date()
    import calendar

    days_left = calendar.monthrange(today.year, today.month)[1] - today.day
    window = min(7, today.day)
    expected = Decimal("3") + Decimal("3") / window * days_left
    assert f"${expected:,.2f}" in response.content.decode()


def test_overview_forecast_compares_with_the_total_of_budgets_to_the_cent(owner_client, tenant):
    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("0.05"))
    budget_upsert(tenant=tenant, team_name="support", monthly_budget_usd=Decimal("1200.50"))
    assert "total budgets of $1,200.55" in owner_client.get("/").content.decode()


def test_overview_lists_top_models_sessions_and_recent_anomalies_with_links(owner_client, tenant):
    record(tenant, runaway_session(session_id="loop/with spaces"))
    html = owner_client.get("/").content.decode()
    assert "gpt-4o" in html
    assert 'href="/sessions/loop%2Fwith%20spaces/"' in html
    assert "Runaway loop" in html
    assert 'href="/anomalies/?kind=runaway_loop"' in html


def test_overview_counts_rejected_telemetry_with_a_hint(owner_client, tenant):
    rejected_telemetry_count(tenant=tenant, reason=RejectedTelemetry.Reason.RATE_LIMITED, count=7)
    rejected_telemetry_count(tenant=tenant, reason=RejectedTelemetry.Reason.INVALID, count=2)
    html = owner_client.get("/").content.decode()
    assert "9 telemetry events rejected" in html
    assert "7 over the rate limit" in html and "2 invalid" in html
    assert "Raise the tenant" in html


def test_overview_never_shows_another_tenants_spend(owner_client, tenant, other_tenant):
    record(other_tenant, [event(prompt_tokens=5_000_000, completion_tokens=0, team="secret-team",
                                model="other-model")])
    html = owner_client.get("/").content.decode()
    assert "secret-team" not in html and "other-model" not in html
    assert 'id="kpi-mtd">$0.00<' in html


def test_overview_query_count_does_not_grow_with_data(owner_client, tenant, django_assert_max_num_queries):
    record(tenant, demo_month(days=30, per_day=10) + runaway_session())
    for team in ("search", "payments-eng", "support-bots", "data-platform"):
        budget_upsert(tenant=tenant, team_name=team, monthly_budget_usd=Decimal("50"))
    assert DailySpend.objects.filter(tenant=tenant).aggregate(n=Sum("events"))["n"] == 308
    with django_assert_max_num_queries(14):
        assert owner_client.get("/").status_code == 200


def test_chart_axes_read_in_k_m_and_b_not_thousands_of_k():
    """A $250M month read "$62500k … $250000k" on the axis; tokens likewise."""
    import datetime
    from decimal import Decimal

    from usage.charts import daily_team_chart, session_token_chart

    day = datetime.date(2026, 11, 2)
    spend = daily_team_chart([{"day": day, "team_name": "search", "cost_usd": Decimal("250000000")}],
                             first_day=datetime.date(2026, 11, 1))
    assert [t["label"] for t in spend.ticks] == ["$0", "$62.5M", "$125M", "$187.5M", "$250M"]
    small = daily_team_chart([{"day": day, "team_name": "search", "cost_usd": Decimal("2500")}],
                             first_day=datetime.date(2026, 11, 1))
    assert [t["label"] for t in small.ticks] == ["$0", "$625", "$1.25k", "$1.875k", "$2.5k"]
    tokens = session_token_chart([{"iteration_index": 1, "prompt_tokens": 2_000_000, "completion_tokens": 0}],
                                 loop_iterations=set())
    assert [t["label"] for t in tokens.ticks] == ["0", "500k", "1M", "1.5M", "2M"]
