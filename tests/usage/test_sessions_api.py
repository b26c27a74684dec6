import datetime
import itertools
from decimal import Decimal
from urllib.parse import quote

import pytest
import time_machine
from django.utils import timezone

from tenants.services import team_get_or_create
from tests.usage.test_recording import SDK_EVENT, ingest
from usage.models import SessionState
from usage.services.recording import events_record_pending

_serial = itertools.count()


def make_session(tenant, session_id=None, *, last_seen=None, team=None, project="", spent="0.5"):
    now = timezone.now()
    last_seen = last_seen or now
    return SessionState.objects.create(
        tenant=tenant, session_id=session_id or f"s-{next(_serial)}", team=team, project=project,
        spent_usd=Decimal(spent), prompt_tokens=100, completion_tokens=10, events=2, iterations=2,
        first_seen=last_seen - datetime.timedelta(minutes=5), last_seen=last_seen,
        expires_at=last_seen + datetime.timedelta(hours=24),
    )


def test_session_detail_through_ingest_and_recording(tenant, telemetry_api, admin_api, recording):
    session_id = "ci/run-42:a.b"
    events = [
        {"model": "gpt-4o", "prompt_tokens": 1000 * i, "completion_tokens": 100, "session_id": session_id,
         "iteration_index": i, "team": "payments-eng", "project": "checkout", "event_id": f"e{i}"}
        for i in (1, 2, 3)
    ]
    events.append(dict(events[1], event_id="e2-retry"))  # a second call within iteration 2
    # The SDK asks before each call; the recorder copies the last limit seen into the session.
    assert telemetry_api.get("/v1/budget-check", {"session_id": session_id, "limit_usd": "2.5"}).status_code == 200
    assert telemetry_api.post("/v1/ingest", {"events": events}, format="json").status_code == 202
    recording()
    response = admin_api.get(f"/v1/sessions/{quote(session_id, safe='/')}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["session_id"] == session_id and body["team"] == "payments-eng" and body["project"] == "checkout"
    assert body["iterations"] == 3 and body["events"] == 4
    assert body["prompt_tokens"] == 8000 and body["completion_tokens"] == 400
    assert Decimal(str(body["spent_usd"])) == Decimal("0.0252")  # 8,400 tokens × $3 / 1M
    assert body["first_seen"] and body["last_seen"] and body["expires_at"]
    assert body["last_limit_usd"] == 2.5
    iterations = body["iteration_list"]
    assert [it["iteration_index"] for it in iterations] == [1, 2, 3]
    assert iterations[1]["events"] == 2 and iterations[1]["prompt_tokens"] == 4000
    assert Decimal(str(iterations[1]["cost_usd"])) == Decimal("0.0126")
    assert set(iterations[0]) == {"iteration_index", "events", "prompt_tokens", "completion_tokens", "cost_usd",
                                  "timestamp"}
    listed = admin_api.get("/v1/sessions").json()["results"]
    assert [s["session_id"] for s in listed] == [session_id]
    assert "iteration_list" not in listed[0]


def test_session_ids_with_slashes_and_trailing_slash(tenant, admin_api):
    for session_id in ("a/b/c", "ends/", "/starts", "x%2Fy", "run 42?x=1#frag", "ünï/cödé"):
        make_session(tenant, session_id)
        response = admin_api.get(f"/v1/sessions/{quote(session_id, safe='/')}")
        assert response.status_code == 200, session_id
        assert response.json()["session_id"] == session_id


def test_sessions_are_listed_newest_first_and_a_walk_misses_none(tenant, admin_api):
    base = timezone.now()
    for i in range(25):
        make_session(tenant, f"s{i:02d}", last_seen=base - datetime.timedelta(minutes=i // 2))
    expected = [s.session_id for s in SessionState.objects.filter(tenant=tenant).order_by("-pk")]
    seen, url = [], "/v1/sessions?limit=10"
    while url:
        body = admin_api.get(url).json()
        seen.extend(s["session_id"] for s in body["results"])
        url = body["next"]
        # Activity during the walk: the least recently active session becomes the most recent one. Paged by
        # last activity, it would move from a page not read yet to the first page, already read, and be missed.
        stalest = SessionState.objects.filter(tenant=tenant).order_by("last_seen", "id").first()
        SessionState.objects.filter(pk=stalest.pk).update(last_seen=timezone.now())
    assert sorted(seen) == sorted(expected)  # every session once, none missed
    assert seen == expected  # newest first


def test_session_filters(tenant, admin_api):
    team, _ = team_get_or_create(tenant=tenant, name="Payments-Eng")
    make_session(tenant, "a", team=team, project="checkout")
    make_session(tenant, "b", team=team, project="refunds")
    make_session(tenant, "c", project="checkout")

    def ids(**params):
        response = admin_api.get("/v1/sessions", params)
        assert response.status_code == 200
        return sorted(s["session_id"] for s in response.json()["results"])

    assert ids(team="payments-eng") == ["a", "b"]
    assert ids(project="checkout") == ["a", "c"]
    assert ids(team="payments-eng", project="checkout") == ["a"]
    assert ids(team="nobody") == []
    listed = admin_api.get("/v1/sessions", {"project": "checkout"}).json()["results"]
    assert {s["team"] for s in listed} == {"Payments-Eng", None}
    assert all(isinstance(s["spent_usd"], float) for s in listed)
    assert all(s["last_limit_usd"] is None for s in listed)


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "5000"}, {"cursor": "nope"}, {"team": "x" * 101}])
def test_bad_list_parameters_are_400(tenant, admin_api, params):
    response = admin_api.get("/v1/sessions", params)
    assert response.status_code == 400 and set(params) <= set(response.json()["error"]["fields"])


