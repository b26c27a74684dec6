"""Keyset (cursor) pagination, shared by the /v1 read API and the dashboard pages.

An OFFSET page gets slower the deeper it goes and skips or repeats rows when new ones arrive between two
requests; a keyset page starts right after the last row of the previous page, whatever was inserted since.
The cursor is opaque to clients: urlsafe base64 of a JSON list of the last row's ordering values.

    page = keyset_page(queryset, order=("-timestamp", "-id"), cursor=..., limit=100)
    page.items, page.next_cursor
    paginate(request, queryset) -> {"results": [...model instances...], "next": absolute url or None}
"""

import base64
import binascii
import datetime
import functools
import json
from dataclasses import dataclass

from django.db import models
from django.db.models import Q
from rest_framework.response import Response

from agentwatch_site.errors import ApiError, validation_error

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_ORDER = ("-timestamp", "-id")
MAX_CURSOR_LENGTH = 2000
_BIGINT = 2**63 - 1


@dataclass
class KeysetPage:
    items: list
    next_cursor: str | None
    first: bool = True  # no cursor: the first page


def parse_limit(value, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """`limit` from a query string: 1..maximum, default when absent or empty; anything else is a 400."""
    if value is None or value == "":
        return default
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= maximum:
        raise validation_error({"limit": [f"Must be an integer from 1 to {maximum} (default {default})."]})
    return int(text)


def _field(model: type[models.Model], name: str) -> models.Field:
    """The field an ordering name refers to, across relations too ("team__name")."""
    *path, last = name.split("__")
    for relation in path:
        model = model._meta.get_field(relation).related_model
    return model._meta.pk if last == "pk" else model._meta.get_field(last)


def _value(row: models.Model, name: str):
    return functools.reduce(getattr, name.lstrip("-").split("__"), row)


def _dump(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def encode_cursor(values) -> str:
    raw = json.dumps([_dump(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad_cursor():
    return validation_error({"cursor": ["Invalid cursor: pass the `next` link of the previous page unchanged."]})


def _load(field: models.Field, value):
    if isinstance(field, models.DateTimeField):
        if not isinstance(value, str):
            raise ValueError
        parsed = datetime.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError
        # In UTC: Python takes offsets PostgreSQL refuses (beyond ±15:59), and a year-1 or year-9999 value may
        # not fit once moved (OverflowError: a 400 as well).
        return parsed.astimezone(datetime.UTC)
    if isinstance(field, models.DateField):
        return datetime.date.fromisoformat(value)
    if isinstance(field, (models.IntegerField, models.AutoField)):
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _BIGINT:
            raise ValueError
        return value
    if isinstance(field, models.CharField):
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError
        return value
    raise ValueError


def decode_cursor(cursor: str, *, model: type[models.Model], order: tuple[str, ...]) -> list:
    """The ordering values a cursor carries, checked against the ordering's field types; a 400 otherwise."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise _bad_cursor()
    try:
        raw = base64.urlsafe_b64decode(cursor.strip() + "=" * (-len(cursor.strip()) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(order):
            raise ValueError
        return [_load(_field(model, name.lstrip("-")), value) for name, value in zip(order, values, strict=True)]
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, RecursionError, OverflowError):
        raise _bad_cursor() from None


def _after(order: tuple[str, ...], values: list) -> Q:
    """Rows strictly after `values` in `order`: (a < x) OR (a = x AND b < y) … for descending fields.
    The leading `a <= x` term is redundant but lets the database start an index range scan at the cursor."""
    first, first_value = order[0].lstrip("-"), values[0]
    lead = Q(**{f"{first}__{'lte' if order[0].startswith('-') else 'gte'}": first_value})
    either = Q()
    for position, name in enumerate(order):
        field = name.lstrip("-")
        op = "lt" if name.startswith("-") else "gt"
        term = Q(**{f"{field}__{op}": values[position]})
        for earlier, earlier_value in zip(order[:position], values[:position], strict=True):
            term &= Q(**{earlier.lstrip("-"): earlier_value})
        either |= term
    return lead & either


def keyset_page(queryset, *, order: tuple[str, ...] = DEFAULT_ORDER, cursor: str | None = None,
                limit: int = DEFAULT_LIMIT) -> KeysetPage:
    """One page of `queryset` in `order` (which must end with a unique field, e.g. id) after `cursor`."""
    queryset = queryset.order_by(*order)
    if cursor:
        queryset = queryset.filter(_after(order, decode_cursor(cursor, model=queryset.model, order=order)))
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return KeysetPage(items=rows, next_cursor=None, first=not cursor)
    rows = rows[:limit]
    last = rows[-1]
    return KeysetPage(items=rows, next_cursor=encode_cursor([_value(last, name) for name in order]),
                      first=not cursor)


def keyset_page_or_first(queryset, *, order: tuple[str, ...], cursor: str | None, limit: int) -> KeysetPage:
    """For pages (not the API, where a bad cursor is a 400): a cursor that does not parse, from an old bookmark or
    a hand-edited URL, starts again from the first page. `page.first` says which page this is."""
    try:
        return keyset_page(queryset, order=order, cursor=cursor, limit=limit)
    except ApiError:
        return keyset_page(queryset, order=order, cursor=None, limit=limit)


def page_url(request, cursor: str | None) -> str | None:
    """The absolute URL of the page at `cursor`, keeping every other query parameter (filters, limit)."""
    if cursor is None:
        return None
    query = request.GET.copy()
    query["cursor"] = cursor
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def paginate(request, queryset, *, order: tuple[str, ...] = DEFAULT_ORDER, default_limit: int = DEFAULT_LIMIT,
             max_limit: int = MAX_LIMIT) -> dict:
    """`limit` and `cursor` from the query string → {"results": [rows], "next": absolute URL or None}."""
    limit = parse_limit(request.GET.get("limit"), default=default_limit, maximum=max_limit)
    page = keyset_page(queryset, order=order, cursor=request.GET.get("cursor") or None, limit=limit)
    return {"results": page.items, "next": page_url(request, page.next_cursor)}


def paginated_response(request, queryset, serializer_class, *, order: tuple[str, ...] = DEFAULT_ORDER):
    """A list endpoint's answer: one page of `queryset` written by `serializer_class`, {"results", "next"}."""
    page = paginate(request, queryset, order=order)
    return Response({"results": serializer_class(page["results"], many=True).data, "next": page["next"]})
