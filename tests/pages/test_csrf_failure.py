"""An out-of-date CSRF token (signed in or out in another tab) gets a styled page saying so, or an htmx banner,
never Django's bare 403 page or "your role cannot do this"."""

from django.test import Client

from tests.pages.conftest import PASSWORD


def test_sign_in_from_a_stale_tab_gets_a_styled_reload_page(owner):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": "olivia", "password": PASSWORD},
                           HTTP_REFERER="http://testserver/login/?next=/budgets/")
    assert response.status_code == 403
    html = response.content.decode()
    assert "Page out of date" in html and "Reload it and try again" in html
    assert 'href="http://testserver/login/?next=/budgets/"' in html
    assert '<link rel="stylesheet"' in html and "CSRF verification failed" not in html


def test_an_owners_htmx_write_with_a_stale_token_gets_the_reload_banner(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post("/budgets/", {"team": "search", "monthly_budget_usd": "10"}, HTTP_HX_REQUEST="true",
                           HTTP_X_CSRFTOKEN="stale", HTTP_HX_CURRENT_URL="http://testserver/budgets/")
    assert response.status_code == 403
    assert response["HX-Retarget"] == "#page-banner" and response["HX-Reswap"] == "innerHTML"
    assert b"This page is out of date" in response.content and b'href="/budgets/"' in response.content
    assert b"<html" not in response.content
