"""The usage-event filters shared by GET /v1/usage/events and the Activity page (query-string names alike)."""

import datetime
import re

import django_filters
from django import forms

from tenants.selectors import same_team_name
from usage.models import UsageEvent

RISK_TAG = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# A "+hh:mm" offset typed unencoded in a query string arrives as " hh:mm".
_SPACE_OFFSET = re.compile(r" (\d{2}:?\d{2})$")


class IsoDateTimeFormField(forms.Field):
    """ISO 8601 date-time or date (2026-11-25T09:30:00Z, 2026-11-25T10:30:00+01:00, 2026-11-25); no offset = UTC."""

    default_error_messages = {
        "invalid": "Must be an ISO 8601 date-time such as 2026-11-25T09:30:00Z or a date such as 2026-11-25 "
                   "(URL-encode a '+' offset as %2B).",
    }

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        text = _SPACE_OFFSET.sub(r"+\1", text)
        if len(text) > 64:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        try:
            parsed = datetime.datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.UTC)
            return parsed.astimezone(datetime.UTC)
        except (ValueError, OverflowError):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


class IsoDateTimeFilter(django_filters.Filter):
    field_class = IsoDateTimeFormField


class RiskTagFormField(forms.CharField):
    def to_python(self, value):
        value = super().to_python(value)
        return value.strip().upper() if value else value

    def validate(self, value):
        super().validate(value)
        if value and not RISK_TAG.match(value):
            raise forms.ValidationError("Must be a risk tag such as PII_EMAIL (letters, digits, underscores).",
                                        code="invalid")


class RiskFilter(django_filters.CharFilter):
    field_class = RiskTagFormField


def _exact(field_name: str, max_length: int, help_text: str) -> django_filters.CharFilter:
    return django_filters.CharFilter(field_name=field_name, max_length=max_length, strip=False, help_text=help_text)


class UsageEventFilter(django_filters.FilterSet):
    """Every filter is optional and they combine with AND. Invalid values make `is_valid()` false (a 400)."""

    team = django_filters.CharFilter(method="filter_team", max_length=100, help_text="Team name, case-insensitive.")
    project = _exact("project", 200, "Project, exact.")
    session_id = _exact("session_id", 200, "Session id, exact.")
    model = _exact("model", 200, "Model name, exact (e.g. gpt-4o).")
    customer_id = _exact("customer_id", 200, "Customer id, exact.")
    feature_id = _exact("feature_id", 200, "Feature id, exact.")
    risk = RiskFilter(method="filter_risk", max_length=64,
                      help_text="A risk tag the event carries in identified_risks (e.g. PII_EMAIL).")

    class Meta:
        model = UsageEvent
        fields: list[str] = []

    def filter_team(self, queryset, name, value):
        return queryset.filter(same_team_name("team_name", value))

    def filter_risk(self, queryset, name, value):
        # identified_risks is a JSON list of tags matching RISK_TAG, so the quoted tag occurs in its JSON text
        # exactly when the list holds it. This works alike on SQLite (no JSON `contains` there) and PostgreSQL.
        return queryset.filter(identified_risks__icontains=f'"{value}"')


# `from` is a Python keyword, so the date range is added by name.
UsageEventFilter.base_filters["from"] = IsoDateTimeFilter(
    field_name="timestamp", lookup_expr="gte", help_text="Events at or after this ISO 8601 time (inclusive).")
UsageEventFilter.base_filters["to"] = IsoDateTimeFilter(
    field_name="timestamp", lookup_expr="lt", help_text="Events before this ISO 8601 time (exclusive).")

EVENT_FILTER_PARAMS = tuple(UsageEventFilter.base_filters)

# The exact-match filters, whose values are used as sent (ingest stores them with any spaces they have).
UNTRIMMED_FILTER_PARAMS = frozenset(
    name for name, event_filter in UsageEventFilter.base_filters.items() if event_filter.extra.get("strip") is False
)
