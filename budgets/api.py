import logging
import math
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from urllib.parse import unquote_to_bytes

from django.core.cache import cache
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agentwatch_site.errors import NotFound, json_response, validation_error
from agentwatch_site.money import quantize
from agentwatch_site.pagination import paginate, paginated_response
from agentwatch_site.redis_guard import redis_failed, redis_skipped
from agentwatch_site.serializers import PAGE_PARAMETERS, PLAIN_NUMBER, MoneyField, page_of
from agentwatch_site.text import CONTROL_CHARACTERS
from budgets.selectors import (
    alert_list,
    audit_log_list,
    budget_for_check,
    budget_status,
    budget_with_spend,
    budgets_with_spend,
    pct_used,
    session_budget_check,
    status_for,
    team_month_spend,
)
from budgets.serializers import BudgetInputSerializer
from budgets.services import budget_delete, budget_not_found, budget_update, budget_upsert
from tenants.api_base import LeanDispatch, TelemetryApi, TenantApi
from tenants.selectors import team_by_name
from usage.services.pricing import COST_QUANTUM
from usage.services.recording import SESSION_TTL, last_limit_cache_key

logger = logging.getLogger(__name__)

SEED_EXAMPLE = {"team": "backend-engineers", "monthly_budget_usd": 500.00, "alert_threshold_pct": 80,
                "hard_stop": True}


class BudgetOutput(serializers.Serializer):
    team = serializers.CharField()
    monthly_budget_usd = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
    alert_threshold_pct = serializers.IntegerField()
    hard_stop = serializers.BooleanField()
    current_spend = MoneyField(help_text="Month-to-date spend (tenant's calendar month).")
    pct_used = MoneyField(decimal_places=2)
    status = serializers.ChoiceField(choices=["ok", "alert", "exceeded"])
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def budget_output(budget) -> dict:
    data = budget_status(budget, budget.current_spend)
    data.update(alert_threshold_pct=budget.alert_threshold_pct, created_at=budget.created_at,
                updated_at=budget.updated_at)
    return BudgetOutput(data).data


def _actor(request) -> dict:
    return {"actor_key": getattr(request, "api_key", None)}


def _team_or_404(request, name: str):
    team = team_by_name(tenant=request.tenant, name=name)
    if team is None:
        raise NotFound(f"No team named {name[:100]!r} in this organisation.", code="team_not_found")
    return team


def _budget_or_404(request, name: str):
    team = _team_or_404(request, name)
    budget = budget_with_spend(tenant=request.tenant, team=team)
    if budget is None:
        raise budget_not_found(team.name)
    return budget


class TeamBudgetListApi(TenantApi):
    """GET: every team budget with its month-to-date spend. POST: create or replace one team's budget."""

    @extend_schema(parameters=PAGE_PARAMETERS, responses=page_of("BudgetList", BudgetOutput(many=True)),
                   operation_id="teams_budgets_list", tags=["budgets"])
    def get(self, request):
        # By team name (unique in a tenant, ignoring case; the id orders spellings the database tells apart).
        page = paginate(request, budgets_with_spend(tenant=request.tenant), order=("team__name", "id"))
        return Response({"results": [budget_output(b) for b in page["results"]], "next": page["next"]})

    @extend_schema(
        request=BudgetInputSerializer,
        responses={200: BudgetOutput, 201: BudgetOutput},
        examples=[OpenApiExample("Seed example", value=SEED_EXAMPLE, request_only=True)],
        description="Creates the team if needed and creates (201) or replaces (200) its budget.",
        tags=["budgets"],
    )
    def post(self, request):
        data = BudgetInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        budget, created = budget_upsert(tenant=request.tenant, team_name=values.pop("team"), **values,
                                        **_actor(request))
        # The budget as this request wrote it (not read again: a DELETE may have come in since the commit).
        budget.current_spend = team_month_spend(tenant=request.tenant, team=budget.team)
        return Response(budget_output(budget), status=201 if created else 200)


