"""Pages of the usage app: Activity (and its CSV), Sessions, a session, Anomalies, Settings → Pricing and
Retention. Every list reads an indexed keyset page; spend figures come from the roll-ups."""

import datetime
import json
import re
from decimal import Decimal

from django import forms
from django.db.models import Exists, F, OuterRef, Q
from django.http import Http404, QueryDict, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from agentwatch_site.errors import ApiError
from agentwatch_site.pagination import decode_cursor, encode_cursor, keyset_page_or_first
from budgets.selectors import pct_used
from tenants.selectors import get_for_tenant_or_404, team_by_name, team_list
from tenants.services import tenant_settings_update
from tenants.views import member_required, render_page
from usage.charts import render_svg, session_token_chart
from usage.csv_export import csv_cell, csv_lines
from usage.filters import EVENT_FILTER_PARAMS, UNTRIMMED_FILTER_PARAMS
from usage.models import Anomaly, ModelPrice, PurgeRun, SessionState, UsageEvent
from usage.selectors import event_list, session_iterations, session_list, unpriced_models_recent
from usage.services.anomalies import anomaly_acknowledge, anomaly_list
from usage.services.pricing import price_override_delete, price_override_set
from usage.services.retention import expired_events

ACTIVITY_PAGE_SIZE = 50
LIVE_MAX_ROWS = 100
# More new events than this waiting: the live list jumps to the newest (see activity_live).
LIVE_BACKLOG_MAX = 3 * LIVE_MAX_ROWS
LIVE_PENDING_MAX = 50
# Rows the Activity list keeps while live refresh adds to its top: beyond, the oldest leave its bottom and "Load
# older events" starts after the last row kept (static/js/app.js), so a tab left open does not grow without end.
ACTIVITY_MAX_ROWS = 1_000
_EVENT_PK = re.compile(r"[0-9]{1,18}")
SESSIONS_PAGE_SIZE = 50
ANOMALIES_PAGE_SIZE = 50
SESSION_EVENTS_SHOWN = 25
CSV_MAX_ROWS = 1_000_000
EVENT_ORDER = ("-timestamp", "-id")


def _filters(request) -> dict[str, str]:
    """The event filters present in the query string (empty ones dropped, so URLs stay short). Exact-match values
    (a session id, a project, …) are kept as sent, spaces included, as the API takes them: a session page's link
    to its events must find `run-1 `."""
    filters = {}
    for name in EVENT_FILTER_PARAMS:
        value = request.GET.get(name, "")
        if name not in UNTRIMMED_FILTER_PARAMS:
            value = value.strip()
        if value:
            filters[name] = value
    return filters


def _query(params: dict, **extra) -> str:
    query = QueryDict(mutable=True)
    for name, value in {**params, **extra}.items():
        if value not in (None, ""):
            query[name] = value
    return query.urlencode()


def _events_or_errors(request, filters: dict):
    try:
        return event_list(tenant=request.tenant, filters=filters), {}
    except ApiError as exc:
        return UsageEvent.objects.none(), exc.fields or {"__all__": [exc.message]}


LIVE_ORDER = ("timestamp", "id")
_BEGINNING = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def _live_mark(rows) -> str:
    """Where live refresh starts: after the newest event shown (rows are newest first), in the same
    (timestamp, id) order the (tenant, timestamp, id) index serves; with nothing shown, any event is new."""
    newest = rows[0] if rows else None
    return encode_cursor([newest.timestamp, newest.id] if newest else [_BEGINNING, 0])


# A date input shows only a real YYYY-MM-DD; a date-time from the URL (?from=2026-11-25T09:30:00Z) is shown as text.
_PLAIN_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _team_choices(tenant, team: str) -> dict:
    """The team select's options, and whether the URL's team is one of them (else it is shown as unknown,
    not as "All teams" while the list is filtered by it)."""
    return {"teams": team_list(tenant=tenant),
            "team_known": bool(team) and team_by_name(tenant=tenant, name=team) is not None}


# --- Activity --------------------------------------------------------------------------------------------

