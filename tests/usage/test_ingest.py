import datetime
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from tenants.models import RejectedTelemetry, Team
from tests.conftest import requires_production
from usage.models import DailySpend, SessionState, UsageEvent

SDK_EVENT = {
    "model": "gpt-4o", "latency_ms": 812, "prompt_tokens": 1200, "completion_tokens": 300,
    "identified_risks": ["PII_EMAIL"], "project": "checkout-service", "team": "payments-eng",
    "session_id": "ci-run-123", "iteration_index": 4,
}


def post(api, body, **kwargs):
    return api.post("/v1/ingest", body, format="json", **kwargs)


def errors(response) -> dict:
    assert response.status_code == 400, response.content
    body = response.json()["error"]
    assert body["type"] == "invalid_request_error"
    return body.get("fields", {})


def test_sdk_event_is_accepted_and_recorded_with_blended_cost(tenant, telemetry_api, recording):
    response = post(telemetry_api, SDK_EVENT)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1 and len(body["event_ids"]) == 1
    recording()
    event = UsageEvent.objects.get(tenant=tenant)
    assert event.recorded_at is not None
    assert event.cost_usd == Decimal("0.0045")  # 1,500 tokens × $3 / 1M
    assert event.team.name == "payments-eng" and event.identified_risks == ["PII_EMAIL"]
    state = SessionState.objects.get(tenant=tenant, session_id="ci-run-123")
    assert state.spent_usd == Decimal("0.0045") and state.iterations == 1
    day = DailySpend.objects.get(tenant=tenant)
    assert (day.team_name, day.project, day.model, day.events, day.cost_usd) == (
        "payments-eng", "checkout-service", "gpt-4o", 1, Decimal("0.0045"))


def test_batch_is_accepted_whole(tenant, telemetry_api, recording):
    events = [dict(SDK_EVENT, iteration_index=i, event_id=f"e{i}") for i in range(1, 11)]
    response = post(telemetry_api, {"events": events})
    assert response.status_code == 202
    assert response.json() == {"accepted": 10, "event_ids": [f"e{i}" for i in range(1, 11)]}
    recording()
    assert SessionState.objects.get(tenant=tenant).iterations == 10
    assert DailySpend.objects.get(tenant=tenant).cost_usd == Decimal("0.045")


def test_same_event_id_twice_is_one_event(tenant, telemetry_api, recording):
    for _ in range(2):
        assert post(telemetry_api, dict(SDK_EVENT, event_id="once")).status_code == 202
    recording()
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1
    assert DailySpend.objects.get(tenant=tenant).events == 1


def test_same_event_id_in_two_tenants_is_two_events(tenant, other_tenant, telemetry_api, other_admin_api, recording):
    assert post(telemetry_api, dict(SDK_EVENT, event_id="shared")).status_code == 202
    assert post(other_admin_api, dict(SDK_EVENT, event_id="shared")).status_code == 202
    recording()
    assert UsageEvent.objects.filter(event_id="shared").count() == 2


@pytest.fixture
def catalog_mode(tenant):
    tenant.cost_mode = "catalog"
    tenant.save()


def test_catalog_mode_prices_by_model_and_flags_unknown_models(tenant, catalog_mode, telemetry_api, recording):
    post(telemetry_api, {"events": [
        {"model": "gpt-4o", "prompt_tokens": 1_000_000, "completion_tokens": 1_000_000, "event_id": "known"},
        {"model": "mystery-model", "prompt_tokens": 1000, "completion_tokens": 0, "event_id": "unknown"},
    ]})
    recording()
    known = UsageEvent.objects.get(event_id="known")
    assert known.cost_usd == Decimal("12.5") and known.priced_by == "catalog"
    unknown = UsageEvent.objects.get(event_id="unknown")
    assert unknown.cost_usd == Decimal("0.003") and unknown.priced_by == "fallback"


def test_team_names_are_case_insensitive_and_created_on_first_sight(tenant, telemetry_api, recording):
    post(telemetry_api, {"events": [dict(SDK_EVENT, team="Payments-Eng"), dict(SDK_EVENT, team="payments-eng")]})
    recording()
    assert list(Team.objects.filter(tenant=tenant).values_list("name", flat=True)) == ["Payments-Eng"]
    assert DailySpend.objects.get(tenant=tenant).events == 2


