import datetime
import re
from decimal import Decimal

from django import forms
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response

from agentwatch_site.dates import month_start, tenant_day, tenant_month_days
from agentwatch_site.errors import ApiError, json_response, validation_error
from agentwatch_site.metrics import EVENTS_ACCEPTED
from agentwatch_site.negotiation import not_offered
from agentwatch_site.openapi import error_response
from agentwatch_site.pagination import paginate, paginated_response
from agentwatch_site.serializers import PAGE_PARAMETERS, MoneyField
from tenants.api_base import LeanDispatch, TelemetryApi, TenantApi
from tenants.services import rejected_telemetry_count
from usage.csv_export import csv_cell, csv_lines
from usage.filters import IsoDateTimeFormField
from usage.models import UsageEvent
from usage.selectors import (
    SPEND_METRICS,
    SUMMARY_DIMENSIONS,
    event_list,
    session_get,
    session_iterations,
    session_list,
    spend_month_rows,
    spend_summary,
    team_spend_list,
)
from usage.services.ingest import event_batch_ingest, parse_ingest_body, parse_json_body, recorder_wake
from usage.services.pricing import quantize_cost


class IngestEventDoc(serializers.Serializer):
    """Documentation of one event; validation lives in usage.services.ingest (same rules)."""

    model = serializers.CharField(max_length=200, help_text="Model name, e.g. gpt-4o. Required.")
    prompt_tokens = serializers.IntegerField(min_value=0, max_value=10**9, required=False, allow_null=True)
    completion_tokens = serializers.IntegerField(min_value=0, max_value=10**9, required=False, allow_null=True)
    latency_ms = serializers.IntegerField(
        min_value=-(10**9), max_value=10**9, required=False, allow_null=True,
        help_text="A negative value (aw-sdk times calls with the wall clock, which can step back) is stored as 0.")
    identified_risks = serializers.ListField(child=serializers.RegexField(r"^[A-Z][A-Z0-9_]{0,63}$"),
                                             required=False, allow_null=True, max_length=32)
    project = serializers.CharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    team = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=True)
    session_id = serializers.CharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    iteration_index = serializers.IntegerField(min_value=0, max_value=10**9, required=False, allow_null=True)
    event_id = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=True,
                                     help_text="Idempotency key: the same id twice is one event.")
    timestamp = serializers.DateTimeField(
        required=False, allow_null=True,
        help_text="ISO 8601 / RFC 3339; without an offset it is UTC; from 2000-01-01 to at most 5 minutes ahead; "
                  "default: when it is received.")
    provider = serializers.CharField(max_length=50, required=False, allow_null=True, allow_blank=True)
    customer_id = serializers.CharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    user_id = serializers.CharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    feature_id = serializers.CharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    status = serializers.ChoiceField(choices=["ok", "error"], required=False, allow_null=True)
    metadata = serializers.DictField(required=False, allow_null=True, help_text="At most 4 KB as JSON.")


class IngestBatchDoc(serializers.Serializer):
    events = IngestEventDoc(many=True, help_text="1 to 1,000 events; one invalid event rejects the batch.")


class IngestApi(LeanDispatch, TelemetryApi):
    """POST /v1/ingest: one event exactly as aw-sdk sends it, or {"events": [...]}. 202 once durable."""

    lean_methods = frozenset({"POST"})

    class OutputSerializer(serializers.Serializer):
        accepted = serializers.IntegerField()
        event_ids = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        request={"application/json": PolymorphicProxySerializer(
            component_name="IngestBody", serializers=[IngestEventDoc, IngestBatchDoc],
            resource_type_field_name=None,
        )},
        responses={
            202: OutputSerializer,
            413: error_response("Body over 1 MiB."),
            503: error_response("The database cannot take the events now; retry (events sent with an event_id are "
                                 "never stored twice)."),
        },
        examples=[
            OpenApiExample("aw-sdk event", request_only=True, value={
                "model": "gpt-4o", "latency_ms": 812, "prompt_tokens": 1200, "completion_tokens": 300,
                "identified_risks": ["PII_EMAIL"], "project": "checkout-service", "team": "payments-eng",
                "session_id": "ci-run-123", "iteration_index": 4}),
            OpenApiExample("Batch", request_only=True, value={"events": [
                {"model": "gpt-4o-mini", "prompt_tokens": 900, "completion_tokens": 120, "team": "search",
                 "event_id": "run-7-call-1", "timestamp": "2026-11-25T09:30:00Z"},
                {"model": "gpt-4o-mini", "prompt_tokens": 1400, "completion_tokens": 80, "team": "search",
                 "event_id": "run-7-call-2", "timestamp": "2026-11-25T09:30:02Z"}]}),
            OpenApiExample("Accepted", response_only=True, status_codes=["202"],
                           value={"accepted": 1, "event_ids": ["7d0c5e0f3b2a4c1e9f6a8b7c6d5e4f3a"]}),
        ],
        tags=["telemetry"],
    )
    def post(self, request):
        received_at = timezone.now()
        try:
            events = parse_ingest_body(parse_json_body(request.body), now=received_at)
        except ApiError:
            rejected_telemetry_count(tenant=request.tenant, reason="invalid")
            raise
        event_ids = event_batch_ingest(tenant=request.tenant, events=events, received_at=received_at)
        EVENTS_ACCEPTED.inc(len(event_ids))
        recorder_wake()
        return json_response({"accepted": len(event_ids), "event_ids": event_ids}, status=status.HTTP_202_ACCEPTED)


