"""Time helpers. Everything is aware UTC; a tenant's days and months are taken in its time zone (UTC default)."""

import datetime
import functools
import zoneinfo

from django.core.exceptions import ValidationError
from django.utils import timezone


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(name: str) -> None:
    """An IANA time zone name as the tz database spells it (`America/Los_Angeles`, `UTC`): anything else would
    quietly mean UTC."""
    if name != "UTC" and name not in _zone_names():
        raise ValidationError(
            "%(value)r is not an IANA time zone name, such as UTC, Europe/Berlin or America/Los_Angeles (with "
            "underscores, as the tz database spells it).", code="invalid_time_zone", params={"value": name})


def tenant_zone(tenant) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(tenant.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def tenant_day(tenant, moment: datetime.datetime) -> datetime.date:
    return moment.astimezone(tenant_zone(tenant)).date()


def month_start(day: datetime.date) -> datetime.date:
    return day.replace(day=1)


def next_month_start(day: datetime.date) -> datetime.date:
    first = day.replace(day=1)
    return (first + datetime.timedelta(days=32)).replace(day=1)


def tenant_month_days(tenant, moment: datetime.datetime | None = None) -> tuple[datetime.date, datetime.date]:
    """[first day, first day of next month) of the tenant's calendar month containing `moment` (default now)."""
    today = tenant_day(tenant, moment or timezone.now())
    return month_start(today), next_month_start(today)


def hour_floor(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)
