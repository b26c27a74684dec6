"""Settings → API keys: generate (shown once), list by prefix, revoke with immediate effect."""

from rest_framework.test import APIClient

from tenants.models import ApiKey
from tenants.services import api_key_create


def test_generating_a_key_shows_it_once_with_a_copy_button(admin_client, tenant, htmx):
    response = admin_client.post("/settings/api-keys/", {"name": "checkout-agent", "scope": "telemetry"},
                                 **htmx("api-keys-panel"))
    assert response.status_code == 200
    html = response.content.decode()
    key = ApiKey.objects.get(tenant=tenant)
    assert key.scope == "telemetry" and key.created_by.username == "adam"
    start = html.index('id="new-key-value">') + len('id="new-key-value">')
    raw = html[start:html.index("<", start)]
    assert raw.startswith(key.prefix) and len(raw) > 30
    assert "will not be shown again" in html and 'class="btn btn-small js-copy"' in html
    assert raw not in admin_client.get("/settings/api-keys/").content.decode()
    assert key.prefix in admin_client.get("/settings/api-keys/").content.decode()


def test_telemetry_scope_is_the_default_choice(admin_client):
    html = admin_client.get("/settings/api-keys/").content.decode()
    assert 'value="telemetry" required id="id_scope_0" checked' in html or (
        'value="telemetry"' in html and "checked" in html.split('value="telemetry"')[1][:80])


def test_key_needs_a_name(admin_client, tenant, htmx):
    response = admin_client.post("/settings/api-keys/", {"name": "  ", "scope": "telemetry"}, **htmx())
    assert response.status_code == 400
    assert not ApiKey.objects.exists()
    assert b'aria-invalid="true"' in response.content


def test_unknown_scope_is_refused(admin_client, tenant):
    response = admin_client.post("/settings/api-keys/", {"name": "x", "scope": "root"})
    assert response.status_code == 400 and not ApiKey.objects.exists()


def test_revoking_a_key_refuses_it_at_once(admin_client, tenant, htmx):
    key, raw = api_key_create(tenant=tenant, name="agent", scope=ApiKey.Scope.TELEMETRY)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/v1/budget-check", {"session_id": "s", "limit_usd": "1"}).status_code == 200
    page = admin_client.get("/settings/api-keys/").content.decode()
    assert f'hx-confirm="Revoke “agent” ({key.prefix}…)?' in page
    response = admin_client.post(f"/settings/api-keys/{key.pk}/revoke/", **htmx(f"key-{key.pk}"))
    assert response.status_code == 200 and b"revoked" in response.content and b"<html" not in response.content
    assert api.get("/v1/budget-check", {"session_id": "s", "limit_usd": "1"}).status_code == 401


def test_key_list_shows_name_prefix_scope_creator_and_last_use(admin_client, admin_user, tenant,
                                                                django_assert_max_num_queries):
    for n in range(10):
        api_key_create(tenant=tenant, name=f"key-{n}", scope=ApiKey.Scope.ADMIN, created_by=admin_user)
    with django_assert_max_num_queries(8):
        html = admin_client.get("/settings/api-keys/").content.decode()
    assert html.count("<code>aw_live_") == 10 and "adam" in html and "never" in html


def test_another_tenants_keys_are_not_listed(admin_client, other_tenant):
    api_key_create(tenant=other_tenant, name="their-key", scope=ApiKey.Scope.ADMIN)
    assert b"their-key" not in admin_client.get("/settings/api-keys/").content


def test_an_expired_key_is_shown_expired_and_one_about_to_expire_says_when(admin_client, tenant):
    import datetime
    import re

    from django.utils import timezone

    expired, _ = api_key_create(tenant=tenant, name="short-lived", scope=ApiKey.Scope.TELEMETRY,
                                expires_at=timezone.now() + datetime.timedelta(minutes=3))
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - datetime.timedelta(minutes=1))
    soon, _ = api_key_create(tenant=tenant, name="soon", scope=ApiKey.Scope.TELEMETRY,
                             expires_at=timezone.now() + datetime.timedelta(days=2, minutes=5))
    html = admin_client.get("/settings/api-keys/").content.decode()
    expired_row = re.search(rf'<tr id="key-{expired.pk}".*?</tr>', html, re.S).group()
    assert 'class="is-revoked"' in expired_row and ">expired</span>" in expired_row and "Revoke" not in expired_row
    soon_row = re.search(rf'<tr id="key-{soon.pk}".*?</tr>', html, re.S).group()
    assert "expires in 2\xa0days" in soon_row and "Revoke" in soon_row