@member_required
@require_GET
def activity(request):
    filters = _filters(request)
    events, errors = _events_or_errors(request, filters)
    page = keyset_page_or_first(events, order=EVENT_ORDER, cursor=request.GET.get("cursor") or None,
                                limit=ACTIVITY_PAGE_SIZE)
    context = {
        "active_nav": "activity",
        "events": page.items,
        "filters": filters,
        "errors": errors,
        "filter_query": _query(filters),
        "next_query": _query(filters, cursor=page.next_cursor) if page.next_cursor else None,
        "max_rows": ACTIVITY_MAX_ROWS,
        "live_query": _live_query(filters, after=_live_mark(page.items), pending=_pending_rows(page.items),
                                  empty=not page.items) if page.first else None,
        "is_filtered": bool(filters),
        # A value a date input cannot hold (a date-time, or one refused, e.g. 2026-02-30) stays visible as text
        # next to its error: a date input would show it blank, and Apply would then drop the filter silently.
        "date_inputs": {name: "text" if filters.get(name) and (not _PLAIN_DATE.match(filters[name])
                                                             or name in errors) else "date"
                        for name in ("from", "to")},
        **_team_choices(request.tenant, filters.get("team", "")),
    }
    status = 400 if errors else 200
    target = request.htmx.target if request.htmx else None
    if request.htmx and target == "activity-more":
        return render(request, "usage/_activity_rows_more.html", context)
    return render_page(request, "usage/activity.html", context, fragment="usage/_activity_page.html",
                       status=status)


@member_required
@require_GET
def event_detail(request, event_pk: int):
    """One event's details: the fragment an Activity row loads when it is first expanded, or a page of its own."""
    event = get_for_tenant_or_404(UsageEvent, tenant=request.tenant, pk=event_pk)
    # The metadata as JSON, the way the agent sent it (a dict would print as Python: True, None, quotes).
    metadata_json = json.dumps(event.metadata, sort_keys=True, ensure_ascii=False) if event.metadata else ""
    return render_page(request, "usage/event.html",
                       {"e": event, "metadata_json": metadata_json, "active_nav": "activity"},
                       fragment="usage/_event_details.html")


@member_required
@require_GET
def activity_live(request):
    """Polled every few seconds by the Activity page. Its URL carries the page's state: `after`, the newest event
    shown; `pending`, the oldest rows shown still waiting for a worker (at most LIVE_PENDING_MAX); `empty`, the
    list shows the "no events" message. The answer, out of band: the events newer than the mark (matching the
    filters), oldest first, LIVE_MAX_ROWS per poll, so a burst arrives over a few polls with none skipped; the
    pending rows priced since, to replace theirs; and the poller with the new state.

    A backlog too big to catch up with (a busy tenant, a tab left in the background) is not walked through: the
    newest rows are shown after a note that some were skipped. An event whose own timestamp is older than the
    mark (a late or skewed client clock) appears on the next full load instead."""
    filters = _filters(request)
    mark = request.GET.get("after", "")
    events, errors = _events_or_errors(request, filters)
    try:
        timestamp, event_id = decode_cursor(mark, model=UsageEvent, order=LIVE_ORDER)
    except ApiError:
        errors = errors or {"after": ["invalid"]}
    rows, gap = [], False
    if not errors:
        waiting = events.filter(Q(timestamp__gt=timestamp) | Q(timestamp=timestamp, id__gt=event_id))
        rows = list(reversed(waiting.order_by(*LIVE_ORDER)[:LIVE_MAX_ROWS]))
        if len(rows) == LIVE_MAX_ROWS and waiting.order_by(*LIVE_ORDER)[LIVE_BACKLOG_MAX:].exists():
            rows, gap = list(waiting[:LIVE_MAX_ROWS]), True  # the newest ones, newest first
    pending = _pending_ids(request.GET.get("pending", ""))
    priced = list(UsageEvent.objects.for_tenant(request.tenant).filter(pk__in=pending, recorded_at__isnull=False)
                  .order_by("id")) if pending else []
    done = {event.pk for event in priced}
    still_pending = [pk for pk in pending if pk not in done] + _pending_rows(rows)
    was_empty = request.GET.get("empty") == "1"
    context = {
        "events": rows, "gap": gap, "priced": priced, "new": True, "was_empty": was_empty,
        "live_query": _live_query(filters, after=_live_mark(rows) if rows else mark, pending=still_pending,
                                  empty=was_empty and not rows),
    }
    return render(request, "usage/_activity_live.html", context)


def _pending_rows(rows) -> list[int]:
    return [event.pk for event in rows if event.cost_usd is None and not event.record_error]


def _pending_ids(value: str) -> list[int]:
    """The `pending` ids a poll sent back (digits only: anything else is dropped, never an error)."""
    return [int(pk) for pk in value.split(",")[:LIVE_PENDING_MAX] if _EVENT_PK.fullmatch(pk)]


