"""Serializer pieces shared by every app's API."""

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers


class StrictBooleanField(serializers.BooleanField):
    """JSON true/false only: DRF's BooleanField also takes "yes", "on", 1…, which hides client mistakes."""

    default_error_messages = {"invalid": "Must be a JSON boolean (true or false)."}

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        self.fail("invalid")


class StrictCharField(serializers.CharField):
    """A JSON string only (DRF's CharField turns 42 into "42")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def page_of(name: str, item: serializers.Serializer):
    """The schema of one keyset page, {"results": [...], "next": url-or-null}, as every list endpoint answers."""
    return inline_serializer(name, fields={
        "results": item,
        "next": serializers.URLField(allow_null=True, help_text="The next page; null on the last page."),
    })
