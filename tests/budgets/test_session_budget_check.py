"""GET /v1/budget-check: aw-sdk's pre-call check (PRODUCT.md §4), through the HTTP client."""

import datetime
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from budgets.services import budget_upsert
from tests.conftest import requires_production, terminate_backend
from usage.models import SessionState
from usage.services.ingest import event_batch_ingest, parse_ingest_body
from usage.services.recording import events_record_pending, last_limit_cache_key

CHECK_KEYS = {"session_id", "exceeded", "spent_usd", "limit_usd", "remaining_usd", "reason", "team"}
TEAM_KEYS = {"team", "status", "pct_used", "hard_stop", "monthly_budget_usd", "current_spend", "blocks"}


def record(tenant, *, session_id: str, tokens: int, team: str | None = None, iteration: int = 1,
           now: datetime.datetime | None = None) -> None:
    """Ingest one event as aw-sdk sends it and record it (blended: $3 per million tokens)."""
    now = now or timezone.now()
    event = {"model": "gpt-4o", "prompt_tokens": tokens, "completion_tokens": 0, "latency_ms": 5,
             "session_id": session_id, "iteration_index": iteration}
    if team:
        event["team"] = team
    event_batch_ingest(tenant=tenant, events=parse_ingest_body(event, now=now), received_at=now)
    events_record_pending()


def check(api, query: str):
    """The raw query string as a server receives it (WSGI: the bytes as latin-1 text), unescaped as aw-sdk
    sends it; DRF's test client would cut it at a second "?"."""
    return api.get("/v1/budget-check", QUERY_STRING=query.encode().decode("latin-1"))


def ok(response) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == CHECK_KEYS
    for key in ("spent_usd", "limit_usd", "remaining_usd"):
        assert type(body[key]) is float, key
    if body["team"] is not None:
        assert set(body["team"]) == TEAM_KEYS
    return body


def test_unknown_session_has_spent_nothing(telemetry_api):
    body = ok(check(telemetry_api, "session_id=ci-run-123&limit_usd=2.0"))
    assert body == {"session_id": "ci-run-123", "exceeded": False, "spent_usd": 0.0, "limit_usd": 2.0,
                    "remaining_usd": 2.0, "reason": None, "team": None}


def test_session_at_its_limit_is_exceeded_with_spent_and_limit(tenant, telemetry_api):
    record(tenant, session_id="s1", tokens=1000)  # $0.003
    below = ok(check(telemetry_api, "session_id=s1&limit_usd=0.0031"))
    assert (below["exceeded"], below["spent_usd"], below["remaining_usd"]) == (False, 0.003, 0.0001)
    at = ok(check(telemetry_api, "session_id=s1&limit_usd=0.003"))
    assert (at["exceeded"], at["reason"], at["spent_usd"], at["limit_usd"], at["remaining_usd"]) == (
        True, "session_budget", 0.003, 0.003, 0.0)


@pytest.mark.parametrize(("text", "value"), [("2", 2.0), ("2.0", 2.0), ("1e-05", 1e-05), ("0.01", 0.01),
                                             ("0", 0.0), ("1E3", 1000.0), (".5", 0.5), ("+3", 3.0)])
def test_limit_in_any_float_notation_is_accepted(telemetry_api, text, value):
    body = ok(check(telemetry_api, f"session_id=s&limit_usd={text}"))
    assert body["limit_usd"] == value


def test_zero_limit_blocks_at_once(telemetry_api):
    body = ok(check(telemetry_api, "session_id=s&limit_usd=0"))
    assert body["exceeded"] is True and body["reason"] == "session_budget"


@pytest.mark.parametrize("query", [
    "session_id=s", "session_id=s&limit_usd=", "session_id=s&limit_usd=nan", "session_id=s&limit_usd=NaN",
    "session_id=s&limit_usd=inf", "session_id=s&limit_usd=-inf", "session_id=s&limit_usd=1e400",
    "session_id=s&limit_usd=-1", "session_id=s&limit_usd=-0.01", "session_id=s&limit_usd=two",
    "session_id=s&limit_usd=1_000", "session_id=s&limit_usd=%202", "session_id=s&limit_usd=0x10",
])
def test_bad_limit_is_a_400_naming_limit_usd(telemetry_api, query):
    response = check(telemetry_api, query)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["limit_usd"]


