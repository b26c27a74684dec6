"""Serializer pieces shared by every app's API."""

import re
from decimal import ROUND_HALF_UP, Decimal

from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers

from agentwatch_site.money import quantize
from agentwatch_site.pagination import DEFAULT_LIMIT, MAX_LIMIT


class MoneyField(serializers.DecimalField):
    """A money amount out as a JSON number, rounded to `decimal_places` whatever its size (DRF's DecimalField
    rounds within `max_digits`, or 28 digits without it, and fails on a larger running total)."""

    def __init__(self, *, decimal_places: int = 10, **kwargs):
        kwargs.setdefault("coerce_to_string", False)
        kwargs.setdefault("rounding", ROUND_HALF_UP)  # as every other rounding of money here (money.quantize)
        super().__init__(max_digits=None, decimal_places=decimal_places, **kwargs)

    def quantize(self, value):
        return quantize(value, Decimal(1).scaleb(-self.decimal_places), rounding=self.rounding)


class StrictBooleanField(serializers.BooleanField):
    """JSON true/false only: DRF's BooleanField also takes "yes", "on", 1…, which hides client mistakes."""

    default_error_messages = {"invalid": "Must be a JSON boolean (true or false)."}

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        self.fail("invalid")


# A number as JSON or a float literal spells it ("2", "2.0", ".5", "1e-05"), ASCII digits only. Each digit can
# belong to one run only: no backtracking between two runs of digits on a long string.
PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


class StrictDecimalField(serializers.DecimalField):
    """A JSON number, or a string spelling one plainly ("500", "12.50", "1e2"): DRF's DecimalField hands any
    string to Decimal(), which also reads "1_000", " 500 " and digits of other scripts ("٥٠٠")."""

    def to_internal_value(self, data):
        if isinstance(data, str) and len(data) > self.MAX_STRING_LENGTH:
            self.fail("max_string_length")
        if isinstance(data, bool) or (isinstance(data, str) and not PLAIN_NUMBER.fullmatch(data)):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string only (DRF's CharField turns 42 into "42"), within max_length as sent: DRF measures it after
    trimming, so "\r" + 100 characters passed a documented maxLength of 100."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class NoUnknownFieldsMixin:
    """Refuses a JSON object with fields the serializer does not know, alongside any other field errors: DRF drops
    them, so a misspelt field (`"hardstop": true`) was a 200 that changed nothing."""

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        errors = {str(name)[:100]: [f"Unknown field; the fields are {', '.join(self.fields)}."] for name in unknown}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                errors = {**exc.detail, **errors}
            if not errors or not isinstance(exc.detail, dict):
                raise
        if errors:
            raise serializers.ValidationError(errors)
        return value


def page_of(name: str, item: serializers.Serializer):
    """The schema of one keyset page, {"results": [...], "next": url-or-null}, as every list endpoint answers."""
    return inline_serializer(name, fields={
        "results": item,
        "next": serializers.URLField(allow_null=True, help_text="The next page; null on the last page."),
    })


# The query parameters of every keyset-paged list (agentwatch_site.pagination.paginate).
PAGE_PARAMETERS = [
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                     description=f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."),
    OpenApiParameter("cursor", str, description="Opaque; follow the `next` link of the previous page."),
]
