"""Anomalies: list with figures and links, filters in the URL, acknowledge with htmx (admins only)."""

import datetime

from django.utils import timezone

from tenants.services import team_get_or_create
from usage.models import Anomaly

from .data import record, runaway_session


def _spike(tenant, team_name="search"):
    team, _ = team_get_or_create(tenant=tenant, name=team_name)
    now = timezone.now()
    return Anomaly.objects.create(
        tenant=tenant, kind=Anomaly.Kind.SPEND_SPIKE, team=team, day=now.date(), first_seen=now, last_seen=now,
        details={"spend_usd": 42.5, "baseline_mean_usd": 1.25, "threshold_usd": 10.0})


def test_anomalies_list_shows_loops_and_spikes_with_their_figures(owner_client, tenant):
    record(tenant, runaway_session(session_id="loop-1"))
    _spike(tenant)
    html = owner_client.get("/anomalies/").content.decode()
    assert 'href="/sessions/loop-1/"' in html and "×2.00" in html
    assert "$42.50 in the hour" in html and "baseline $1.25/h" in html
    assert html.count("Acknowledge</button>") == 2


def test_anomalies_filter_by_kind_and_status(owner_client, tenant, htmx):
    record(tenant, runaway_session(session_id="loop-1"))
    _spike(tenant)
    html = owner_client.get("/anomalies/?kind=spend_spike", **htmx("anomalies-page")).content.decode()
    assert "<html" not in html and "loop-1" not in html and "$42.50" in html
    # The form is swapped with the results, so it shows the URL's filters (after Back or Clear too).
    assert '<option value="spend_spike" selected>' in html
    assert "$42.50" not in owner_client.get("/anomalies/?status=acknowledged").content.decode()
    assert owner_client.get("/anomalies/?kind=bogus").status_code == 200


def test_an_unknown_team_in_the_url_is_shown_as_such_not_as_all_teams(owner_client, tenant):
    html = owner_client.get("/anomalies/?team=nobody").content.decode()
    assert '<option value="nobody" selected>nobody (no such team)</option>' in html
    assert "No anomalies match these filters." in html


def test_admin_acknowledges_an_anomaly_and_the_badge_goes_down(admin_client, tenant, htmx):
    spike = _spike(tenant)
    assert b'badge badge-red" title="Open anomalies">1<' in admin_client.get("/anomalies/").content
    response = admin_client.post(f"/anomalies/{spike.pk}/acknowledge/", **htmx(f"anomaly-{spike.pk}"))
    assert response.status_code == 200 and b"acknowledged" in response.content
    # The nav link comes along out of band, without the badge now that none is open.
    assert b'id="nav-anomalies"' in response.content and b'hx-swap-oob="true"' in response.content
    assert b"Open anomalies" not in response.content
    spike.refresh_from_db()
    assert spike.status == "acknowledged" and spike.acknowledged_by == "user adam"
    assert b'title="Open anomalies"' not in admin_client.get("/anomalies/").content


def test_viewer_sees_no_acknowledge_button(viewer_client, tenant):
    _spike(tenant)
    assert b"Acknowledge</button>" not in viewer_client.get("/anomalies/").content


def test_anomalies_page_with_many_rows_has_flat_query_count(owner_client, tenant, django_assert_max_num_queries):
    now = timezone.now()
    for n in range(30):
        team, _ = team_get_or_create(tenant=tenant, name=f"t{n}")
        Anomaly.objects.create(tenant=tenant, kind=Anomaly.Kind.SPEND_SPIKE, team=team,
                               day=(now - datetime.timedelta(days=n)).date(), first_seen=now, last_seen=now,
                               details={"spend_usd": 1})
    with django_assert_max_num_queries(8):
        assert owner_client.get("/anomalies/").status_code == 200