@pytest.mark.parametrize("query", [
    "limit_usd=2", "session_id=&limit_usd=2", f"session_id={'x' * 201}&limit_usd=2",
    "session_id=nul%00&limit_usd=2",
])
def test_bad_session_id_is_a_400(telemetry_api, query):
    response = check(telemetry_api, query)
    assert response.status_code == 400
    # (A NUL is refused before the view, by the site-wide guard, with its own code.)
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_session_id_of_200_printable_characters_is_accepted(telemetry_api):
    sid = "é" * 200
    assert ok(check(telemetry_api, f"session_id={sid}&limit_usd=1"))["session_id"] == sid


@pytest.mark.parametrize(("stored", "sent"), [
    ("a+b", "a+b"),
    ("ci run 7", "ci%20run%207"),
    ("ci run 7", "ci run 7"),
    ("org/repo:job-1", "org/repo:job-1"),
    ("café-ü-東京", "caf%C3%A9-%C3%BC-%E6%9D%B1%E4%BA%AC"),
    ("x=y?z", "x=y?z"),
    ("100%", "100%25"),
])
def test_session_id_reads_as_ingest_stored_it_plus_stays_plus(tenant, telemetry_api, stored, sent):
    record(tenant, session_id=stored, tokens=1000)
    body = ok(check(telemetry_api, f"session_id={sent}&limit_usd=0.002"))
    assert body["session_id"] == stored
    assert (body["spent_usd"], body["exceeded"]) == (0.003, True)


def test_a_percent_escape_aw_sdk_sent_as_typed_finds_its_own_session_first(tenant, telemetry_api):
    # aw-sdk sends "%41-run" as is; decoded, it is "A-run", another session.
    record(tenant, session_id="%41-run", tokens=1000)
    record(tenant, session_id="A-run", tokens=5000)
    assert ok(check(telemetry_api, "session_id=%41-run&limit_usd=1"))["spent_usd"] == 0.003
    assert ok(check(telemetry_api, "session_id=A-run&limit_usd=1"))["spent_usd"] == 0.015
    # A client that escapes ids itself still reaches "A-run" while no session is stored as "%41-new".
    record(tenant, session_id="A-new", tokens=2000)
    assert ok(check(telemetry_api, "session_id=%41-new&limit_usd=1"))["spent_usd"] == 0.006
    # Its limit is remembered for aw-sdk's "%41-new" too, whose first event the recorder will copy it to.
    assert cache.get(last_limit_cache_key(tenant.pk, "%41-new")) == "1"
    # The escapes httpx adds itself (space, non-ASCII) are always decoded.
    record(tenant, session_id="%41 é", tokens=3000)
    body = ok(check(telemetry_api, "session_id=%41%20%C3%A9&limit_usd=1"))
    assert (body["session_id"], body["spent_usd"]) == ("%41 é", 0.009)


@pytest.mark.parametrize(("stored", "sent"), [
    *[(typed, typed) for typed in ("step%0A3", "tab%09x", "50%ff", "%e9t%e9", "%7F", "50%FF", "%E9t%E9", "run%C3")],
    ("%41%FF-é", "%41%FF-%C3%A9"),  # a typed escape, a byte that is not UTF-8 and the "é" httpx escapes itself
])
def test_an_id_whose_decoding_could_not_have_been_stored_is_read_as_typed(tenant, telemetry_api, stored, sent):
    # aw-sdk sends these as typed; decoded they are a line break, a tab, bytes that are not UTF-8 or DEL, which
    # ingest never stores: the check finds the session, instead of answering 400 (aw-sdk would fail open).
    record(tenant, session_id=stored, tokens=1000)
    body = ok(check(telemetry_api, f"session_id={sent}&limit_usd=0.002"))
    assert (body["session_id"], body["spent_usd"], body["exceeded"]) == (stored, 0.003, True)


