import datetime
from collections.abc import Iterator
from decimal import Decimal

from django.db.models import Count, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from agentwatch_site.dates import month_start, next_month_start, tenant_month_days
from agentwatch_site.errors import validation_error
from tenants.models import Team, Tenant
from tenants.selectors import same_team_name, team_list
from usage.filters import UsageEventFilter
from usage.models import DailySpend, SessionState, UsageEvent


def ingest_lag_seconds() -> float:
    """Age of the oldest event still waiting for a worker (0 when none); served by a small partial index."""
    oldest = (
        UsageEvent.objects.filter(recorded_at__isnull=True).order_by("id").values_list("received_at", flat=True)
        .first()
    )
    if oldest is None:
        return 0.0
    return round(max(0.0, (timezone.now() - oldest).total_seconds()), 3)


def quarantined_event_list(*, tenant: Tenant | None = None) -> QuerySet[UsageEvent]:
    """Events set aside because recording them failed (normally none; a small partial index serves it)."""
    events = UsageEvent.objects.exclude(record_error="")
    return events.filter(tenant=tenant) if tenant is not None else events


def quarantined_event_count() -> int:
    return quarantined_event_list().count()


def session_state_get(*, tenant: Tenant, session_id: str) -> SessionState | None:
    return SessionState.objects.filter(tenant=tenant, session_id=session_id).first()


def event_list(*, tenant: Tenant, filters) -> QuerySet[UsageEvent]:
    """The tenant's events matching `filters` (a QueryDict or dict of UsageEventFilter parameters), newest first
    (timestamp, then id, both descending: a stable order for keyset paging). Invalid filters raise a 400
    validation_error whose `fields` name each bad parameter."""
    filterset = UsageEventFilter(filters if filters is not None else {},
                                 queryset=UsageEvent.objects.for_tenant(tenant))
    if not filterset.is_valid():
        raise validation_error({name: [str(m) for m in messages] for name, messages in filterset.errors.items()})
    return filterset.qs.order_by("-timestamp", "-id")


SUMMARY_DIMENSIONS = {"day": "day", "team": "team_name", "project": "project", "model": "model"}
SPEND_METRICS = ("events", "prompt_tokens", "completion_tokens", "cost_usd")


def spend_summary(*, tenant: Tenant, group_by: list[str], day_from: datetime.date | None = None,
                  day_to: datetime.date | None = None) -> list[dict]:
    """Spend from the daily roll-ups (never the raw events), one dict per group, days inclusive and tenant-local.
    Rows: {"day"?, "team_name"?, "project"?, "model"?, "events", "prompt_tokens", "completion_tokens",
    "cost_usd"}, ordered by the group columns; without group_by, one row for the whole range."""
    columns = [SUMMARY_DIMENSIONS[name] for name in group_by]
    rows = DailySpend.objects.for_tenant(tenant)
    if day_from is not None:
        rows = rows.filter(day__gte=day_from)
    if day_to is not None:
        rows = rows.filter(day__lte=day_to)
    if not columns:
        total = rows.aggregate(**{m: Sum(m) for m in SPEND_METRICS})
        return [{m: total[m] or (Decimal("0") if m == "cost_usd" else 0) for m in SPEND_METRICS}]
    return list(rows.values(*columns).annotate(**{m: Sum(m) for m in SPEND_METRICS}).order_by(*columns))


def spend_month_rows(*, tenant: Tenant, month: datetime.date, group_by: list[str] | None = None) -> Iterator[dict]:
    """The chargeback rows of the tenant's calendar month starting `month` (DailySpend.day is tenant-local):
    one per day × team × project × model, or per `group_by` columns; streamed from the database in chunks."""
    start, end = month_start(month), next_month_start(month)
    rows = DailySpend.objects.for_tenant(tenant).filter(day__gte=start, day__lt=end)
    if group_by:
        columns = [SUMMARY_DIMENSIONS[name] for name in group_by]
        rows = rows.values(*columns).annotate(**{m: Sum(m) for m in SPEND_METRICS}).order_by(*columns)
    else:
        columns = list(SUMMARY_DIMENSIONS.values())
        rows = rows.order_by(*columns).values(*columns, *SPEND_METRICS)
    return rows.iterator(chunk_size=2000)


def session_list(*, tenant: Tenant, team: str | None = None, project: str | None = None) -> QuerySet[SessionState]:
    sessions = SessionState.objects.for_tenant(tenant).select_related("team")
    if team:
        sessions = sessions.filter(same_team_name("team__name", team))
    if project:
        sessions = sessions.filter(project=project)
    return sessions.order_by("-last_seen", "-id")