def _live_query(filters: dict, *, after: str, pending: list[int], empty: bool) -> str:
    """The live poll's URL state (see activity_live); the oldest pending rows are the first a worker prices."""
    return _query(filters, after=after, pending=",".join(str(pk) for pk in sorted(set(pending))[:LIVE_PENDING_MAX]),
                  empty="1" if empty else None)


CSV_COLUMNS = ("timestamp", "event_id", "team", "project", "session_id", "iteration_index", "model", "provider",
               "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms", "status", "customer_id", "user_id",
               "feature_id", "identified_risks")


CSV_FIELDS = ("timestamp", "event_id", "team_name", "project", "session_id", "iteration_index", "model", "provider",
              "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms", "status", "customer_id", "user_id",
              "feature_id", "identified_risks")


def _csv_rows(rows):
    """Every cell through csv_cell: text defused, money in plain digits, times in ISO form."""
    yield CSV_COLUMNS
    for row in rows:
        yield [csv_cell(" ".join(row[field] or []) if field == "identified_risks" else row[field])
               for field in CSV_FIELDS]


@member_required
@require_GET
def activity_export(request):
    filters = _filters(request)
    events, errors = _events_or_errors(request, filters)
    if errors:
        return redirect(f"/activity/?{_query(filters)}")
    rows = events.values(*CSV_FIELDS)[:CSV_MAX_ROWS].iterator(chunk_size=2000)
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response = StreamingHttpResponse(csv_lines(_csv_rows(rows)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="agentwatch-activity-{request.tenant.slug}-{stamp}.csv"'
    return response


# --- Sessions --------------------------------------------------------------------------------------------

SESSION_ORDER = ("-last_seen", "-id")


@member_required
@require_GET
def sessions(request):
    tenant = request.tenant
    filters = {name: request.GET.get(name, "").strip()[:200] for name in ("team", "project")}
    over_limit = request.GET.get("over_limit") == "1"
    flagged = request.GET.get("flagged") == "1"
    rows = session_list(tenant=tenant, team=filters["team"] or None, project=filters["project"] or None).annotate(
        flagged=Exists(Anomaly.objects.filter(tenant=tenant, session_id=OuterRef("session_id")))
    )
    if over_limit:
        rows = rows.filter(last_limit_usd__isnull=False, spent_usd__gte=F("last_limit_usd"))
    if flagged:
        rows = rows.filter(flagged=True)
    params = {**filters, "over_limit": "1" if over_limit else "", "flagged": "1" if flagged else ""}
    page = keyset_page_or_first(rows, order=SESSION_ORDER, cursor=request.GET.get("cursor") or None,
                                limit=SESSIONS_PAGE_SIZE)
    for state in page.items:
        state.pct_of_limit = pct_used(state.spent_usd, state.last_limit_usd) if state.last_limit_usd else None
        state.bar_pct = min(Decimal("100"), state.pct_of_limit) if state.pct_of_limit is not None else None
    context = {
        "active_nav": "sessions", "sessions": page.items, "filters": filters, "over_limit": over_limit,
        "flagged": flagged, **_team_choices(tenant, filters["team"]), "filter_query": _query(params),
        "next_query": _query(params, cursor=page.next_cursor) if page.next_cursor else None,
        "now": timezone.now(),
    }
    if request.htmx and request.htmx.target == "sessions-more":
        return render(request, "usage/_session_rows_more.html", context)
    return render_page(request, "usage/sessions.html", context, fragment="usage/_sessions_page.html")


@member_required
@require_GET
def session_by_query(request):
    """The session page for an id given as `?id=` (the dashboard links "." and ".." this way)."""
    session_id = request.GET.get("id", "")
    if not session_id:
        raise Http404("No session id given.")
    return session_detail(request, session_id)


@member_required
@require_GET
def session_detail(request, session_id: str):
    tenant = request.tenant
    if len(session_id) > SessionState._meta.get_field("session_id").max_length:
        raise Http404("No such session.")  # ingest stores no such id
    state = SessionState.objects.for_tenant(tenant).select_related("team").filter(session_id=session_id).first()
    iterations = session_iterations(tenant=tenant, session_id=session_id, state=state)
    events = event_list(tenant=tenant, filters={"session_id": session_id})
    if state is not None:
        events = events.filter(state.current_events())
    events = list(events[:SESSION_EVENTS_SHOWN])
    if state is None and not events:
        raise Http404("No such session.")
    anomalies = list(anomaly_list(tenant=tenant, session_id=session_id).order_by("-last_seen"))
    loop_iterations: set[int] = set()
    for anomaly in anomalies:
        if anomaly.kind == Anomaly.Kind.RUNAWAY_LOOP:
            loop_iterations.update(int(i) for i in anomaly.details.get("iterations", []) if str(i).isdigit())
    previous = None
    for row in iterations:
        row["ratio"] = (row["prompt_tokens"] / previous) if previous else None
        row["in_loop"] = row["iteration_index"] in loop_iterations
        previous = row["prompt_tokens"] or None
    total_spend = sum((row["cost_usd"] or Decimal("0") for row in iterations), Decimal("0"))
    context = {
        "active_nav": "sessions", "session_id": session_id, "state": state, "iterations": iterations,
        "events": events, "anomalies": anomalies, "loop_iterations": sorted(loop_iterations),
        "chart": session_token_chart(iterations, loop_iterations=loop_iterations),
        "spent": state.spent_usd if state else total_spend,
        "pct_of_limit": pct_used(state.spent_usd, state.last_limit_usd) if state and state.last_limit_usd else None,
        "expired": bool(state and state.expires_at <= timezone.now()),
        "events_query": _query({"session_id": session_id}),
        "recent_iterations": list(reversed(iterations[-30:])),
    }
    context["chart_svg"] = render_svg(context["chart"], chart_id="tokens",
                                      title="Prompt and completion tokens per iteration")
    if context["pct_of_limit"] is not None:
        context["bar_pct"] = min(Decimal("100"), context["pct_of_limit"])
    return render_page(request, "usage/session_detail.html", context)


# --- Anomalies -------------------------------------------------------------------------------------------

ANOMALY_ORDER = ("-last_seen", "-id")


@member_required
@require_GET
def anomalies(request):
    tenant = request.tenant
    kind = request.GET.get("kind", "")
    status = request.GET.get("status", "")
    team = request.GET.get("team", "").strip()[:100]
    kind = kind if kind in Anomaly.Kind.values else ""
    status = status if status in Anomaly.Status.values else ""
    rows = anomaly_list(tenant=tenant, kind=kind or None, status=status or None, team=team or None)
    params = {"kind": kind, "status": status, "team": team}
    page = keyset_page_or_first(rows, order=ANOMALY_ORDER, cursor=request.GET.get("cursor") or None,
                                limit=ANOMALIES_PAGE_SIZE)
    context = {
        "active_nav": "anomalies", "anomalies": page.items, "kind": kind, "status": status, "team": team,
        "kinds": Anomaly.Kind.choices, "statuses": Anomaly.Status.choices, **_team_choices(tenant, team),
        "filter_query": _query(params),
        "next_query": _query(params, cursor=page.next_cursor) if page.next_cursor else None,
    }
    if request.htmx and request.htmx.target == "anomalies-more":
        return render(request, "usage/_anomaly_rows_more.html", context)
    return render_page(request, "usage/anomalies.html", context, fragment="usage/_anomalies_page.html")


@member_required
@require_POST
def anomaly_ack(request, anomaly_id: int):
    anomaly = get_for_tenant_or_404(Anomaly, tenant=request.tenant, pk=anomaly_id)
    anomaly = anomaly_acknowledge(anomaly=anomaly, by=f"user {request.user.get_username()}")
    if request.htmx:
        anomaly = Anomaly.objects.select_related("team").get(pk=anomaly.pk)
        return render(request, "usage/_anomaly_acknowledged.html", {"a": anomaly, "active_nav": "anomalies"})
    return redirect("anomalies")


# --- Settings → Pricing ----------------------------------------------------------------------------------

def _pricing_context(request, **extra) -> dict:
    tenant = request.tenant
    overrides = {p.model: p for p in ModelPrice.objects.for_tenant(tenant).order_by("model")}
    catalogue = list(ModelPrice.objects.filter(tenant__isnull=True).order_by("provider", "model"))
    for price in catalogue:
        price.override = overrides.get(price.model)
    context = {
        "active_nav": "settings", "settings_tab": "pricing", "catalogue": catalogue,
        "overrides": list(overrides.values()),
        "custom_overrides": [p for p in overrides.values() if p.model not in {c.model for c in catalogue}],
        "unpriced": unpriced_models_recent(tenant=tenant), "cost_modes": tenant.CostMode.choices,
        "price_form": PriceOverrideForm(), "price_errors": {},
    }
    context.update(extra)
    return context


@member_required
def pricing(request):
    return render_page(request, "usage/pricing.html", _pricing_context(request),
                       fragment="usage/_pricing_panel.html")


@member_required
@require_POST
def pricing_mode(request):
    try:
        tenant_settings_update(tenant=request.tenant, cost_mode=request.POST.get("cost_mode", ""))
    except ApiError as exc:
        return render_page(request, "usage/pricing.html", _pricing_context(request, mode_error=exc.message),
                           fragment="usage/_pricing_panel.html", status=400)
    if not request.htmx:
        return redirect("pricing")
    return render(request, "usage/_pricing_panel.html", _pricing_context(request, saved="cost mode"))


@member_required
@require_POST
def pricing_override(request):
    form = PriceOverrideForm(request.POST)
    if not form.is_valid():
        context = _pricing_context(request, price_form=form)
        return render_page(request, "usage/pricing.html", context, fragment="usage/_pricing_panel.html",
                           status=400)
    price_override_set(tenant=request.tenant, **form.cleaned_data)
    if not request.htmx:
        return redirect("pricing")
    return render(request, "usage/_pricing_panel.html",
                  _pricing_context(request, saved=f"price of {form.cleaned_data['model']}"))


@member_required
@require_POST
def pricing_override_delete(request, price_id: int):
    price = get_for_tenant_or_404(ModelPrice, tenant=request.tenant, pk=price_id)
    price_override_delete(price=price)
    if not request.htmx:
        return redirect("pricing")
    return render(request, "usage/_pricing_panel.html", _pricing_context(request))


class PriceOverrideForm(forms.Form):
    model = forms.CharField(max_length=200, label="Model")
    input_per_mtok = forms.DecimalField(min_value=0, max_value=100000, max_digits=12, decimal_places=4,
                                        label="Input $/MTok")
    output_per_mtok = forms.DecimalField(min_value=0, max_value=100000, max_digits=12, decimal_places=4,
                                         label="Output $/MTok")

    def clean_model(self):
        value = self.cleaned_data["model"].strip()
        if not value:
            raise forms.ValidationError("Give the model name exactly as events report it.")
        return value


# --- Settings → Retention --------------------------------------------------------------------------------

class RetentionForm(forms.Form):
    retention_days = forms.IntegerField(min_value=1, max_value=3650, label="Keep events for (days)")


def _retention_context(request, **extra) -> dict:
    tenant = request.tenant
    cutoff = timezone.now() - datetime.timedelta(days=tenant.retention_days)
    expired = expired_events(tenant, cutoff)
    oldest = expired.order_by("timestamp", "id").values_list("timestamp", flat=True).first()
    runs = PurgeRun.objects.filter(dry_run=False).order_by("-started_at")
    last_run = runs.filter(finished_at__isnull=False).first()
    # A later run that has not finished: still running, or stopped (its counts are only written per finished
    # tenant, so what it deleted of this tenant's is not known yet).
    unfinished = runs.filter(finished_at__isnull=True)
    if last_run is not None:
        unfinished = unfinished.filter(started_at__gt=last_run.started_at)
    context = {
        "active_nav": "settings", "settings_tab": "retention", "cutoff": cutoff,
        "expired_count": expired.count() if oldest else 0, "oldest_expired": oldest,
        "last_run": last_run, "last_run_tenant": (last_run.per_tenant or {}).get(tenant.slug) if last_run else None,
        "unfinished_run": unfinished.first(),
        "form": RetentionForm(initial={"retention_days": tenant.retention_days}),
    }
    context.update(extra)
    return context


@member_required
def retention(request):
    if request.method == "POST":
        form = RetentionForm(request.POST)
        if not form.is_valid():
            return render_page(request, "usage/retention.html", _retention_context(request, form=form),
                               fragment="usage/_retention_panel.html", status=400)
        tenant_settings_update(tenant=request.tenant, retention_days=form.cleaned_data["retention_days"])
        if not request.htmx:
            return redirect("retention")
        return render(request, "usage/_retention_panel.html", _retention_context(request, saved=True))
    return render_page(request, "usage/retention.html", _retention_context(request),
                       fragment="usage/_retention_panel.html")
