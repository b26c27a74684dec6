"""GET /v1/anomalies (filters, paging) and POST /v1/anomalies/{id}/ack."""

import datetime

from django.utils import timezone

from tenants.services import team_get_or_create
from usage.models import Anomaly


def anomaly(tenant, kind="runaway_loop", team=None, session_id="", minutes_ago=0, **extra):
    seen = timezone.now() - datetime.timedelta(minutes=minutes_ago)
    team_row = team_get_or_create(tenant=tenant, name=team)[0] if team else None
    return Anomaly.objects.create(tenant=tenant, kind=kind, team=team_row, session_id=session_id, first_seen=seen,
                                  last_seen=seen, **extra)


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_list_shows_the_tenants_anomalies_newest_first(tenant, other_tenant, admin_api):
    loop = anomaly(tenant, session_id="run-1", team="agents", details={"ratios": [1.5, 1.5, 1.5]})
    spike = anomaly(tenant, kind="spend_spike", team="search", day=timezone.now().date())
    anomaly(other_tenant, session_id="run-1")
    body = admin_api.get("/v1/anomalies").json()
    assert [row["id"] for row in body["results"]] == [spike.pk, loop.pk] and body["next"] is None
    row = body["results"][1]
    assert row["kind"] == "runaway_loop" and row["status"] == "open" and row["team"] == "agents"
    assert row["session_id"] == "run-1" and row["details"] == {"ratios": [1.5, 1.5, 1.5]} and row["count"] == 1
    assert row["acknowledged_at"] is None and row["acknowledged_by"] is None
    assert body["results"][0]["session_id"] is None and body["results"][0]["day"] is not None


def test_filters_by_kind_team_session_and_status(tenant, admin_api):
    loop = anomaly(tenant, session_id="run-1", team="agents")
    other_loop = anomaly(tenant, session_id="run-2", team="agents", status="acknowledged")
    spike = anomaly(tenant, kind="spend_spike", team="search", day=timezone.now().date())
    assert ids(admin_api.get("/v1/anomalies?kind=spend_spike")) == [spike.pk]
    assert ids(admin_api.get("/v1/anomalies?team=AGENTS")) == [other_loop.pk, loop.pk]
    assert ids(admin_api.get("/v1/anomalies?team=nobody")) == []
    assert ids(admin_api.get("/v1/anomalies?session_id=run-1")) == [loop.pk]
    assert ids(admin_api.get("/v1/anomalies?session=run-2")) == [other_loop.pk]
    assert ids(admin_api.get("/v1/anomalies?status=open")) == [spike.pk, loop.pk]
    assert ids(admin_api.get("/v1/anomalies?status=closed")) == [other_loop.pk]
    assert ids(admin_api.get("/v1/anomalies?status=acknowledged&kind=runaway_loop")) == [other_loop.pk]


def test_bad_filters_are_400_with_field_errors(tenant, admin_api):
    for query, field in [("kind=weird", "kind"), ("status=maybe", "status"), ("limit=0", "limit"),
                         ("cursor=%%%", "cursor")]:
        response = admin_api.get(f"/v1/anomalies?{query}")
        assert response.status_code == 400, query
        assert field in response.json()["error"]["fields"]


def test_pages_follow_the_cursor(tenant, admin_api):
    made = [anomaly(tenant, session_id=f"run-{n}") for n in range(5)]
    first = admin_api.get("/v1/anomalies?limit=2").json()
    second = admin_api.get(first["next"]).json()
    third = admin_api.get(second["next"]).json()
    seen = [row["id"] for page in (first, second, third) for row in page["results"]]
    assert seen == [a.pk for a in reversed(made)] and third["next"] is None


def test_acknowledge_closes_an_anomaly_once(tenant, admin_api, admin_key):
    loop = anomaly(tenant, session_id="run-1")
    response = admin_api.post(f"/v1/anomalies/{loop.pk}/ack")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "acknowledged" and body["acknowledged_at"] is not None
    assert body["acknowledged_by"] == f"api key {admin_key[:12]}…"
    again = admin_api.post(f"/v1/anomalies/{loop.pk}/ack").json()
    assert again["acknowledged_at"] == body["acknowledged_at"]
    assert ids(admin_api.get("/v1/anomalies?status=open")) == []


def test_another_tenants_anomaly_is_not_found(tenant, other_tenant, admin_api, other_admin_api):
    loop = anomaly(tenant, session_id="run-1")
    assert other_admin_api.post(f"/v1/anomalies/{loop.pk}/ack").status_code == 404
    assert ids(other_admin_api.get("/v1/anomalies")) == []
    assert Anomaly.objects.get(pk=loop.pk).status == "open"
    assert admin_api.post("/v1/anomalies/999999/ack").status_code == 404


def test_anomalies_need_an_admin_key(tenant, telemetry_api):
    assert telemetry_api.get("/v1/anomalies").status_code == 403
    assert telemetry_api.post("/v1/anomalies/1/ack").status_code == 403