@pytest.mark.parametrize(("event", "path", "words"), [
    ({}, "model", "required"),
    ({"model": ""}, "model", "required"),
    ({"model": "x" * 201}, "model", "at most 200"),
    ({"model": 5}, "model", "string"),
    ({"model": "m", "prompt_tokens": -1}, "prompt_tokens", "between 0"),
    ({"model": "m", "prompt_tokens": 1.5}, "prompt_tokens", "integer"),
    ({"model": "m", "prompt_tokens": "12"}, "prompt_tokens", "integer"),
    ({"model": "m", "completion_tokens": 10**10}, "completion_tokens", "between 0"),
    ({"model": "m", "latency_ms": True}, "latency_ms", "integer"),
    ({"model": "m", "iteration_index": -3}, "iteration_index", "between 0"),
    ({"model": "m", "identified_risks": ["pii_email"]}, "identified_risks", "must match"),
    ({"model": "m", "identified_risks": "PII_EMAIL"}, "identified_risks", "list"),
    ({"model": "m", "session_id": "a\nb"}, "session_id", "printable"),
    ({"model": "m", "session_id": "s" * 201}, "session_id", "at most 200"),
    ({"model": "m", "event_id": "e" * 101}, "event_id", "at most 100"),
    ({"model": "m", "team": "a\x00b"}, "team", "control"),
    ({"model": "m", "team": "   "}, "team", "blank"),
    ({"model": "m", "team": "\u200b"}, "team", "invisible"),
    ({"model": "m", "status": "maybe"}, "status", "'ok' or 'error'"),
    ({"model": "m", "metadata": [1]}, "metadata", "object"),
    ({"model": "m", "metadata": {"x": "y" * 5000}}, "metadata", "4096"),
    ({"model": "m", "timestamp": "yesterday"}, "timestamp", "ISO 8601"),
])
def test_invalid_event_gets_a_clear_field_error(tenant, telemetry_api, event, path, words):
    fields = errors(post(telemetry_api, event))
    assert path in fields, fields
    assert words.lower() in " ".join(fields[path]).lower()
    assert UsageEvent.objects.count() == 0


def test_a_negative_latency_from_a_clock_step_keeps_the_calls_spend(tenant, telemetry_api, recording):
    # aw-sdk measures latency with time.time(): a clock stepped back mid-call gives e.g. -985 ms.
    assert post(telemetry_api, dict(SDK_EVENT, latency_ms=-985, session_id="clock")).status_code == 202
    recording()
    event = UsageEvent.objects.get(tenant=tenant)
    assert event.latency_ms == 0 and event.prompt_tokens == SDK_EVENT["prompt_tokens"]
    assert event.cost_usd == Decimal("0.0045")  # (1,200 + 300) tokens × $3 / 1M
    assert "latency_ms" in errors(post(telemetry_api, dict(SDK_EVENT, latency_ms=-(10**10))))


def test_timestamp_more_than_5_minutes_ahead_is_refused_but_4_minutes_is_fine(tenant, telemetry_api):
    ahead = (timezone.now() + timezone.timedelta(minutes=6)).isoformat()
    assert "timestamp" in errors(post(telemetry_api, dict(SDK_EVENT, timestamp=ahead)))
    soon = (timezone.now() + timezone.timedelta(minutes=4)).isoformat()
    assert post(telemetry_api, dict(SDK_EVENT, timestamp=soon)).status_code == 202


@pytest.mark.parametrize("spelling", ["2026-11-20T10:00:00Z", "2026-11-20T10:00:00z", "2026-11-20t10:00:00Z",
                                      "2026-11-20T11:00:00+01:00", "2026-11-20T10:00:00"])
def test_rfc_3339_timestamps_in_either_case_and_no_offset_as_utc(tenant, telemetry_api, spelling):
    with time_machine.travel(datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)):
        assert post(telemetry_api, dict(SDK_EVENT, timestamp=spelling)).status_code == 202
    assert UsageEvent.objects.get().timestamp == datetime.datetime(2026, 11, 20, 10, tzinfo=datetime.UTC)


def test_a_model_name_is_trimmed_so_it_is_priced_and_counted_as_that_model(tenant, catalog_mode, telemetry_api,
                                                                            recording):
    """"gpt-4o " was stored as sent: priced at the fallback rate, listed as a second gpt-4o, and impossible to price
    (the Pricing page trims the name it is given)."""
    post(telemetry_api, {"events": [
        {"model": " gpt-4o ", "prompt_tokens": 1_000_000, "completion_tokens": 1_000_000, "event_id": "spaced"},
        {"model": "gpt-4o", "prompt_tokens": 1_000_000, "completion_tokens": 1_000_000, "event_id": "plain"},
    ]})
    recording()
    assert {(e.model, e.cost_usd, e.priced_by) for e in UsageEvent.objects.all()} == {
        ("gpt-4o", Decimal("12.5"), "catalog")}
    assert list(DailySpend.objects.values_list("model", "events")) == [("gpt-4o", 2)]
    assert "model" in errors(post(telemetry_api, {"model": "   "}))