@pytest.mark.parametrize(("query", "field"), [
    ("session_id=s&limit_usd=%FF", "limit_usd"), ("session_id=s&limit_usd=1&team=%FF", "team"),
])
def test_a_parameter_that_is_not_utf8_is_a_400_naming_it(telemetry_api, query, field):
    response = check(telemetry_api, query)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_an_expired_session_starts_from_zero(tenant, telemetry_api):
    record(tenant, session_id="old", tokens=1000, now=timezone.now() - datetime.timedelta(hours=25))
    assert SessionState.objects.get(session_id="old").spent_usd == Decimal("0.003")
    assert ok(check(telemetry_api, "session_id=old&limit_usd=0.001"))["spent_usd"] == 0.0


def test_another_tenants_session_is_not_visible(tenant, other_tenant, telemetry_api):
    record(other_tenant, session_id="shared-id", tokens=10_000, team="t")
    body = ok(check(telemetry_api, "session_id=shared-id&limit_usd=0.01"))
    assert (body["spent_usd"], body["team"]) == (0.0, None)
    budget_upsert(tenant=other_tenant, team_name="t", monthly_budget_usd=Decimal("0.01"), hard_stop=True)
    assert ok(check(telemetry_api, "session_id=x&limit_usd=1&team=t"))["team"] is None


def test_hard_stop_team_at_its_budget_blocks_with_the_teams_spend_and_limit(tenant, telemetry_api):
    budget_upsert(tenant=tenant, team_name="backend", monthly_budget_usd=Decimal("0.01"), hard_stop=True)
    record(tenant, session_id="other", tokens=3400, team="backend")  # team spend $0.0102
    record(tenant, session_id="mine", tokens=100, team="backend")  # session spend $0.0003
    body = ok(check(telemetry_api, "session_id=mine&limit_usd=5"))
    assert (body["exceeded"], body["reason"], body["spent_usd"], body["limit_usd"], body["remaining_usd"]) == (
        True, "team_budget", 0.0105, 0.01, 0.0)
    assert body["team"] == {"team": "backend", "status": "exceeded", "pct_used": 105.0, "hard_stop": True,
                            "monthly_budget_usd": 0.01, "current_spend": 0.0105, "blocks": True}


def test_session_limit_is_checked_first_and_the_more_restrictive_limit_applies(tenant, telemetry_api):
    budget_upsert(tenant=tenant, team_name="backend", monthly_budget_usd=Decimal("500"), hard_stop=True)
    record(tenant, session_id="mine", tokens=1000, team="backend")
    body = ok(check(telemetry_api, "session_id=mine&limit_usd=0.002"))
    assert (body["reason"], body["spent_usd"], body["limit_usd"]) == ("session_budget", 0.003, 0.002)
    assert body["team"]["status"] == "ok" and body["team"]["blocks"] is False
    # Not exceeded: the remaining amount is the smaller of the session's and the hard-stop team's.
    budget_upsert(tenant=tenant, team_name="backend", monthly_budget_usd=Decimal("0.01"), hard_stop=True)
    body = ok(check(telemetry_api, "session_id=mine&limit_usd=2"))
    assert (body["exceeded"], body["remaining_usd"]) == (False, 0.007)
    assert (body["spent_usd"], body["limit_usd"]) == (0.003, 2.0)


def test_alert_only_team_over_budget_does_not_block_but_says_so(tenant, telemetry_api):
    budget_upsert(tenant=tenant, team_name="research", monthly_budget_usd=Decimal("0.01"), hard_stop=False)
    record(tenant, session_id="r1", tokens=4000, team="research")
    body = ok(check(telemetry_api, "session_id=r1&limit_usd=1"))
    assert (body["exceeded"], body["reason"], body["remaining_usd"]) == (False, None, 0.988)
    assert (body["team"]["status"], body["team"]["blocks"], body["team"]["pct_used"]) == ("exceeded", False, 120.0)