def session_get(*, tenant: Tenant, session_id: str) -> SessionState:
    """One session of the tenant, or Http404 (another tenant's session is simply not found). A session whose state
    expired (idle 24 hours, then removed) while its events are kept is summed from those events, as its page does:
    an unsaved SessionState (no pk) with `expires_at` None and no `last_limit_usd`, over all its lifetimes."""
    if "\x00" in session_id or len(session_id) > SessionState._meta.get_field("session_id").max_length:
        # PostgreSQL cannot even compare text with NUL in it; ingest stores no such id.
        raise Http404("No session matches the given query.")
    state = SessionState.objects.for_tenant(tenant).select_related("team").filter(session_id=session_id).first()
    if state is None:
        state = _expired_session(tenant=tenant, session_id=session_id)
    if state is None:
        raise Http404("No session matches the given query.")
    return state


def _expired_session(*, tenant: Tenant, session_id: str) -> SessionState | None:
    """From its recorded events only: a session whose first events are still waiting for a worker has no state yet
    and is not an expired one (a 404, as before the recorder creates its state)."""
    events = UsageEvent.objects.for_tenant(tenant).filter(session_id=session_id, recorded_at__isnull=False)
    latest = events.select_related("team").order_by("-timestamp", "-id").first()
    if latest is None:
        return None
    totals = events.aggregate(
        spent_usd=Coalesce(Sum("cost_usd"), Value(Decimal("0"))), events=Count("id"),
        iterations=Count("iteration_index", distinct=True),
        prompt_tokens=Coalesce(Sum("prompt_tokens"), 0), completion_tokens=Coalesce(Sum("completion_tokens"), 0),
        first_seen=Min("received_at"), last_seen=Max("received_at"),  # as the recorder dates a session
    )
    return SessionState(tenant=tenant, session_id=session_id, team=latest.team, project=latest.project,
                        last_limit_usd=None, expires_at=None, **totals)


SESSION_ITERATIONS_SHOWN = 1000


def session_iterations(*, tenant: Tenant, session_id: str, state: SessionState | None,
                       limit: int = SESSION_ITERATIONS_SHOWN) -> list[dict]:
    """Per iteration_index of a session's events (the latest `limit`, ascending): events, tokens, cost (recorded
    events only) and the time of its first event. With its `state`, only its current lifetime counts, as in its
    totals (SessionState.current_events); without one (expired and removed), all its events."""
    events = UsageEvent.objects.for_tenant(tenant).filter(
        state.current_events() if state is not None else Q(session_id=session_id), iteration_index__isnull=False)
    rows = (
        events
        .values("iteration_index")
        .annotate(events=Count("id"), prompt_tokens=Sum("prompt_tokens"),
                  completion_tokens=Sum("completion_tokens"), cost_usd=Sum("cost_usd"), timestamp=Min("timestamp"))
        .order_by("-iteration_index")[:limit]
    )
    return sorted(rows, key=lambda row: row["iteration_index"])


def team_spend_list(*, tenant: Tenant, moment: datetime.datetime | None = None) -> QuerySet[Team]:
    """The tenant's teams with month-to-date spend and events (tenant-local month) in one query."""
    start, end = tenant_month_days(tenant, moment)
    month = (
        DailySpend.objects.filter(tenant=tenant, day__gte=start, day__lt=end, team_name=OuterRef("name"))
        .order_by().values("team_name")
    )
    return (
        team_list(tenant=tenant)
        .annotate(
            month_spend_usd=Coalesce(Subquery(month.annotate(s=Sum("cost_usd")).values("s")),
                                     Value(Decimal("0")), output_field=DailySpend._meta.get_field("cost_usd")),
            month_events=Coalesce(Subquery(month.annotate(n=Sum("events")).values("n")), Value(0),
                                  output_field=DailySpend._meta.get_field("events")),
        )
    )


def session_top_spenders(*, tenant: Tenant, since: datetime.datetime, limit: int = 5) -> list[SessionState]:
    """The sessions active since `since` that spent most (the Overview's "top sessions")."""
    return list(
        SessionState.objects.for_tenant(tenant).filter(last_seen__gte=since).select_related("team")
        .order_by("-spent_usd", "-id")[:limit]
    )


def unpriced_models_recent(*, tenant: Tenant, days: int = 30) -> list[dict]:
    """Models seen in the last `days` days (from the daily roll-ups) with neither a catalogue price nor a tenant
    override, with their event counts: what an admin should price."""
    from django.db.models import Q

    from usage.models import ModelPrice

    since = timezone.now().date() - datetime.timedelta(days=days)
    seen = (DailySpend.objects.for_tenant(tenant).filter(day__gte=since).values("model")
            .annotate(events=Sum("events"), cost_usd=Sum("cost_usd")).order_by("-events"))
    rows = list(seen)
    priced = set(ModelPrice.objects.filter(Q(tenant=tenant) | Q(tenant__isnull=True),
                                           model__in=[row["model"] for row in rows]).values_list("model", flat=True))
    return [row for row in rows if row["model"] not in priced]