class TeamBudgetDetailApi(TenantApi):
    """One team's budget; the team name in the path is matched ignoring case."""

    @extend_schema(responses=BudgetOutput, tags=["budgets"])
    def get(self, request, team: str):
        return Response(budget_output(_budget_or_404(request, team)))

    @extend_schema(request=BudgetInputSerializer(partial=True), responses=BudgetOutput, tags=["budgets"])
    def patch(self, request, team: str):
        budget = _budget_or_404(request, team)
        data = BudgetInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        # Its month spend as read above; the changed fields as written (a DELETE may come in after the commit).
        return Response(budget_output(budget_update(budget=budget, **data.validated_data, **_actor(request))))

    @extend_schema(responses={204: None}, tags=["budgets"])
    def delete(self, request, team: str):
        budget_delete(budget=_budget_or_404(request, team), **_actor(request))
        return Response(status=204)


class TeamBudgetCheckApi(LeanDispatch, TenantApi):
    lean_methods = frozenset({"GET"})
    retry_lost_connection = True  # reads only

    class OutputSerializer(serializers.Serializer):
        team = serializers.CharField()
        monthly_budget_usd = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
        current_spend = MoneyField()
        pct_used = MoneyField(decimal_places=2)
        hard_stop = serializers.BooleanField()
        status = serializers.ChoiceField(choices=["ok", "alert", "exceeded"])

    @extend_schema(
        parameters=[OpenApiParameter("team", str, required=True, description="Team name, ignoring case.")],
        responses=OutputSerializer, tags=["budgets"],
    )
    def get(self, request):
        name = request.GET.get("team", "")
        if not name.strip():
            raise validation_error({"team": ["This query parameter is required, e.g. ?team=backend-engineers."]})
        # One query on the way that matters (the budget with its month spend); a miss then says which 404.
        row = budget_for_check(tenant=request.tenant, team_name=name)
        if row is None:
            _budget_or_404(request, name)
        spend, budget = row["current_spend"], row["monthly_budget_usd"]
        return json_response(self.OutputSerializer({
            "team": row["team__name"], "monthly_budget_usd": budget, "current_spend": spend,
            "pct_used": pct_used(spend, budget), "hard_stop": row["hard_stop"],
            "status": status_for(spend=spend, budget=budget, threshold_pct=row["alert_threshold_pct"]),
        }).data)


# --- The aw-sdk pre-call check ----------------------------------------------------------------------


def raw_query_params(query_string: str) -> tuple[dict[str, str | None], dict[str, bytes]]:
    """Split the raw query string on "&" and "=" and percent-decode each part, keeping "+" a plus: aw-sdk
    builds the URL with an f-string and does not escape the session id, and ingest stored the id from JSON.
    The first occurrence of a name wins. Returns the decoded values (None for a value that is not UTF-8 once
    decoded) and the values as sent. A name that is not UTF-8 raises UnicodeDecodeError."""
    try:
        raw = query_string.encode("latin-1")  # WSGI carries the bytes as latin-1 text (PEP 3333)
    except UnicodeEncodeError:
        raw = query_string.encode("utf-8")
    params: dict[str, str | None] = {}
    sent: dict[str, bytes] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        name_text = unquote_to_bytes(name).decode("utf-8")
        if name_text not in params:
            try:
                params[name_text] = unquote_to_bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                params[name_text] = None
            sent[name_text] = value
    return params, sent


# What httpx (aw-sdk's client) escapes itself in an unescaped query: a space, `"`, `<`, `>` and every non-ASCII
# byte. Any other %XX in what aw-sdk sends was typed into the session id.
_CLIENT_ESCAPE = re.compile(rb"%(20|22|3C|3E|[89A-F][0-9A-F])")
# A byte that is not UTF-8, as Python's "surrogateescape" decoding holds it.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def sdk_literal_session_id(sent: bytes) -> str | None:
    """The session id as aw-sdk had it when it differs from the plain percent-decoding: only the escapes httpx
    adds are decoded, so an id such as `%41-run` stays `%41-run` (decoded, it would be another session, `A-run`).
    httpx escapes only UTF-8, so an escaped byte that is not part of a UTF-8 character was typed, and stays `%XX`
    (`50%FF`). None when both readings agree."""
    if b"%" not in sent:
        return None
    literal = _CLIENT_ESCAPE.sub(lambda match: bytes([int(match.group(1), 16)]), sent)
    text = _ESCAPED_BYTE.sub(lambda match: f"%{ord(match.group()) - 0xDC00:02X}",
                             literal.decode("utf-8", "surrogateescape"))
    try:
        decoded = unquote_to_bytes(sent).decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    return None if text == decoded else text