def test_team_parameter_applies_before_the_session_has_any_event(tenant, telemetry_api):
    budget_upsert(tenant=tenant, team_name="Backend", monthly_budget_usd=Decimal("0.01"), hard_stop=True)
    record(tenant, session_id="elsewhere", tokens=4000, team="backend")
    body = ok(check(telemetry_api, "session_id=fresh&limit_usd=1&team=BACKEND"))
    assert (body["exceeded"], body["reason"], body["team"]["team"]) == (True, "team_budget", "Backend")
    # Without team= a session nobody has recorded yet has no team: aw-sdk's first call goes through.
    assert ok(check(telemetry_api, "session_id=fresh&limit_usd=1"))["exceeded"] is False
    # A team without a budget, or unknown, gives no team verdict.
    assert ok(check(telemetry_api, "session_id=fresh&limit_usd=1&team=nobody"))["team"] is None


def test_admin_keys_may_check_too(admin_api):
    assert ok(check(admin_api, "session_id=s&limit_usd=1"))["exceeded"] is False


@pytest.mark.parametrize(("query", "reads"), [
    # As aw-sdk calls it: the session's state joined to its team's budget, with the month spend, in one read.
    ("session_id=mine&limit_usd=2", 1),
    # With team=: the session's state, then that team's budget with its month spend.
    ("session_id=mine&limit_usd=2&team=backend", 2),
])
def test_the_check_reads_at_most_twice_and_writes_nothing_to_the_database(tenant, telemetry_api, query, reads):
    budget_upsert(tenant=tenant, team_name="backend", monthly_budget_usd=Decimal("10"), hard_stop=True)
    record(tenant, session_id="mine", tokens=1000, team="backend")
    ok(check(telemetry_api, query))  # the key's last_used_at is touched once a minute
    with CaptureQueriesContext(connection) as queries:
        body = ok(check(telemetry_api, query))
    assert body["team"]["team"] == "backend" and body["team"]["current_spend"] == 0.003
    sqls = [q["sql"] for q in queries.captured_queries]
    assert not [s for s in sqls if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))], sqls
    # Authentication reads the key at most once (it may be remembered for a second); then the check's own reads.
    key_reads = [s for s in sqls if "tenants_apikey" in s]
    assert len(key_reads) <= 1
    assert len(sqls) - len(key_reads) == reads, sqls


def test_the_last_limit_seen_is_kept_in_the_cache_and_copied_by_the_recorder(tenant, telemetry_api):
    ok(check(telemetry_api, "session_id=s+1&limit_usd=2.5"))
    ok(check(telemetry_api, "session_id=s+1&limit_usd=1e-05"))
    assert cache.get(last_limit_cache_key(tenant.pk, "s+1")) == "0.00001"
    record(tenant, session_id="s+1", tokens=10)
    assert SessionState.objects.get(session_id="s+1").last_limit_usd == Decimal("0.00001")


@pytest.mark.parametrize(("text", "stored"), [("1e-20000", "1E-10"), ("0e-1000000", "0"),
                                              ("0.00000000001", "1E-10"), ("2.00000000005", "2.0000000001")])
def test_a_limit_with_more_decimal_places_than_money_has_is_rounded_up_and_the_sessions_events_still_count(
        tenant, telemetry_api, text, stored):
    """Costs are multiples of $0.0000000001, so rounding the limit up to one changes no answer. Unrounded, the
    recorder could not store it in the session's state and set aside every event of the session."""
    body = ok(check(telemetry_api, f"session_id=tiny&limit_usd={text}"))
    assert body["limit_usd"] == float(Decimal(stored))
    record(tenant, session_id="tiny", tokens=1_000_000)  # $3
    state = SessionState.objects.get(session_id="tiny")
    assert (state.spent_usd, state.last_limit_usd) == (Decimal("3"), Decimal(stored))
    after = ok(check(telemetry_api, f"session_id=tiny&limit_usd={text}"))
    assert (after["exceeded"], after["spent_usd"]) == (True, 3.0)


def test_a_limit_of_minus_zero_is_zero(telemetry_api):
    response = check(telemetry_api, "session_id=s&limit_usd=-0")
    assert b"-0" not in response.content
    assert ok(response)["limit_usd"] == 0.0


