"""Validation of a team budget, shared by the REST API and the dashboard's Budgets page (one code path)."""

from decimal import Decimal

from rest_framework import serializers

from agentwatch_site.serializers import (
    NoUnknownFieldsMixin,
    StrictBooleanField,
    StrictCharField,
    StrictDecimalField,
)
from agentwatch_site.text import CONTROL_CHARACTERS, shows_nothing

MAX_MONTHLY_BUDGET_USD = Decimal("10000000")
DEFAULT_ALERT_THRESHOLD_PCT = 80


class BudgetInputSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    """A team budget as POSTed (all fields) or PATCHed (`partial=True`: only the fields sent)."""

    team = StrictCharField(
        min_length=1, max_length=100, help_text="Team name (1–100 characters, matched ignoring case)."
    )
    monthly_budget_usd = StrictDecimalField(
        max_digits=12, decimal_places=2, coerce_to_string=False,
        min_value=Decimal("0.01"), max_value=MAX_MONTHLY_BUDGET_USD,  # also the OpenAPI document's bounds
        error_messages={"min_value": "Must be greater than 0.",
                        "max_value": f"Must be at most {MAX_MONTHLY_BUDGET_USD:,}."},
        help_text="Monthly budget in USD: greater than 0, at most 2 decimal places, at most 10,000,000.",
    )
    alert_threshold_pct = serializers.IntegerField(
        min_value=1, max_value=100, default=DEFAULT_ALERT_THRESHOLD_PCT,
        help_text="Percent of the budget at which an alert is sent (1–100, default 80).",
    )
    hard_stop = StrictBooleanField(
        default=False, help_text="true: aw-sdk calls of this team are blocked once the budget is reached."
    )

    def validate_team(self, value: str) -> str:
        if CONTROL_CHARACTERS.search(value):
            raise serializers.ValidationError("Must not contain control characters.")
        if shows_nothing(value):
            raise serializers.ValidationError("Must contain a visible character.")
        return value
