"""Activity: newest first, filters in the URL, keyset pages, live refresh, details, CSV of the filtered rows."""

import csv
import datetime
import io
import re
from urllib.parse import quote

import pytest
from django.utils import timezone

from .data import event, record


def _events(n, **fields):
    now = timezone.now()
    return [event(timestamp=now - datetime.timedelta(minutes=i), event_id=f"e{i:03d}", **fields) for i in range(n)]


def test_activity_lists_newest_first_with_expandable_details(owner_client, tenant, htmx):
    from usage.models import UsageEvent

    record(tenant, _events(3, customer_id="acme"))
    html = owner_client.get("/activity/").content.decode()
    ids = [UsageEvent.objects.get(event_id=f"e00{n}").pk for n in range(3)]
    assert html.index(f'id="evt-{ids[0]}"') < html.index(f'id="evt-{ids[1]}"') < html.index(f'id="evt-{ids[2]}"')
    assert f'hx-get="/activity/events/{ids[0]}/" hx-trigger="toggle from:closest details once"' in html
    assert 'id="activity-poller"' in html and 'hx-trigger="every 5s"' in html
    details = owner_client.get(f"/activity/events/{ids[0]}/", **htmx()).content.decode()
    assert "<html" not in details and "e000" in details and "acme / — / —" in details
    page = owner_client.get(f"/activity/events/{ids[0]}/").content.decode()
    assert "<html" in page and "acme / — / —" in page


def test_an_event_set_aside_is_labelled_with_its_error_not_as_pending(owner_client, tenant, htmx):
    from usage.models import UsageEvent
    from usage.services.recording import event_quarantine

    UsageEvent.objects.create(tenant=tenant, event_id="poison", model="gpt-4o", timestamp=timezone.now(),
                              received_at=timezone.now())
    poison = UsageEvent.objects.get(event_id="poison")
    assert event_quarantine(event_id=poison.pk, error="CostOverflow: cost too high")
    html = owner_client.get("/activity/").content.decode()
    assert 'title="Not counted: CostOverflow: cost too high">set aside</span>' in html
    assert ">pending<" not in html
    details = owner_client.get(f"/activity/events/{poison.pk}/", **htmx()).content.decode()
    assert "set aside, not counted in any spend: CostOverflow: cost too high" in details


def test_another_tenants_event_details_are_not_found(owner_client, other_tenant):
    from usage.models import UsageEvent

    record(other_tenant, [event(event_id="theirs")])
    theirs = UsageEvent.objects.get(event_id="theirs")
    assert owner_client.get(f"/activity/events/{theirs.pk}/").status_code == 404


def test_activity_filters_by_team_and_keeps_the_filter_in_links(owner_client, tenant):
    record(tenant, _events(2, team="search", model="search-model") + [event(team="payments-eng", model="pay-model")])
    html = owner_client.get("/activity/?team=SEARCH").content.decode()
    assert "search-model" in html and "pay-model" not in html
    assert 'href="/activity/export.csv?team=SEARCH"' in html
    assert "/activity/live/?team=SEARCH&amp;after=" in html


@pytest.mark.parametrize("session_id", ["trail-x ", " lead-x", "  "])
def test_a_session_pages_link_to_activity_finds_its_events_when_the_id_has_spaces_at_either_end(
        owner_client, tenant, session_id):
    """Ingest stores session ids as sent, spaces included; the API's filter takes them as sent, and so must the
    page, or the link shows nothing (or, for "  ", every event)."""
    record(tenant, [event(session_id=session_id, model="spaced-model"), event(session_id="other", model="plain-model")])
    page = owner_client.get(f"/sessions/{quote(session_id, safe='')}/").content.decode()
    link = re.search(r'href="(/activity/\?[^"]*)">Events in Activity', page).group(1).replace("&amp;", "&")
    html = owner_client.get(link).content.decode()
    assert "spaced-model" in html and "plain-model" not in html


def test_activity_htmx_request_gets_only_the_results_fragment(owner_client, tenant, htmx):
    record(tenant, _events(1, model="only-model"))
    full = owner_client.get("/activity/")
    part = owner_client.get("/activity/", **htmx("activity-results"))
    assert b"<html" in full.content and b"<html" not in part.content
    assert b"only-model" in part.content
    assert "HX-Request" in part["Vary"]


def test_invalid_filter_is_shown_as_an_error_not_a_500(owner_client, tenant):
    response = owner_client.get("/activity/?from=yesterday&risk=bad tag")
    assert response.status_code == 400
    assert b"Check the filters" in response.content and b"ISO 8601" in response.content