def _is_session_id(value: str) -> bool:
    """What ingest stores as a session id: printable, 1–200 characters."""
    return 0 < len(value) <= 200 and value.isprintable()


def _parse_limit(text: str | None, errors: dict) -> Decimal | None:
    if text is None or text == "":
        errors["limit_usd"] = ["This query parameter is required: the session budget in USD, e.g. 2.0."]
        return None
    if len(text) > 64 or not PLAIN_NUMBER.fullmatch(text):
        errors["limit_usd"] = ["Must be a number (e.g. 2, 2.0 or 1e-05)."]
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        errors["limit_usd"] = ["Must be a number (e.g. 2, 2.0 or 1e-05)."]
        return None
    if not math.isfinite(float(text)):
        errors["limit_usd"] = ["Must be a finite number."]
        return None
    if value < 0:
        errors["limit_usd"] = ["Must be greater than or equal to 0."]
        return None
    if value.as_tuple().exponent < COST_QUANTUM.as_tuple().exponent:
        # Costs are whole multiples of COST_QUANTUM, so `spend >= limit` is the same with the limit rounded up to
        # one: 1e-20000 becomes 1e-10 (with its 20,000 decimal places it could never be stored or compared).
        value = quantize(value, COST_QUANTUM, rounding=ROUND_CEILING)
    return value.copy_abs()  # -0 is 0


class SessionBudgetCheckApi(LeanDispatch, TelemetryApi):
    """GET /v1/budget-check — aw-sdk's check before each call. Valid requests always get 200 (the SDK treats any
    other answer as an outage and fails open). Reads only; the limit seen is remembered in the cache."""

    lean_methods = frozenset({"GET"})
    retry_lost_connection = True  # reads only
    refuse_repeated = False  # the first of a repeated parameter counts (raw_query_params)

    class OutputSerializer(serializers.Serializer):
        class TeamOutput(serializers.Serializer):
            team = serializers.CharField()
            status = serializers.ChoiceField(choices=["ok", "alert", "exceeded"])
            pct_used = serializers.FloatField()
            hard_stop = serializers.BooleanField()
            monthly_budget_usd = serializers.FloatField()
            current_spend = serializers.FloatField()
            blocks = serializers.BooleanField(help_text="true when this team is what blocks the call.")

        session_id = serializers.CharField()
        exceeded = serializers.BooleanField()
        spent_usd = serializers.FloatField()
        limit_usd = serializers.FloatField()
        remaining_usd = serializers.FloatField()
        reason = serializers.ChoiceField(choices=["session_budget", "team_budget"], allow_null=True)
        team = TeamOutput(allow_null=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("session_id", str, required=True,
                             description="Printable, up to 200 characters; `+` is a plus. `&` and `#` cannot "
                                         "be part of an id sent unescaped. A %XX that a client would not have "
                                         "escaped itself is first matched as typed (e.g. `%41-run`)."),
            OpenApiParameter("limit_usd", float, required=True, description="Session budget in USD, ≥ 0."),
            OpenApiParameter("team", str, description="Team to check too (default: the session's team)."),
        ],
        responses=OutputSerializer, tags=["telemetry"],
    )
    def get(self, request):
        errors: dict[str, list[str]] = {}
        try:
            params, sent = raw_query_params(request.META.get("QUERY_STRING", ""))
        except UnicodeDecodeError:
            raise validation_error({"non_field_errors": ["The query string is not valid UTF-8."]}) from None
        not_utf8 = ["Must be valid UTF-8 once percent-decoded."]
        session_id = params.get("session_id", "")
        literal = sdk_literal_session_id(sent["session_id"]) if "session_id" in sent else None
        if literal is not None and not _is_session_id(literal):
            literal = None
        if literal is not None and (session_id is None or not _is_session_id(session_id)):
            # Decoded, the id could never have been stored (ingest takes printable ids up to 200): aw-sdk sent it
            # as typed, e.g. "step%0A3" or "50%FF".
            session_id, literal = literal, None
        if session_id is None:
            errors["session_id"] = not_utf8
        elif not session_id:
            errors["session_id"] = ["This query parameter is required."]
        elif len(session_id) > 200:
            errors["session_id"] = [f"Must be at most 200 characters (got {len(session_id)})."]
        elif not session_id.isprintable():
            errors["session_id"] = ["Must contain printable characters only."]
        if "limit_usd" in params and params["limit_usd"] is None:
            errors["limit_usd"] = not_utf8
        limit = _parse_limit(params.get("limit_usd"), errors) if "limit_usd" not in errors else None
        team = params.get("team")
        if "team" in params and team is None:
            errors["team"] = not_utf8
        elif team and (len(team) > 100 or CONTROL_CHARACTERS.search(team)):
            errors["team"] = ["Must be at most 100 characters, without control characters."]
        team = team or None
        if errors:
            raise validation_error(errors)

        result = session_budget_check(tenant=request.tenant, session_id=session_id, limit_usd=limit, team_name=team,
                                      literal_session_id=literal)
        # aw-sdk sends the same limit on every call: once the recorder has copied it into the session's state,
        # there is nothing left to remember. (A session alternating limits shows the latest one a call late.)
        if result.pop("stored_last_limit_usd") != limit:
            _remember_limit(request.tenant.pk, result["session_id"], limit)
            if literal is not None and result["session_id"] != literal:
                # No state under the id as typed yet: aw-sdk's events will be stored (and the limit looked up)
                # under that one.
                _remember_limit(request.tenant.pk, literal, limit)
        return json_response(_as_numbers(result))