# --- Read API (admin scope) ---------------------------------------------------------------------------------


class OptionalText(serializers.CharField):
    """An optional ingested text field: null when it was not sent (stored as "")."""

    def __init__(self, **kwargs):
        super().__init__(allow_null=True, **kwargs)

    def to_representation(self, value):
        return value or None


EVENT_FILTER_PARAMETERS = [
    OpenApiParameter("team", str, description="Team name, case-insensitive."),
    OpenApiParameter("project", str, description="Project, exact."),
    OpenApiParameter("session_id", str, description="Session id, exact."),
    OpenApiParameter("model", str, description="Model name, exact (e.g. gpt-4o)."),
    OpenApiParameter("customer_id", str, description="Customer id, exact."),
    OpenApiParameter("feature_id", str, description="Feature id, exact."),
    OpenApiParameter("risk", str, description="A risk tag in identified_risks, e.g. PII_EMAIL (case-insensitive)."),
    OpenApiParameter("from", OpenApiTypes.DATETIME,
                     description="Events at or after this time (ISO 8601; a date means its midnight UTC)."),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="Events before this time (exclusive)."),
]


class EventListApi(TenantApi):
    """GET /v1/usage/events: the tenant's events, newest first, filtered, in keyset pages."""

    class OutputSerializer(serializers.Serializer):
        event_id = serializers.CharField()
        timestamp = serializers.DateTimeField()
        received_at = serializers.DateTimeField()
        model = serializers.CharField()
        provider = OptionalText()
        prompt_tokens = serializers.IntegerField()
        completion_tokens = serializers.IntegerField()
        latency_ms = serializers.IntegerField()
        identified_risks = serializers.ListField(child=serializers.CharField())
        project = OptionalText()
        team = OptionalText(source="team_name", help_text="Team name; null when the event named none.")
        session_id = OptionalText()
        iteration_index = serializers.IntegerField(allow_null=True)
        customer_id = OptionalText()
        user_id = OptionalText()
        feature_id = OptionalText()
        status = serializers.ChoiceField(choices=UsageEvent.Status.choices)
        metadata = serializers.DictField()
        cost_usd = MoneyField(allow_null=True, help_text="USD, fixed when the event is recorded; null until then, "
                                                    "and for an event set aside (see record_error).")
        priced_by = OptionalText(help_text="How cost_usd was fixed: `blended`, `catalog`, or `fallback` (a model "
                                           "the price catalogue does not know, at the blended rate: check its "
                                           "name or add its price); null until recorded.")
        recorded_at = serializers.DateTimeField(allow_null=True)
        record_error = OptionalText(help_text="Set when recording this event failed and it was set aside "
                                              "(quarantined): not counted in any spend until retried.")

    @extend_schema(
        operation_id="usage_events_list",
        parameters=[*EVENT_FILTER_PARAMETERS, *PAGE_PARAMETERS],
        responses={200: inline_serializer("EventPage", fields={
            "results": OutputSerializer(many=True),
            "next": serializers.URLField(allow_null=True, help_text="The next page; null on the last page."),
        })},
        examples=[OpenApiExample("A page", response_only=True, value={
            "results": [{
                "event_id": "7d0c5e0f3b2a4c1e9f6a8b7c6d5e4f3a", "timestamp": "2026-11-25T09:30:00Z",
                "received_at": "2026-11-25T09:30:00.120000Z", "model": "gpt-4o", "provider": "openai",
                "prompt_tokens": 1200, "completion_tokens": 300, "latency_ms": 812,
                "identified_risks": ["PII_EMAIL"], "project": "checkout-service", "team": "payments-eng",
                "session_id": "ci-run-123", "iteration_index": 4, "customer_id": None, "user_id": None,
                "feature_id": None, "status": "ok", "metadata": {}, "cost_usd": 0.0045, "priced_by": "blended",
                "recorded_at": "2026-11-25T09:30:01Z", "record_error": None}],
            "next": "https://agentwatch.example.com/v1/usage/events?team=payments-eng&cursor=WyIyMDI2LTExLTI1VDA5"
                    "OjMwOjAwKzAwOjAwIiw0Ml0"})],
        tags=["usage"],
    )
    def get(self, request):
        events = event_list(tenant=request.tenant, filters=request.query_params)
        return paginated_response(request, events, self.OutputSerializer)


