import base64
import datetime
import itertools
import json
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from tests.conftest import api_client_for, make_key
from usage.models import UsageEvent

BASE = datetime.datetime(2026, 10, 10, 12, 0, tzinfo=datetime.UTC)
_serial = itertools.count()


def make_events(tenant, count, *, start=BASE, step=datetime.timedelta(seconds=1), tie_every=1, **fields):
    """Insert `count` recorded events fast; every `tie_every` consecutive events share one timestamp."""
    rows = []
    for i in range(count):
        values = {
            "model": "gpt-4o", "prompt_tokens": 100 + i, "completion_tokens": 10, "latency_ms": 5,
            "timestamp": start + step * (i // tie_every), "received_at": start, "recorded_at": start,
            "cost_usd": Decimal("0.00033"),
        }
        values.update(fields)
        rows.append(UsageEvent(tenant=tenant, event_id=f"{tenant.slug}-{next(_serial)}",
                               **values))
    return UsageEvent.objects.bulk_create(rows, batch_size=1000)


def get(api, params=None, path="/v1/usage/events"):
    return api.get(path, params or {})


def event_ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [event["event_id"] for event in response.json()["results"]]


def fields_of(response) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "validation_error"
    return error["fields"]


def test_event_carries_the_ingested_fields_under_the_same_names(tenant, admin_api, telemetry_api, recording):
    sent = {
        "model": "gpt-4o", "latency_ms": 812, "prompt_tokens": 1200, "completion_tokens": 300,
        "identified_risks": ["PII_EMAIL"], "project": "checkout-service", "team": "payments-eng",
        "session_id": "ci-run-123", "iteration_index": 4, "event_id": "evt-1", "provider": "openai",
        "customer_id": "cus_1", "user_id": "u_1", "feature_id": "search", "status": "error",
        "metadata": {"trace": "abc"}, "timestamp": "2026-11-01T10:00:00Z",
    }
    assert telemetry_api.post("/v1/ingest", sent, format="json").status_code == 202
    recording()
    response = get(admin_api)
    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None
    [event] = body["results"]
    for name, value in sent.items():
        if name != "timestamp":
            assert event[name] == value, name
    assert event["timestamp"] == "2026-11-01T10:00:00Z"
    assert event["cost_usd"] == 0.0045 and isinstance(event["cost_usd"], float)
    assert event["received_at"] and event["recorded_at"]


def test_unrecorded_event_has_null_cost_and_absent_fields_are_null(tenant, admin_api):
    make_events(tenant, 1, cost_usd=None, recorded_at=None)
    [event] = get(admin_api).json()["results"]
    assert event["cost_usd"] is None and event["recorded_at"] is None
    assert event["team"] is None and event["project"] is None and event["session_id"] is None
    assert event["iteration_index"] is None and event["identified_risks"] == []


def test_events_are_newest_first_with_ties_broken_by_id(tenant, admin_api):
    rows = make_events(tenant, 6, tie_every=3)
    ids = event_ids(get(admin_api))
    expected = [r.event_id for r in sorted(rows, key=lambda r: (r.timestamp, r.pk), reverse=True)]
    assert ids == expected


def test_walking_every_page_of_2500_events_returns_each_once(tenant, admin_api):
    rows = make_events(tenant, 2500, tie_every=7)
    seen = []
    url, pages = "/v1/usage/events", 0
    while url:
        response = admin_api.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert len(body["results"]) <= 100
        seen.extend(event["event_id"] for event in body["results"])
        url = body["next"]
        pages += 1
        if url:
            assert url.startswith("http://testserver/v1/usage/events?")
    assert pages == 25
    assert len(seen) == len(set(seen)) == 2500
    assert set(seen) == {r.event_id for r in rows}
    assert seen == [r.event_id for r in sorted(rows, key=lambda r: (r.timestamp, r.pk), reverse=True)]


def test_pages_keep_filters_and_limit_and_new_events_do_not_shift_them(tenant, admin_api):
    make_events(tenant, 30, project="alpha")
    make_events(tenant, 30, project="beta")
    first = get(admin_api, {"project": "alpha", "limit": 20})
    next_url = first.json()["next"]
    query = parse_qs(urlsplit(next_url).query)
    assert query["project"] == ["alpha"] and query["limit"] == ["20"] and query["cursor"]
    # Newer events arriving between two requests must neither repeat nor hide a row of the walk.
    make_events(tenant, 5, project="alpha", start=BASE + datetime.timedelta(days=1))
    second = admin_api.get(next_url)
    ids = event_ids(first) + event_ids(second)
    assert len(ids) == len(set(ids)) == 30
    assert second.json()["next"] is None


def test_limit_bounds(tenant, admin_api):
    make_events(tenant, 3)
    assert len(event_ids(get(admin_api, {"limit": 1}))) == 1
    assert len(event_ids(get(admin_api, {"limit": 1000}))) == 3
    for bad in ("0", "1001", "-1", "abc", "1.5", "٣"):
        assert "limit" in fields_of(get(admin_api, {"limit": bad})), bad


@pytest.mark.parametrize("cursor", ["garbage!", "WyJ4Il0", "eyJhIjogMX0", "WyIyMDI2LTEwLTEwIiwgMV0",
                                    "WyIyMDI2LTEwLTEwVDEyOjAwOjAwKzAwOjAwIiwgMTAwMDAwMDAwMDAwMDAwMDAwMDAwMF0"])
def test_malformed_cursor_is_a_400(tenant, admin_api, cursor):
    assert "cursor" in fields_of(get(admin_api, {"cursor": cursor}))


def test_cursor_offsets_python_takes_but_postgresql_does_not(tenant, admin_api):
    make_events(tenant, 3)
    # +23:59 is a valid offset for Python, not for PostgreSQL: the cursor is read in UTC, as any other.
    cursor = base64.urlsafe_b64encode(json.dumps(["2999-01-01T10:00:00+23:59", 2**62]).encode()).decode()
    response = get(admin_api, {"cursor": cursor})
    assert response.status_code == 200 and len(event_ids(response)) == 3
    # Year 1 one hour east of UTC is in year 0 in UTC: no such date, so an invalid cursor.
    cursor = base64.urlsafe_b64encode(json.dumps(["0001-01-01T00:00:00+01:00", 1]).encode()).decode()
    assert "cursor" in fields_of(get(admin_api, {"cursor": cursor}))


def test_filters_by_attribution_fields(tenant, admin_api):
    make_events(tenant, 2, project="alpha", team_name="Payments-Eng", session_id="s/1", customer_id="c1",
                feature_id="f1", model="gpt-4o-mini")
    make_events(tenant, 3, project="beta", team_name="search", session_id="s2", customer_id="c2", feature_id="f2")
    assert len(event_ids(get(admin_api, {"team": "payments-eng"}))) == 2
    assert len(event_ids(get(admin_api, {"team": "SEARCH"}))) == 3
    assert len(event_ids(get(admin_api, {"project": "beta"}))) == 3
    assert len(event_ids(get(admin_api, {"session_id": "s/1"}))) == 2
    assert len(event_ids(get(admin_api, {"model": "gpt-4o-mini"}))) == 2
    assert len(event_ids(get(admin_api, {"customer_id": "c2"}))) == 3
    assert len(event_ids(get(admin_api, {"feature_id": "f1"}))) == 2
    assert len(event_ids(get(admin_api, {"project": "beta", "team": "payments-eng"}))) == 0
    assert event_ids(get(admin_api, {"project": "nope"})) == []


def test_risk_filter_matches_whole_tags_only(tenant, admin_api):
    UsageEvent.objects.bulk_create([
        UsageEvent(tenant=tenant, event_id=eid, model="m", identified_risks=risks, timestamp=BASE, received_at=BASE)
        for eid, risks in [("a", ["PII_EMAIL"]), ("b", ["PII_EMAIL_HASH", "SECRET"]), ("c", []),
                           ("d", ["SECRET", "PII_EMAIL"])]
    ])
    assert sorted(event_ids(get(admin_api, {"risk": "PII_EMAIL"}))) == ["a", "d"]
    assert sorted(event_ids(get(admin_api, {"risk": "pii_email"}))) == ["a", "d"]
    assert sorted(event_ids(get(admin_api, {"risk": "SECRET"}))) == ["b", "d"]
    assert event_ids(get(admin_api, {"risk": "PII"})) == []
    assert "risk" in fields_of(get(admin_api, {"risk": 'PII"]'}))


def test_time_range_filter_is_from_inclusive_to_exclusive(tenant, admin_api):
    make_events(tenant, 10, step=datetime.timedelta(hours=1))  # 12:00 … 21:00 UTC
    ids = event_ids(get(admin_api, {"from": "2026-10-10T14:00:00Z", "to": "2026-10-10T17:00:00Z"}))
    assert len(ids) == 3
    # An offset typed unencoded ("+" decoded as a space) still parses; a date means midnight UTC.
    assert len(event_ids(get(admin_api, {"from": "2026-10-10T16:00:00 02:00"}))) == 8
    assert len(event_ids(get(admin_api, {"from": "2026-10-10T16:00:00+02:00"}))) == 8
    assert len(event_ids(get(admin_api, {"to": "2026-10-11"}))) == 10
    assert len(event_ids(get(admin_api, {"from": "2026-10-11"}))) == 0


@pytest.mark.parametrize("params", [
    {"from": "yesterday"}, {"to": "2026-13-01"}, {"from": "2026-10-10T25:00:00Z"}, {"to": "1" * 100},
    {"project": "x" * 201}, {"risk": "not a tag"},
])
def test_bad_filter_values_are_400_naming_the_parameter(tenant, admin_api, params):
    assert set(params) <= set(fields_of(get(admin_api, params)))


def test_a_null_character_in_a_filter_is_400(tenant, admin_api):
    response = admin_api.get("/v1/usage/events", {"team": "a\x00b"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_other_tenants_events_are_never_listed(tenant, other_tenant, admin_api, other_admin_api):
    make_events(tenant, 3, project="mine")
    make_events(other_tenant, 4, project="theirs")
    assert len(event_ids(get(admin_api))) == 3
    assert len(event_ids(get(other_admin_api))) == 4
    assert event_ids(get(admin_api, {"project": "theirs"})) == []


def test_cursor_from_another_tenant_reveals_nothing(tenant, other_tenant, admin_api, other_admin_api):
    make_events(other_tenant, 5)
    make_events(tenant, 2, start=BASE - datetime.timedelta(days=1))
    next_url = get(other_admin_api, {"limit": 2}).json()["next"]
    ids = event_ids(admin_api.get(next_url))
    assert all(i.startswith("alice-") for i in ids)


def test_telemetry_key_is_refused_with_403(tenant, telemetry_api):
    response = get(telemetry_api)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_no_key_or_revoked_key_is_401(tenant, client):
    assert client.get("/v1/usage/events").status_code == 401
    from tenants.models import ApiKey

    raw = make_key(tenant)
    ApiKey.objects.filter(tenant=tenant).update(revoked_at=timezone.now())
    response = api_client_for(raw).get("/v1/usage/events")
    assert response.status_code == 401 and response.json()["error"]["code"] == "revoked_api_key"


def test_events_say_how_they_were_priced_so_fallback_prices_can_be_found(tenant, telemetry_api, admin_api,
                                                                         recording):
    """PRODUCT.md §5: in catalog mode an unknown model falls back to the blended rate and is flagged."""
    tenant.cost_mode = "catalog"
    tenant.save(update_fields=["cost_mode"])
    for event_id, model in (("known", "gpt-4o"), ("typo", "GPT-4o-mini-typo")):
        response = telemetry_api.post("/v1/ingest", {"event_id": event_id, "model": model, "prompt_tokens": 1000,
                                                     "completion_tokens": 100}, format="json")
        assert response.status_code == 202
    recording()
    priced = {event["event_id"]: event["priced_by"] for event in get(admin_api).json()["results"]}
    assert priced == {"known": "catalog", "typo": "fallback"}


@pytest.mark.parametrize("url", [
    "/v1/usage/events?session_id=a%2Bb&session_id=run-1",
    "/v1/usage/events?limit=2000&limit=5",
    "/v1/usage/summary?from=2026-11-01&from=2026-11-02",
    "/v1/usage/export.csv?month=2026-10&month=2026-11",
    "/v1/sessions?team=a&team=b",
    "/v1/alerts?cursor=x&cursor=y",
])
def test_a_parameter_given_twice_is_a_400_naming_it(tenant, admin_api, url):
    """Each parameter takes one value: the last of two was read silently (two session ids meant as OR answered for
    one; `limit=2000&limit=5` passed where `limit=5&limit=2000` was refused)."""
    name = url.split("?")[1].split("=")[0]
    response = admin_api.get(url)
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {name: ["Given more than once: send it once."]}
