"""No page shows template syntax as text: a `{# … #}` comment spanning lines is not a comment to Django (it is
printed), and a broken tag would print too."""

import pytest

from budgets.services import budget_upsert
from tests.pages.data import record, runaway_session

PAGES = ["/", "/activity/", "/activity/?team=nobody", "/sessions/", "/sessions/run-loop-1/", "/anomalies/",
         "/budgets/", "/settings/api-keys/", "/settings/webhooks/", "/settings/pricing/", "/settings/retention/",
         "/settings/members/", "/logout/"]


@pytest.mark.parametrize("url", PAGES)
def test_no_template_syntax_reaches_the_page(owner_client, tenant, url):
    record(tenant, runaway_session())
    budget_upsert(tenant=tenant, team_name="payments-eng", monthly_budget_usd=100)
    response = owner_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    for marker in ("{#", "#}", "{%", "%}", "{{", "}}"):
        assert marker not in html, f"{url} shows {marker!r}: {html[max(0, html.find(marker) - 80):][:200]}"


def test_no_template_syntax_in_an_acknowledged_anomaly_row(admin_client, tenant, htmx):
    from usage.models import Anomaly

    record(tenant, runaway_session())
    anomaly = Anomaly.objects.get(tenant=tenant)
    html = admin_client.post(f"/anomalies/{anomaly.pk}/acknowledge/", **htmx(f"anomaly-{anomaly.pk}")).content
    assert html.lstrip().startswith(b"<tr")  # htmx parses the answer as table content: nothing may come before
    assert b"#}" not in html and b"{%" not in html