def test_activity_pages_with_a_keyset_cursor(owner_client, tenant, htmx):
    record(tenant, _events(60))
    from usage.models import UsageEvent

    pk = {e.event_id: e.pk for e in UsageEvent.objects.all()}
    first = owner_client.get("/activity/").content.decode()
    assert f'id="evt-{pk["e049"]}"' in first and f'id="evt-{pk["e050"]}"' not in first
    import re

    next_url = re.search(r'hx-get="(/activity/\?cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
    more = owner_client.get(next_url, **htmx("activity-more")).content.decode()
    assert f'id="evt-{pk["e050"]}"' in more and f'id="evt-{pk["e059"]}"' in more
    assert f'id="evt-{pk["e049"]}"' not in more
    assert 'hx-swap-oob="beforeend:#event-list"' in more
    assert "Load older events" not in more
    assert owner_client.get("/activity/?cursor=garbage").status_code == 200


def test_live_refresh_returns_only_new_events_matching_the_filters(owner_client, tenant, htmx):
    record(tenant, _events(2, team="search"))
    html = owner_client.get("/activity/?team=search").content.decode()
    import re

    live_url = re.search(r'hx-get="(/activity/live/\?[^"]+)"', html).group(1).replace("&amp;", "&")
    assert owner_client.get(live_url, **htmx()).content.count(b'<details class="evt') == 0
    record(tenant, [event(team="search", model="fresh-1"), event(team="other", model="fresh-2")])
    response = owner_client.get(live_url, **htmx()).content.decode()
    assert "fresh-1" in response and "fresh-2" not in response and response.count('<details class="evt') == 1
    assert 'hx-swap-oob="afterbegin:#event-list"' in response
    new_url = re.search(r'hx-get="(/activity/live/\?[^"]+)"', response).group(1).replace("&amp;", "&")
    assert "fresh-1" not in owner_client.get(new_url, **htmx()).content.decode()


def _live_url(html: str) -> str:
    return re.search(r'hx-get="(/activity/live/\?[^"]+)"', html).group(1).replace("&amp;", "&")


def test_a_burst_larger_than_one_poll_arrives_over_several_polls_with_none_skipped(owner_client, tenant, htmx):
    from usage.models import UsageEvent
    from usage.views import LIVE_MAX_ROWS

    html = owner_client.get("/activity/?team=burst").content.decode()
    assert 'id="no-events"' in html
    start = timezone.now()
    record(tenant, [event(team="burst", event_id=f"b{i:03d}", timestamp=start + datetime.timedelta(seconds=i))
                    for i in range(LIVE_MAX_ROWS + 50)])
    oldest_first = list(UsageEvent.objects.filter(tenant=tenant, team_name="burst").order_by("timestamp")
                        .values_list("pk", flat=True))
    live_url, batches = _live_url(html), []
    for _ in range(3):
        response = owner_client.get(live_url, **htmx()).content.decode()
        batches.append([int(pk) for pk in re.findall(r'<details class="evt is-new" id="evt-(\d+)"', response)])
        # The page's empty-state message goes with the first rows (and is not asked for again).
        assert ('<p id="no-events" hx-swap-oob="delete"></p>' in response) == (len(batches) == 1)
        live_url = _live_url(response)
    # Oldest first across polls, each poll's rows newest first as they are prepended: nothing skipped.
    assert batches == [oldest_first[:LIVE_MAX_ROWS][::-1], oldest_first[LIVE_MAX_ROWS:][::-1], []]


def test_a_pending_row_is_replaced_once_a_worker_prices_it(owner_client, tenant, htmx):
    from usage.models import UsageEvent
    from usage.services.ingest import event_batch_ingest, parse_ingest_body

    now = timezone.now()
    event_batch_ingest(tenant=tenant, events=parse_ingest_body({"events": [event(event_id="slow")]}, now=now),
                       received_at=now)
    pk = UsageEvent.objects.get(event_id="slow").pk
    live_url = _live_url(owner_client.get("/activity/").content.decode())
    assert f"pending={pk}" in live_url  # the page's poll carries the rows it shows as pending
    # Still pending: nothing to replace, and the poll keeps asking.
    response = owner_client.get(live_url, **htmx()).content.decode()
    assert f'id="evt-{pk}"' not in response and f"pending={pk}" in _live_url(response)
    record(tenant, [])
    response = owner_client.get(_live_url(response), **htmx()).content.decode()
    row = re.search(rf'<details class="evt" id="evt-{pk}" hx-swap-oob="true">.*?</details>', response, re.S).group()
    assert "pending" not in row and "$0.0036" in row
    assert "pending=" not in _live_url(response)


@pytest.mark.parametrize("junk", ["\u00b2", "x", "1" * 40, "-1", ",,", "9" * 18])
def test_odd_pending_values_are_ignored_never_an_error(owner_client, tenant, htmx, junk):
    live_url = _live_url(owner_client.get("/activity/").content.decode())
    response = owner_client.get(f"{live_url}&pending={quote(junk)}", **htmx())
    assert response.status_code == 200 and b'id="activity-poller"' in response.content


def test_a_backlog_too_big_to_follow_jumps_to_the_newest_rows_and_says_so(owner_client, tenant, htmx):
    from usage.models import UsageEvent
    from usage.views import LIVE_BACKLOG_MAX, LIVE_MAX_ROWS

    live_url = _live_url(owner_client.get("/activity/").content.decode())
    start = timezone.now() - datetime.timedelta(minutes=10)  # after the page's mark, none in the future
    record(tenant, [event(event_id=f"n{i:04d}", timestamp=start + datetime.timedelta(seconds=i))
                    for i in range(LIVE_BACKLOG_MAX + LIVE_MAX_ROWS + 1)])
    response = owner_client.get(live_url, **htmx()).content.decode()
    shown = [int(pk) for pk in re.findall(r'<details class="evt is-new" id="evt-(\d+)"', response)]
    newest = list(UsageEvent.objects.order_by("-timestamp").values_list("pk", flat=True)[:LIVE_MAX_ROWS])
    assert shown == newest and "some are not shown" in response
    assert '<details class="evt' not in owner_client.get(_live_url(response), **htmx()).content.decode()


def test_live_refresh_replaces_no_other_tenants_row(owner_client, tenant, other_tenant, htmx):
    record(other_tenant, [event(event_id="theirs")])
    from usage.models import UsageEvent

    theirs = UsageEvent.objects.get(tenant=other_tenant, event_id="theirs").pk
    live_url = _live_url(owner_client.get("/activity/").content.decode())
    assert f"evt-{theirs}" not in owner_client.get(f"{live_url}&pending={theirs}", **htmx()).content.decode()


def test_csv_download_has_the_filtered_rows_and_defuses_formulas(owner_client, tenant):
    record(tenant, _events(3, team="search", customer_id="=HYPERLINK(1)") + [event(team="other", event_id="x")])
    response = owner_client.get("/activity/export.csv?team=search")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["event_id"] for r in rows] == ["e000", "e001", "e002"]
    assert rows[0]["customer_id"] == "'=HYPERLINK(1)"
    assert rows[0]["cost_usd"] == "0.0036000000"


