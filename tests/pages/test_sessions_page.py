"""Sessions list (filters, keyset pages, flags) and the session page (token chart with the loop marked)."""

import html
import re
from decimal import Decimal
from urllib.parse import urljoin

import pytest
from django.core.cache import cache

from usage.models import SessionState

from .data import event, record, runaway_session


def test_sessions_list_shows_spend_iterations_team_and_flag(owner_client, tenant):
    record(tenant, runaway_session(session_id="loop-1") + [event(session_id="calm-1", iteration_index=1)])
    html = owner_client.get("/sessions/").content.decode()
    assert 'href="/sessions/loop-1/"' in html and 'href="/sessions/calm-1/"' in html
    assert html.count("flagged</span>") == 1
    assert "payments-eng" in html


def test_only_flagged_filter_keeps_the_loop_session(owner_client, tenant, htmx):
    record(tenant, runaway_session(session_id="loop-1") + [event(session_id="calm-1", iteration_index=1)])
    response = owner_client.get("/sessions/?flagged=1", **htmx("sessions-results"))
    html = response.content.decode()
    assert "<html" not in html and "loop-1" in html and "calm-1" not in html


def test_only_over_limit_filter_uses_the_last_limit_seen(owner_client, tenant, telemetry_api):
    record(tenant, [event(session_id="big", iteration_index=1, prompt_tokens=1_000_000, completion_tokens=0),
                    event(session_id="small", iteration_index=1, prompt_tokens=10, completion_tokens=0)])
    SessionState.objects.filter(session_id="big").update(last_limit_usd=Decimal("1"))
    SessionState.objects.filter(session_id="small").update(last_limit_usd=Decimal("1"))
    html = owner_client.get("/sessions/?over_limit=1").content.decode()
    assert "/sessions/big/" in html and "/sessions/small/" not in html
    cache.clear()


def test_tiny_spend_and_limits_are_shown_with_their_digits_not_as_zero(owner_client, tenant):
    """A $0.00001 session budget (aw-sdk sends what it is given) and 6 tokens of gpt-4o-mini-like spend read as
    $0.0000 each before: the page must show the figures it compares."""
    record(tenant, [event(session_id="tiny", iteration_index=1, prompt_tokens=6, completion_tokens=0)])  # $0.000018
    SessionState.objects.filter(session_id="tiny").update(last_limit_usd=Decimal("0.00001"))
    html = owner_client.get("/sessions/tiny/").content.decode()
    assert "$0.000018" in html and "limit $0.00001" in html
    assert "$0.0000<" not in html and "$0.0000 " not in html