def test_a_null_character_in_the_url_is_400(tenant, admin_api):
    for response in (admin_api.get("/v1/sessions", {"project": "a\x00"}), admin_api.get("/v1/sessions/a%00b")):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_other_tenants_session_is_404_and_never_listed(tenant, other_tenant, admin_api, other_admin_api):
    make_session(other_tenant, "theirs")
    make_session(tenant, "mine")
    response = admin_api.get("/v1/sessions/theirs")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    assert [s["session_id"] for s in admin_api.get("/v1/sessions").json()["results"]] == ["mine"]
    assert other_admin_api.get("/v1/sessions/mine").status_code == 404
    assert admin_api.get("/v1/sessions/unknown").status_code == 404


def test_telemetry_key_gets_403(tenant, telemetry_api):
    make_session(tenant, "mine")
    assert telemetry_api.get("/v1/sessions").status_code == 403
    assert telemetry_api.get("/v1/sessions/mine").status_code == 403


def test_a_reused_session_id_shows_only_its_current_lifetime(tenant, admin_api):
    """An id idle for 24 hours starts again from zero: its iterations must be those its totals count, not the
    earlier run's added to them."""
    yesterday = timezone.now() - datetime.timedelta(hours=30)
    with time_machine.travel(yesterday, tick=False):
        ingest(tenant, [dict(SDK_EVENT, session_id="nightly", iteration_index=i, event_id=f"old-{i}")
                        for i in (1, 2, 3)])
        events_record_pending()
    ingest(tenant, [dict(SDK_EVENT, session_id="nightly", iteration_index=1, event_id="new-1")])
    events_record_pending()

    body = admin_api.get("/v1/sessions/nightly").json()
    assert (body["events"], body["iterations"]) == (1, 1)
    assert [(row["iteration_index"], row["events"]) for row in body["iteration_list"]] == [(1, 1)]
    assert body["iteration_list"][0]["cost_usd"] == body["spent_usd"]


def test_an_expired_session_is_summed_from_its_kept_events(tenant, admin_api):
    """Idle 24 hours, a session's state is removed but its events stay: the API shows it from them, as its page
    does, instead of a 404."""
    from usage.services.retention import session_states_expire

    two_days_ago = timezone.now() - datetime.timedelta(hours=48)
    with time_machine.travel(two_days_ago, tick=False):
        ingest(tenant, [dict(SDK_EVENT, session_id="done run", iteration_index=i, event_id=f"d-{n}")
                        for n, i in enumerate((1, 2, 2))])
        events_record_pending()
    live = admin_api.get("/v1/sessions/done%20run").json()
    assert session_states_expire() == 1

    response = admin_api.get("/v1/sessions/done%20run")
    assert response.status_code == 200
    body = response.json()
    same = ("session_id", "team", "project", "spent_usd", "events", "iterations", "prompt_tokens",
            "completion_tokens", "first_seen", "last_seen", "iteration_list")
    assert {field: body[field] for field in same} == {field: live[field] for field in same}
    assert (body["events"], body["iterations"], body["team"]) == (3, 2, "payments-eng")
    assert body["expires_at"] is None and body["last_limit_usd"] is None
    assert admin_api.get("/v1/sessions/never-seen").status_code == 404
    assert admin_api.get(f"/v1/sessions/{'x' * 201}").status_code == 404


def test_a_session_whose_first_events_are_not_recorded_yet_is_not_found_not_expired(tenant, admin_api):
    ingest(tenant, [dict(SDK_EVENT, session_id="fresh", event_id="f-1")])
    assert admin_api.get("/v1/sessions/fresh").status_code == 404
    events_record_pending()
    assert admin_api.get("/v1/sessions/fresh").json()["expires_at"] is not None