def test_null_optional_fields_mean_absent_and_unknown_fields_are_ignored(tenant, telemetry_api):
    body = {"model": "gpt-4o", "team": None, "session_id": None, "iteration_index": None, "metadata": None,
            "surprise": {"nested": True}}
    assert post(telemetry_api, body).status_code == 202
    event = UsageEvent.objects.get(tenant=tenant)
    assert event.team_name == "" and event.session_id == "" and event.iteration_index is None


def test_one_bad_event_rejects_the_whole_batch_with_errors_by_index(tenant, telemetry_api):
    events = [dict(SDK_EVENT, event_id="a"), dict(SDK_EVENT, prompt_tokens=-5), dict(SDK_EVENT, model=None)]
    fields = errors(post(telemetry_api, {"events": events}))
    assert set(fields) == {"events[1].prompt_tokens", "events[2].model"}
    assert UsageEvent.objects.count() == 0
    assert RejectedTelemetry.objects.get(tenant=tenant, reason="invalid").count == 1


@pytest.mark.parametrize("body", [{"events": []}, {"events": "nope"}, {"events": [SDK_EVENT] * 1001}])
def test_empty_wrong_or_oversized_batches_are_refused(tenant, telemetry_api, body):
    assert "events" in errors(post(telemetry_api, body))