def test_sessions_filter_by_team_and_page_with_a_cursor(owner_client, tenant, htmx):
    record(tenant, [event(session_id=f"s-{n:02d}", iteration_index=1, team="search") for n in range(55)]
           + [event(session_id="elsewhere", team="support")])
    first = owner_client.get("/sessions/?team=search").content.decode()
    assert "elsewhere" not in first and first.count('href="/sessions/s-') == 50
    next_url = re.search(r'hx-get="(/sessions/\?[^"]*cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
    more = owner_client.get(next_url, **htmx("sessions-more")).content.decode()
    assert more.count('href="/sessions/s-') == 5 and 'hx-swap-oob="beforeend:#session-rows"' in more


def test_session_page_marks_the_runaway_loop_on_the_token_chart(owner_client, tenant):
    record(tenant, runaway_session(session_id="loop-1", iterations=8))
    html = owner_client.get("/sessions/loop-1/").content.decode()
    assert '<svg class="chart"' in html
    assert html.count('class="loop-zone"') == 4
    assert "runaway loop" in html and "Runaway loop (open)" in html
    assert "growth ×2.00" in html
    assert "Iteration 8: 32,000 prompt + 150 completion tokens" in html


def test_session_ids_with_slashes_and_spaces_are_escaped_and_found(owner_client, tenant):
    session_id = "ci/run 42?x=<b>"
    record(tenant, [event(session_id=session_id, iteration_index=1)])
    listing = owner_client.get("/sessions/").content.decode()
    assert 'href="/sessions/ci%2Frun%2042%3Fx%3D%3Cb%3E/"' in listing
    page = owner_client.get("/sessions/ci%2Frun%2042%3Fx%3D%3Cb%3E/")
    assert page.status_code == 200
    assert "ci/run 42?x=&lt;b&gt;" in page.content.decode()


@pytest.mark.parametrize("session_id", [".", "..", "a/../b", "run/./3", "../etc", "q?id=1#x", "50%", "naïve run"])
def test_every_session_link_leads_to_its_own_page_as_a_browser_follows_it(owner_client, tenant, session_id):
    """A browser removes "." and ".." path segments before it asks (RFC 3986; urljoin does the same), so the
    link must not contain any: the page found is the session's own."""
    record(tenant, [event(session_id=session_id, iteration_index=1)])
    listing = owner_client.get("/sessions/").content.decode()
    [href] = re.findall(r'<a class="mono truncate" href="([^"]+)"', listing)
    page = owner_client.get(urljoin("http://testserver/sessions/", html.unescape(href)))
    assert page.status_code == 200, href
    assert f'<h1 class="mono">{html.escape(session_id)}</h1>' in page.content.decode()


def test_unknown_session_is_404(owner_client, tenant):
    assert owner_client.get("/sessions/nope/").status_code == 404


@pytest.mark.parametrize("path", ["/sessions/" + "x" * 201 + "/", "/session/?id=" + "x" * 201])
def test_a_session_id_no_session_can_have_is_a_404_page(owner_client, tenant, path):
    """Over 200 characters: ingest never stores such an id, so there is nothing to show."""
    response = owner_client.get(path)
    assert response.status_code == 404
    assert "text/html" in response["Content-Type"]


def test_session_page_with_500_iterations_has_flat_query_count(owner_client, tenant,
                                                              django_assert_max_num_queries):
    record(tenant, [event(session_id="long", iteration_index=i, prompt_tokens=1000 + i) for i in range(1, 501)])
    with django_assert_max_num_queries(10):
        response = owner_client.get("/sessions/long/")
    assert response.status_code == 200
    assert response.content.decode().count('class="seg prompt"') == 500


def test_sessions_list_query_count_is_flat(owner_client, tenant, django_assert_max_num_queries):
    record(tenant, [event(session_id=f"s-{n}", iteration_index=1) for n in range(40)])
    with django_assert_max_num_queries(8):
        assert owner_client.get("/sessions/").status_code == 200


def test_the_sessions_filter_form_shows_the_filters_of_the_url(owner_client, tenant, htmx):
    record(tenant, [event(session_id="calm-1", iteration_index=1, team="search")])
    swapped = owner_client.get("/sessions/?flagged=1&project=p1", **htmx("sessions-page")).content.decode()
    assert "<html" not in swapped
    assert 'name="flagged" value="1" checked' in swapped and 'name="project" value="p1"' in swapped
    cleared = owner_client.get("/sessions/", **htmx("sessions-page")).content.decode()
    assert 'name="flagged" value="1" >' in cleared and 'name="project" value=""' in cleared
    unknown = owner_client.get("/sessions/?team=nope").content.decode()
    assert '<option value="nope" selected>nope (no such team)</option>' in unknown


def test_a_reused_session_id_shows_only_its_current_run(owner_client, tenant):
    """After 24 hours idle the same id starts from zero: its page shows that run's events and iterations only."""
    import datetime

    import time_machine
    from django.utils import timezone

    with time_machine.travel(timezone.now() - datetime.timedelta(hours=30), tick=False):
        record(tenant, [event(session_id="nightly", iteration_index=i, model=f"yesterday-{i}") for i in (1, 2, 3)])
    record(tenant, [event(session_id="nightly", iteration_index=1, model="today-1")])
    page = owner_client.get("/sessions/nightly/").content.decode()
    assert "today-1" in page and "yesterday-" not in page


def test_a_session_just_under_its_limit_does_not_show_100_percent(owner_client, tenant):
    record(tenant, [event(session_id="near", iteration_index=1)])
    SessionState.objects.filter(session_id="near").update(spent_usd=Decimal("0.996"), last_limit_usd=Decimal("1"))
    page = owner_client.get("/sessions/near/").content.decode()
    assert "· 99.60%" in page and "100%" not in page