def _as_numbers(result: dict) -> dict:
    """Money and percentages as JSON numbers (aw-sdk formats spent/limit as floats)."""
    out = {key: float(value) if isinstance(value, Decimal) else value for key, value in result.items()}
    if result["team"] is not None:
        out["team"] = {key: float(value) if isinstance(value, Decimal) else value
                       for key, value in result["team"].items()}
    return out


def _remember_limit(tenant_id: int, session_id: str, limit: Decimal) -> None:
    """The last limit per session is shown on Sessions; the recorder copies it into SessionState, so this path
    writes nothing to the database. A cache outage only loses that display value."""
    if redis_skipped():
        return
    try:
        cache.set(last_limit_cache_key(tenant_id, session_id), str(limit),
                  timeout=int(SESSION_TTL.total_seconds()))
    except Exception as exc:
        redis_failed(exc)
        logger.warning("could not remember session limit error=%s", type(exc).__name__)


# --- Alerts ---------------------------------------------------------------------------------------------

class AlertOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.name")
    month = serializers.DateField()
    level = serializers.CharField()
    threshold_pct = serializers.IntegerField()
    spend_usd = MoneyField()
    budget_usd = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
    created_at = serializers.DateTimeField()


class AlertListApi(TenantApi):
    """Budget alerts, newest first."""

    @extend_schema(
        parameters=[OpenApiParameter("team", str, description="Only this team's alerts."), *PAGE_PARAMETERS],
        responses=page_of("AlertPage", AlertOutput(many=True)),
        operation_id="alerts_list", tags=["budgets"],
    )
    def get(self, request):
        alerts = alert_list(tenant=request.tenant, team_name=request.query_params.get("team") or None)
        return paginated_response(request, alerts, AlertOutput, order=("-id",))


# --- Audit log ------------------------------------------------------------------------------------------

class AuditEntryOutput(serializers.Serializer):
    class BudgetValues(serializers.Serializer):
        monthly_budget_usd = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
        alert_threshold_pct = serializers.IntegerField()
        hard_stop = serializers.BooleanField()

    id = serializers.IntegerField()
    team = serializers.CharField(source="team_name")
    action = serializers.ChoiceField(choices=["created", "updated", "deleted"])
    actor = serializers.CharField(source="actor_label", help_text='"user alice", "key aw_live_AbCd…" or "system".')
    before = BudgetValues(allow_null=True, help_text="The budget before the change (null when created).")
    after = BudgetValues(allow_null=True, help_text="The budget after the change (null when deleted).")
    created_at = serializers.DateTimeField()


class AuditLogListApi(TenantApi):
    """Every change to a team budget — who (user or key), what (before and after), when — newest first."""

    @extend_schema(
        parameters=[OpenApiParameter("team", str, description="Only this team's changes."), *PAGE_PARAMETERS],
        responses=page_of("AuditEntryPage", AuditEntryOutput(many=True)),
        operation_id="audit_log_list", tags=["budgets"],
    )
    def get(self, request):
        entries = audit_log_list(tenant=request.tenant, team_name=request.query_params.get("team") or None)
        return paginated_response(request, entries, AuditEntryOutput, order=("-id",))