@pytest.mark.parametrize("raw", [
    b"not json", b"[1, 2]", b'{"model": NaN}', b'{"model": "m", "prompt_tokens": Infinity}', b"\xff\xfe",
    b"[" * 100_000, b"",
])
def test_malformed_bodies_get_400_json(tenant, telemetry_key, raw):
    from django.test import Client

    response = Client().post("/v1/ingest", raw, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_body_over_1_mib_gets_413(tenant, telemetry_key):
    from django.test import Client

    big = b'{"model": "m", "metadata": {"x": "' + b"y" * (1024 * 1024) + b'"}}'
    response = Client().post("/v1/ingest", big, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip"])
def test_a_compressed_body_gets_415_naming_the_content_encoding(tenant, telemetry_key, encoding):
    import gzip

    from django.test import Client

    response = Client().post("/v1/ingest", gzip.compress(b'{"model": "gpt-4o", "prompt_tokens": 1}'),
                             content_type="application/json", HTTP_CONTENT_ENCODING=encoding,
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_content_encoding"
    assert encoding in error["message"] and "uncompressed" in error["message"]
    assert not UsageEvent.objects.exists()


def test_an_identity_content_encoding_is_read_as_usual(tenant, telemetry_api):
    assert post(telemetry_api, SDK_EVENT, HTTP_CONTENT_ENCODING="identity").status_code == 202


def test_admin_key_can_ingest_too(tenant, admin_api):
    assert post(admin_api, SDK_EVENT).status_code == 202


@pytest.mark.parametrize(("body", "field"), [
    (b'{"model": "m", "metadata": {"a": "\\u0000"}}', "metadata"),
    (b'{"model": "m", "metadata": {"x": 1e999}}', "metadata"),
    (b'{"model": "\\ud800"}', "model"),
    (b'{"model": "m", "team": "a\\udfffb"}', "team"),
    (b'{"model": "m", "metadata": {"k": "\\ud800"}}', "metadata"),
])
def test_null_characters_infinities_and_lone_surrogates_get_field_errors(tenant, telemetry_key, body, field):
    from django.test import Client

    response = Client().post("/v1/ingest", body, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert UsageEvent.objects.count() == 0


def test_a_repeated_event_id_within_one_batch_is_accepted_once(tenant, telemetry_api):
    response = post(telemetry_api, {"events": [dict(SDK_EVENT, event_id="a"), dict(SDK_EVENT, event_id="a"),
                                               dict(SDK_EVENT, event_id="b")]})
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "event_ids": ["a", "b"]}
    assert UsageEvent.objects.filter(tenant=tenant).count() == 2


def test_a_no_limit_value_on_budget_check_does_not_stop_recording(tenant, telemetry_api, recording):
    check = telemetry_api.get("/v1/budget-check?session_id=big&limit_usd=1e12")
    assert check.status_code == 200 and check.json()["exceeded"] is False
    assert post(telemetry_api, dict(SDK_EVENT, session_id="big")).status_code == 202
    assert post(telemetry_api, dict(SDK_EVENT, session_id="other", event_id="o1")).status_code == 202
    recording()
    assert SessionState.objects.get(tenant=tenant, session_id="big").events == 1
    assert SessionState.objects.get(tenant=tenant, session_id="other").events == 1


# --- A connection lost under the INSERT ---------------------------------------------------------------------

class LoseConnectionOnce:
    """An execute wrapper that ends this connection's server process once, on the first INSERT into the events
    table: `before` the statement runs (it never reaches the database), or `after` it committed, while the answer
    is on its way back (a restart or failover between the commit and the reply)."""

    def __init__(self, when: str):
        self.when, self.fired, self.committed = when, 0, None

    def __call__(self, execute, sql, params, many, context):
        if self.fired or not sql.lstrip().upper().startswith("INSERT INTO") or UsageEvent._meta.db_table not in sql:
            return execute(sql, params, many, context)
        self.fired += 1
        from tests.conftest import terminate_backend

        db = context["connection"]
        if self.when == "before":
            terminate_backend(db)
            return execute(sql, params, many, context)
        result = execute(sql, params, many, context)
        self.committed = _rows_seen_from_another_connection()
        terminate_backend(db)
        with db.wrap_database_errors:
            db.connection.execute("SELECT 1")  # the client learns of it here: the connection is now closed
        return result


def _rows_seen_from_another_connection() -> int:
    import psycopg

    from tests.conftest import psycopg_params

    with psycopg.connect(**psycopg_params(), autocommit=True) as other:
        return other.execute(f"SELECT count(*) FROM {UsageEvent._meta.db_table}").fetchone()[0]  # noqa: S608


@requires_production
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("count", [1, 1500])  # one statement; two in a transaction (CHUNK_ROWS is 1,000)
def test_a_connection_lost_under_the_insert_stores_every_event_exactly_once_and_answers_202(
        tenant, telemetry_api, settings, when, count):
    """aw-sdk sends each event once and does not retry: a 503 would lose it. The same rows and ids go in again on
    a new connection; rows a commit already stored are skipped as repeats."""
    from django.db import connection

    settings.INGEST_MAX_BATCH = 1500
    telemetry_api.get("/v1/budget-check?session_id=warm&limit_usd=1")  # the key is known: the INSERT comes first
    body = {"events": [{**SDK_EVENT, "iteration_index": i} for i in range(count)]} if count > 1 else SDK_EVENT
    wrapper = LoseConnectionOnce(when)
    with connection.execute_wrapper(wrapper):
        response = post(telemetry_api, body)
    assert wrapper.fired == 1
    if when == "after":
        # One statement commits on its own: the retry meets its rows. A batch's transaction was not committed.
        assert wrapper.committed == (1 if count == 1 else 0)
    assert response.status_code == 202, response.content
    ids = response.json()["event_ids"]
    assert response.json()["accepted"] == count and len(set(ids)) == count
    stored = sorted(UsageEvent.objects.filter(tenant=tenant).values_list("event_id", flat=True))
    assert stored == sorted(ids)


@requires_production
@pytest.mark.django_db(transaction=True)
def test_a_statement_error_is_not_taken_for_a_lost_connection(tenant, telemetry_api):
    """Only a connection that ended is replaced: an INSERT the database refuses on an open connection (here a
    statement timeout) is not run a second time."""
    from django.db import OperationalError, connection

    attempts = []

    def refuse_inserts(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("INSERT INTO") and UsageEvent._meta.db_table in sql:
            attempts.append(sql)
            raise OperationalError("canceling statement due to statement timeout")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse_inserts):
        response = post(telemetry_api, SDK_EVENT)
    assert response.status_code == 503, response.content
    assert len(attempts) == 1
    assert not UsageEvent.objects.filter(tenant=tenant).exists()


@requires_production
@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_is_connected_to_once_not_twice(tenant, telemetry_api, monkeypatch):
    """A kept connection found dead at the start of the request is replaced before the INSERT; when that connect
    fails (the database is down), the answer is a 503 at once, not after a second connect that waits as long."""
    from django.db import close_old_connections, connection

    from tests.conftest import terminate_backend

    telemetry_api.get("/v1/budget-check?session_id=warm&limit_usd=1")  # a kept connection, and the key known
    terminate_backend(connection)  # the server restarts: the kept connection is dead
    close_old_connections()  # what a new request does first under gunicorn (the test client leaves it out)
    attempts = []
    real_connect = connection.get_new_connection

    def refused(conn_params):
        attempts.append(conn_params)
        return real_connect({**conn_params, "port": 1})  # nothing listens there: the database is down

    monkeypatch.setattr(connection, "get_new_connection", refused)
    response = post(telemetry_api, SDK_EVENT)
    assert response.status_code == 503, response.content
    assert len(attempts) == 1
    monkeypatch.undo()
    connection.close()
    assert not UsageEvent.objects.exists()
