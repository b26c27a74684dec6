"""htmx and navigation: Back (htmx's history restore) gets the full page, a signed-out htmx request sends the
browser to the sign-in page instead of swapping it into a card."""

import pytest
from django.test import Client

from .data import event, record

HISTORY_RESTORE = {"HTTP_HX_REQUEST": "true", "HTTP_HX_HISTORY_RESTORE_REQUEST": "true"}


@pytest.mark.parametrize("url", ["/activity/?team=search", "/sessions/?flagged=1", "/anomalies/?kind=runaway_loop"])
def test_back_after_the_history_cache_is_gone_gets_the_full_page(owner_client, tenant, url):
    record(tenant, [event(team="search", session_id="s-1", iteration_index=1)])
    response = owner_client.get(url, **HISTORY_RESTORE)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html and 'class="topbar"' in html
    assert "HX-History-Restore-Request" in response["Vary"]


def test_a_signed_out_htmx_request_redirects_the_browser_to_sign_in(db):
    anonymous = Client()
    response = anonymous.get("/activity/?team=search", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="activity-page",
                             HTTP_HX_CURRENT_URL="http://testserver/activity/?team=search")
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/activity/%3Fteam%3Dsearch"
    assert b"Sign in" not in response.content


def test_a_signed_out_live_poll_comes_back_to_the_page_not_the_poll_url(db):
    response = Client().get("/activity/live/?after=x", HTTP_HX_REQUEST="true",
                            HTTP_HX_CURRENT_URL="http://testserver/activity/")
    assert response["HX-Redirect"] == "/login/?next=/activity/"


def test_a_signed_out_plain_request_still_gets_the_302(db):
    response = Client().get("/activity/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/activity/"
