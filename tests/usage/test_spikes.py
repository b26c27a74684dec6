"""Spend-spike detection from the hourly roll-up: last full hour against mean + 4σ of the 7 days before."""

import datetime
import random
from decimal import Decimal

from django.utils import timezone

from agentwatch_site.dates import hour_floor
from usage.models import Anomaly, HourlySpend
from usage.tasks import detect_spend_spikes


def last_full_hour() -> datetime.datetime:
    return hour_floor(timezone.now()) - datetime.timedelta(hours=1)


def week_of(tenant, team_name: str, costs) -> None:
    """Hourly spend for the 168 hours before the last full hour, oldest first; None leaves an hour empty."""
    start = last_full_hour() - datetime.timedelta(hours=168)
    HourlySpend.objects.bulk_create([
        HourlySpend(tenant=tenant, hour=start + datetime.timedelta(hours=n), team_name=team_name, events=1,
                    cost_usd=Decimal(cost))
        for n, cost in enumerate(costs) if cost is not None
    ])


def last_hour(tenant, team_name: str, cost: str) -> None:
    HourlySpend.objects.create(tenant=tenant, hour=last_full_hour(), team_name=team_name, events=1,
                               cost_usd=Decimal(cost))


def spikes(tenant):
    return list(Anomaly.objects.filter(tenant=tenant, kind=Anomaly.Kind.SPEND_SPIKE))


def test_flat_week_then_a_ten_times_hour_opens_one_anomaly(tenant):
    week_of(tenant, "search", ["2.00"] * 168)
    last_hour(tenant, "search", "20.00")
    assert detect_spend_spikes() == 1
    [anomaly] = spikes(tenant)
    assert anomaly.team.name == "search" and anomaly.status == "open"
    assert anomaly.day == last_full_hour().date()
    assert anomaly.details["spend_usd"] == 20.0
    assert anomaly.details["baseline_mean_usd"] == 2.0 and anomaly.details["baseline_stddev_usd"] == 0.0
    # The beat runs every 15 minutes: the same hour (and day) never opens a second one.
    assert detect_spend_spikes() == 0
    assert len(spikes(tenant)) == 1


def test_noisy_week_and_a_normal_hour_open_nothing(tenant):
    rng = random.Random(7)
    week_of(tenant, "search", [f"{rng.uniform(0.5, 6.0):.2f}" for _ in range(168)])
    last_hour(tenant, "search", "5.50")
    assert detect_spend_spikes() == 0
    assert spikes(tenant) == []


def test_noisy_week_and_a_far_higher_hour_opens_one(tenant):
    rng = random.Random(7)
    week_of(tenant, "search", [f"{rng.uniform(0.5, 6.0):.2f}" for _ in range(168)])
    last_hour(tenant, "search", "60.00")
    assert detect_spend_spikes() == 1


def test_hours_without_spend_count_as_zero(tenant):
    # $3 once a day: against the daily hours alone it is normal; over all 168 hours it stands out.
    week_of(tenant, "batch", [("3.00" if n % 24 == 0 else None) for n in range(168)])
    last_hour(tenant, "batch", "3.00")
    assert detect_spend_spikes() == 1


def test_a_spike_below_the_tenant_minimum_is_ignored(tenant):
    week_of(tenant, "search", ["0.01"] * 168)
    last_hour(tenant, "search", "0.50")
    assert detect_spend_spikes() == 0
    tenant.spike_min_usd = Decimal("0.25")
    tenant.save()
    assert detect_spend_spikes() == 1


def test_unallocated_spend_is_watched_too_and_opens_one_per_day(tenant):
    week_of(tenant, "", ["1.00"] * 168)
    last_hour(tenant, "", "15.00")
    assert detect_spend_spikes() == 1
    assert detect_spend_spikes() == 0
    [anomaly] = spikes(tenant)
    assert anomaly.team is None and anomaly.details["team"] is None


def test_each_team_and_tenant_has_its_own_baseline(tenant, other_tenant):
    week_of(tenant, "search", ["1.00"] * 168)
    last_hour(tenant, "search", "30.00")
    week_of(tenant, "ranking", ["30.00"] * 168)
    last_hour(tenant, "ranking", "30.00")
    week_of(other_tenant, "search", ["30.00"] * 168)
    last_hour(other_tenant, "search", "30.00")
    assert detect_spend_spikes() == 1
    assert [a.team.name for a in spikes(tenant)] == ["search"]
    assert spikes(other_tenant) == []


def test_spend_older_than_the_last_full_hour_is_not_judged(tenant):
    week_of(tenant, "search", ["1.00"] * 167 + ["50.00"])  # two hours ago: the previous run's business
    assert detect_spend_spikes() == 0