def _parse_group_by(value: str | None) -> list[str]:
    names = [name.strip().lower() for name in (value or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in SUMMARY_DIMENSIONS]
    if unknown or len(set(names)) != len(names):
        raise validation_error({"group_by": [
            f"Must be a comma-separated list of distinct values from: {', '.join(SUMMARY_DIMENSIONS)}"
            + (f" (unknown: {', '.join(sorted(set(unknown)))[:100]})." if unknown else ".")]})
    return names


def _parse_day(tenant, name: str, value: str | None) -> datetime.date | None:
    if not value:
        return None
    text = value.strip()
    try:
        if len(text) <= 10:
            return datetime.date.fromisoformat(text)
        moment = IsoDateTimeFormField().to_python(text)
        return tenant_day(tenant, moment)
    except (ValueError, forms.ValidationError, OverflowError):
        raise validation_error({name: ["Must be a date (2026-11-25) or an ISO 8601 date-time."]}) from None


class SpendRowSerializer(serializers.Serializer):
    day = serializers.DateField(required=False, help_text="With group_by=day; the tenant's local day.")
    team = serializers.CharField(required=False, allow_null=True, source="team_name",
                                 help_text="With group_by=team; null for events without a team.")
    project = serializers.CharField(required=False, allow_null=True,
                                    help_text="With group_by=project; null for events without a project.")
    model = serializers.CharField(required=False, help_text="With group_by=model.")
    events = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_usd = MoneyField()

    def to_representation(self, instance):
        data = super().to_representation(instance)
        for key, source in (("day", "day"), ("team", "team_name"), ("project", "project"), ("model", "model")):
            if source not in instance:
                data.pop(key, None)
            elif key in ("team", "project") and data[key] == "":
                data[key] = None
        return data


class SpendTotalsSerializer(serializers.Serializer):
    events = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_usd = MoneyField()


def _totals(rows) -> dict:
    totals = {"events": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": Decimal("0")}
    for row in rows:
        for metric in SPEND_METRICS:
            totals[metric] += row[metric] or 0
    return totals


class UsageSummaryApi(TenantApi):
    """GET /v1/usage/summary: spend, tokens and events from the daily roll-ups, grouped, with totals."""

    class OutputSerializer(serializers.Serializer):
        group_by = serializers.ListField(child=serializers.ChoiceField(choices=list(SUMMARY_DIMENSIONS)))
        date_from = serializers.DateField(allow_null=True)
        date_to = serializers.DateField(allow_null=True)
        rows = SpendRowSerializer(many=True)
        totals = SpendTotalsSerializer()

    @extend_schema(
        operation_id="usage_summary",
        parameters=[
            OpenApiParameter("group_by", str, description="Comma-separated: day, team, project, model (e.g. "
                             "`team,model`). Without it, one row for the whole range."),
            OpenApiParameter("from", OpenApiTypes.DATE, description="First day included (tenant-local); default "
                             "the first day of `to`'s month, else of the current month."),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last day included (tenant-local); default none."),
        ],
        responses={200: OutputSerializer},
        examples=[OpenApiExample("Month-to-date spend per team", response_only=True, value={
            "group_by": ["team"], "date_from": "2026-11-01", "date_to": None,
            "rows": [
                {"team": "payments-eng", "events": 1520, "prompt_tokens": 1824000, "completion_tokens": 456000,
                 "cost_usd": 6.84},
                {"team": None, "events": 12, "prompt_tokens": 9000, "completion_tokens": 2000, "cost_usd": 0.033},
            ],
            "totals": {"events": 1532, "prompt_tokens": 1833000, "completion_tokens": 458000, "cost_usd": 6.873}})],
        tags=["usage"],
    )
    def get(self, request):
        group_by = _parse_group_by(request.query_params.get("group_by"))
        day_from = _parse_day(request.tenant, "from", request.query_params.get("from"))
        day_to = _parse_day(request.tenant, "to", request.query_params.get("to"))
        if day_from is None:
            day_from = month_start(day_to) if day_to else tenant_month_days(request.tenant)[0]
        if day_from and day_to and day_to < day_from:
            raise validation_error({"to": ["Must not be before `from`."]})
        rows = spend_summary(tenant=request.tenant, group_by=group_by, day_from=day_from, day_to=day_to)
        data = {"group_by": group_by, "date_from": day_from, "date_to": day_to, "rows": rows,
                "totals": _totals(rows)}
        return Response(self.OutputSerializer(data).data)


_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
CSV_METRIC_COLUMNS = ["events", "prompt_tokens", "completion_tokens", "cost_usd"]
UNALLOCATED = "UNALLOCATED"


def _chargeback_rows(rows, columns: list[str]):
    yield [*columns, *CSV_METRIC_COLUMNS]
    totals = {"events": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": Decimal("0")}
    source = {"day": "day", "team": "team_name", "project": "project", "model": "model"}
    for row in rows:
        cells = []
        for column in columns:
            value = row[source[column]]
            if column == "team" and not value:
                value = UNALLOCATED
            cells.append(csv_cell(value))
        for metric in CSV_METRIC_COLUMNS:
            value = row[metric] or 0
            if metric == "cost_usd":
                # Sums come back as the database gives them (SQLite: unscaled); costs keep 10 decimal places.
                value = quantize_cost(Decimal(value))
            totals[metric] += value
            cells.append(csv_cell(value))
        yield cells
    label = ["TOTAL"] + [""] * (len(columns) - 1) if columns else []
    totals["cost_usd"] = quantize_cost(totals["cost_usd"])
    yield [*label, *(csv_cell(totals[m]) for m in CSV_METRIC_COLUMNS)]


class UsageExportCsvApi(TenantApi):
    """GET /v1/usage/export.csv: the month's chargeback, streamed from the daily roll-ups."""

    def perform_content_negotiation(self, request, force=False):
        # The CSV itself bypasses renderers; errors are always the JSON envelope, whatever Accept says.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="usage_export_csv",
        parameters=[
            OpenApiParameter("month", str, pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                             description="YYYY-MM, the tenant's calendar month; default the current month."),
            OpenApiParameter("group_by", str, description="Comma-separated columns among day, team, project, "
                             "model (default all four: one row per day × team × project × model)."),
        ],
        responses={(200, "text/csv"): OpenApiResponse(
            OpenApiTypes.STR,
            description="CSV with a header row; teams absent from events appear as UNALLOCATED; the last row, "
                        "labelled TOTAL, sums the month exactly (costs in USD at stored precision).",
            examples=[OpenApiExample("November 2026", value=(
                "day,team,project,model,events,prompt_tokens,completion_tokens,cost_usd\r\n"
                "2026-11-01,payments-eng,checkout-service,gpt-4o,12,14400,3600,0.0540000000\r\n"
                "2026-11-01,UNALLOCATED,,gpt-4o-mini,3,900,300,0.0036000000\r\n"
                "TOTAL,,,,15,15300,3900,0.0576000000\r\n"))],
        )},
        tags=["usage"],
    )
    def get(self, request):
        wanted = request.query_params.get("format")
        if wanted not in (None, "", "csv"):
            raise not_offered(wanted, {"csv"})
        month_text = (request.query_params.get("month") or "").strip()
        if month_text:
            match = _MONTH.match(month_text)
            # From 1999-12: ingest takes times from 2000-01-01 UTC, which is still December 1999 in a time zone
            # west of UTC. 9999-12 has no next month to end at.
            year_month = (int(match.group(1)), int(match.group(2))) if match else None
            if year_month is None or not (1999, 12) <= year_month <= (9998, 12):
                raise validation_error({"month": ["Must be a month as YYYY-MM between 1999-12 and 9998-12, "
                                                  "e.g. 2026-11."]})
            month = datetime.date(*year_month, 1)
        else:
            month = tenant_month_days(request.tenant)[0]
        group_by = _parse_group_by(request.query_params.get("group_by")) or list(SUMMARY_DIMENSIONS)
        # Canonical column order whatever order group_by names them in.
        columns = [name for name in SUMMARY_DIMENSIONS if name in group_by]
        rows = spend_month_rows(tenant=request.tenant, month=month,
                                group_by=None if len(columns) == len(SUMMARY_DIMENSIONS) else columns)
        response = StreamingHttpResponse(csv_lines(_chargeback_rows(rows, columns)),
                                         content_type="text/csv; charset=utf-8")
        filename = f"agentwatch-{request.tenant.slug}-{month:%Y-%m}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class SessionOutputSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    team = serializers.CharField(source="team.name", allow_null=True, default=None)
    project = OptionalText()
    spent_usd = MoneyField(help_text="Session spend since it (re)started.")
    events = serializers.IntegerField()
    iterations = serializers.IntegerField(help_text="Distinct iteration indexes recorded.")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    last_limit_usd = MoneyField(allow_null=True, help_text="The last limit_usd a budget-check sent; null if none.")
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(
        allow_null=True, help_text="Idle 24 hours: the same id then starts from zero. Null on a session that expired "
                                   "(GET /v1/sessions/{session_id} then sums its kept events).")


class SessionListApi(TenantApi):
    """GET /v1/sessions: sessions, newest first, in keyset pages. Pages follow the order the server first saw
    the sessions in, which never changes: ordered by last activity instead, a session active during a walk
    would jump to a page already read and be missed. `last_seen` is in every row for sorting by activity."""

    @extend_schema(
        operation_id="sessions_list",
        parameters=[
            OpenApiParameter("team", str, description="Team name, case-insensitive."),
            OpenApiParameter("project", str, description="Project, exact."),
            *PAGE_PARAMETERS,
        ],
        responses={200: inline_serializer("SessionPage", fields={
            "results": SessionOutputSerializer(many=True),
            "next": serializers.URLField(allow_null=True, help_text="The next page; null on the last page."),
        })},
        tags=["sessions"],
    )
    def get(self, request):
        filters = {}
        for name, max_length in (("team", 100), ("project", 200)):
            value = request.query_params.get(name)
            if value and (len(value) > max_length or "\x00" in value):
                raise validation_error({name: [f"Must be at most {max_length} characters, without NUL."]})
            filters[name] = value or None
        sessions = session_list(tenant=request.tenant, **filters)
        return paginated_response(request, sessions, SessionOutputSerializer, order=("-id",))


class SessionDetailApi(TenantApi):
    """GET /v1/sessions/{session_id}: one session with its per-iteration breakdown."""

    class OutputSerializer(SessionOutputSerializer):
        class IterationSerializer(serializers.Serializer):
            iteration_index = serializers.IntegerField()
            events = serializers.IntegerField()
            prompt_tokens = serializers.IntegerField()
            completion_tokens = serializers.IntegerField()
            cost_usd = MoneyField(allow_null=True, help_text="Null while none of its events is recorded yet.")
            timestamp = serializers.DateTimeField(help_text="Its first event's time.")

        iteration_list = IterationSerializer(many=True, help_text="Up to the latest 1,000 iterations, ascending.")

    @extend_schema(
        operation_id="sessions_retrieve",
        parameters=[OpenApiParameter("session_id", str, OpenApiParameter.PATH,
                                     description="The session id the SDK sent (may contain '/').")],
        responses={200: OutputSerializer},
        tags=["sessions"],
    )
    def get(self, request, session_id: str):
        session = session_get(tenant=request.tenant, session_id=session_id)
        session.iteration_list = session_iterations(tenant=request.tenant, session_id=session.session_id,
                                                    state=session if session.pk else None)
        return Response(self.OutputSerializer(session).data)


class TeamListApi(TenantApi):
    """GET /v1/teams: the tenant's teams with month-to-date spend (tenant-local month) from the roll-ups."""

    class OutputSerializer(serializers.Serializer):
        name = serializers.CharField()
        created_at = serializers.DateTimeField()
        month_spend_usd = MoneyField(help_text="Month-to-date spend in the tenant's calendar month.")
        month_events = serializers.IntegerField()

    @extend_schema(
        operation_id="teams_list",
        responses={200: inline_serializer("TeamList", fields={
            "month": serializers.CharField(help_text="YYYY-MM, the tenant's current month."),
            "results": OutputSerializer(many=True),
            "next": serializers.URLField(allow_null=True, help_text="The next page; null on the last page."),
        })},
        parameters=PAGE_PARAMETERS,
        tags=["teams"],
    )
    def get(self, request):
        month = tenant_month_days(request.tenant)[0]
        page = paginate(request, team_spend_list(tenant=request.tenant), order=("name", "id"))
        return Response({"month": f"{month:%Y-%m}", "results": self.OutputSerializer(page["results"], many=True).data,
                         "next": page["next"]})