def test_activity_never_shows_another_tenants_events(owner_client, tenant, other_tenant):
    record(other_tenant, [event(event_id="theirs", model="their-model")])
    assert b"their-model" not in owner_client.get("/activity/").content
    csv_body = b"".join(owner_client.get("/activity/export.csv").streaming_content)
    assert b"their-model" not in csv_body


def test_activity_query_count_is_flat(owner_client, tenant, django_assert_max_num_queries):
    record(tenant, _events(120, team="search"))
    with django_assert_max_num_queries(9):
        assert owner_client.get("/activity/?team=search").status_code == 200


def test_live_refresh_with_a_bad_mark_returns_nothing_not_an_error(owner_client, tenant, htmx):
    record(tenant, _events(2))
    response = owner_client.get("/activity/live/?after=not-a-cursor", **htmx())
    assert response.status_code == 200
    assert b'<details class="evt' not in response.content and b'id="activity-poller"' in response.content


def test_event_metadata_is_shown_as_the_json_the_agent_sent(owner_client, tenant, htmx):
    from usage.models import UsageEvent

    record(tenant, [event(event_id="m1", metadata={"retry": True, "parent": None, "note": "<b>x</b>"})])
    pk = UsageEvent.objects.get(event_id="m1").pk
    html = owner_client.get(f"/activity/events/{pk}/", **htmx()).content.decode()
    shown = '{"note": "&lt;b&gt;x&lt;/b&gt;", "parent": null, "retry": true}'.replace('"', "&quot;")
    assert shown in html
    assert "True" not in html and "None" not in html


def test_the_filter_form_shows_the_filters_of_the_url_in_every_answer(owner_client, tenant, htmx):
    record(tenant, [event(team="search")])
    swapped = owner_client.get("/activity/?team=search&model=gpt-4o", **htmx("activity-page")).content.decode()
    assert "<html" not in swapped and 'id="f-team"' in swapped
    assert '<option value="search" selected>' in swapped and 'id="f-model" name="model" value="gpt-4o"' in swapped
    cleared = owner_client.get("/activity/", **htmx("activity-page")).content.decode()
    assert 'id="f-model" name="model" value=""' in cleared and '<option value="search" >' in cleared


def test_a_date_time_or_unknown_team_in_the_url_is_shown_in_the_form(owner_client, tenant):
    record(tenant, [event(team="search")])
    html = owner_client.get("/activity/?from=2026-11-25T09:30:00Z&to=2026-11-30&team=unknown").content.decode()
    assert '<input type="text" id="f-from" name="from" value="2026-11-25T09:30:00Z">' in html
    assert '<input type="date" id="f-to" name="to" value="2026-11-30">' in html
    assert '<option value="unknown" selected>unknown (no such team)</option>' in html
    assert "No events match these filters." in html


def test_an_impossible_date_in_the_url_stays_visible_next_to_its_error(owner_client, tenant):
    """A date input cannot hold 2026-02-30: it showed blank beside the error, and Apply then dropped the filter."""
    response = owner_client.get("/activity/?from=2026-02-30&to=2026-11-30")
    assert response.status_code == 400
    html = response.content.decode()
    assert '<input type="text" id="f-from" name="from" value="2026-02-30">' in html
    assert '<input type="date" id="f-to" name="to" value="2026-11-30">' in html
