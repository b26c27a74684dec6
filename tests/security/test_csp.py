"""Every page works under a Content-Security-Policy without unsafe-inline/unsafe-eval: the header is set, and the
HTML carries no inline script, inline style attribute, inline event handler or javascript: link."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tenants.models import Membership
from tenants.services import membership_set

PAGES = ["/login/", "/", "/activity/", "/budgets/", "/sessions/", "/anomalies/", "/settings/api-keys/",
         "/settings/webhooks/", "/settings/pricing/", "/settings/retention/", "/settings/members/"]
INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(rb"\son[a-z]+\s*=", re.IGNORECASE)


@pytest.fixture
def owner_client(tenant):
    user = get_user_model().objects.create_user("csp-owner", password="pw-owner-123456")
    membership_set(tenant=tenant, user=user, role=Membership.Role.OWNER)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_page_is_served_under_a_strict_csp_with_no_inline_code(owner_client, path):
    client = Client() if path == "/login/" else owner_client
    response = client.get(path)
    assert response.status_code == 200, path
    policy = response["Content-Security-Policy"]
    script_src = next(part for part in policy.split(";") if part.strip().startswith(("script-src", "default-src")))
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in policy
    html = response.content
    assert not INLINE_SCRIPT.search(html), INLINE_SCRIPT.search(html)
    assert not INLINE_HANDLER.search(html), INLINE_HANDLER.search(html)
    assert b' style="' not in html
    assert b"javascript:" not in html.lower()
    assert b"hx-on" not in html
    assert response["X-Frame-Options"] == "DENY"