def test_telemetry_check_needs_a_key(client):
    response = client.get("/v1/budget-check?session_id=s&limit_usd=1")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_limit_the_session_state_already_holds_is_not_cached_again(tenant, telemetry_api):
    key = last_limit_cache_key(tenant.pk, "steady")
    ok(check(telemetry_api, "session_id=steady&limit_usd=2"))
    record(tenant, session_id="steady", tokens=10)
    assert SessionState.objects.get(session_id="steady").last_limit_usd == Decimal("2")
    cache.delete(key)
    ok(check(telemetry_api, "session_id=steady&limit_usd=2.0"))
    assert cache.get(key) is None
    ok(check(telemetry_api, "session_id=steady&limit_usd=3"))
    assert cache.get(key) == "3"


def test_a_team_parameter_without_a_budget_does_not_hide_the_sessions_hard_stop_team(tenant, telemetry_api):
    budget_upsert(tenant=tenant, team_name="capped", monthly_budget_usd=Decimal("0.01"), hard_stop=True)
    record(tenant, session_id="s-typo", tokens=10_000, team="capped")
    body = ok(check(telemetry_api, "session_id=s-typo&limit_usd=100&team=no-such-team"))
    assert body["exceeded"] is True and body["reason"] == "team_budget"


@pytest.mark.django_db(transaction=True)  # the connection is closed mid-test: no test transaction around it
def test_repeated_checks_on_one_connection_follow_every_change(tenant, telemetry_api):
    """The check's statement runs on a cursor kept per connection (agentwatch_site/db.py): each answer must be
    the database's current one — after new spend, after the session is gone, and after a reconnect."""
    query = "session_id=kept-cursor&limit_usd=1"
    assert ok(check(telemetry_api, query))["spent_usd"] == 0.0
    record(tenant, session_id="kept-cursor", tokens=100_000)
    assert ok(check(telemetry_api, query))["spent_usd"] == pytest.approx(0.3)
    record(tenant, session_id="kept-cursor", tokens=100_000, iteration=2)
    assert ok(check(telemetry_api, query))["spent_usd"] == pytest.approx(0.6)
    SessionState.objects.filter(tenant=tenant, session_id="kept-cursor").delete()
    assert ok(check(telemetry_api, query))["spent_usd"] == 0.0
    record(tenant, session_id="kept-cursor", tokens=400_000)
    connection.close()
    body = ok(check(telemetry_api, query))
    assert body["spent_usd"] == pytest.approx(1.2)
    assert body["exceeded"] is True


class TerminateOwnBackendOnce:
    """An execute wrapper that has PostgreSQL terminate this connection's backend just before the wrapped
    statement runs: a connection lost in the middle of a request (a restart, a failover, a pooler recycling it)."""

    def __init__(self):
        self.fired = 0

    def __call__(self, execute, sql, params, many, context):
        if not self.fired:
            self.fired += 1
            terminate_backend(context["connection"])
        return execute(sql, params, many, context)


@requires_production
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/v1/budget-check?session_id=lost-1&limit_usd=0.001",
                                  "/v1/teams/budget-check?team=search"])
def test_a_connection_lost_mid_check_is_replaced_and_the_check_still_answers(tenant, admin_api, path):
    """The check only reads, so it is served again on a new connection: a 503 would be an outage to aw-sdk."""
    budget_upsert(tenant=tenant, team_name="search", monthly_budget_usd=Decimal("10"))
    record(tenant, session_id="lost-1", tokens=1000, team="search")  # $0.003
    admin_api.get(path)  # authenticated once: the key is remembered, so the check's own read comes first
    wrapper = TerminateOwnBackendOnce()
    with connection.execute_wrapper(wrapper):
        response = check(admin_api, path.partition("?")[2]) if path.startswith("/v1/budget-check") else \
            admin_api.get(path)
    assert wrapper.fired == 1
    assert response.status_code == 200, response.content
    body = response.json()
    if "exceeded" in body:
        assert (body["exceeded"], body["spent_usd"]) == (True, 0.003)
    else:
        assert (body["current_spend"], body["status"]) == (0.003, "ok")
