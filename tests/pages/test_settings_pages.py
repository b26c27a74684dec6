"""Settings → Webhooks, Pricing, Retention and Members pages."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from tenants.models import Membership, WebhookDelivery, WebhookEndpoint
from tests.factories import MembershipFactory, UserFactory
from tests.fakes import WebhookReceiver
from usage.models import ModelPrice, PurgeRun

from .data import event, record

# --- Webhooks -------------------------------------------------------------------------------------------


@pytest.fixture
def private_webhooks(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True


def test_adding_a_webhook_shows_its_secret_once(admin_client, tenant, htmx, private_webhooks):
    with WebhookReceiver() as receiver:
        response = admin_client.post("/settings/webhooks/", {
            "url": receiver.url, "description": "ops", "event_types": ["budget.exceeded", "anomaly.detected"],
        }, **htmx("webhooks-panel"))
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get(tenant=tenant)
    assert endpoint.event_types == ["budget.exceeded", "anomaly.detected"]
    assert endpoint.secret in response.content.decode()
    assert endpoint.secret not in admin_client.get("/settings/webhooks/").content.decode()


def test_webhook_form_errors_are_shown(admin_client, tenant, htmx):
    response = admin_client.post("/settings/webhooks/", {"url": "ftp://x", "event_types": []}, **htmx())
    assert response.status_code == 400
    html = response.content.decode()
    assert "Enter a valid URL." in html and "This field is required." in html
    assert not WebhookEndpoint.objects.exists()


def test_private_webhook_address_is_refused_by_the_service_rule(admin_client, tenant, htmx, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = admin_client.post("/settings/webhooks/", {"url": "http://127.0.0.1:9/h",
                                                         "event_types": ["budget.exceeded"]}, **htmx())
    assert response.status_code == 400 and b"WEBHOOK_ALLOW_PRIVATE" in response.content
    assert not WebhookEndpoint.objects.exists()


def test_send_test_posts_now_and_logs_the_delivery_inline(admin_client, tenant, htmx, private_webhooks):
    with WebhookReceiver() as receiver:
        endpoint = WebhookEndpoint.objects.create(tenant=tenant, url=receiver.url, secret="whsec_x",
                                                  event_types=["budget.exceeded"])
        response = admin_client.post(f"/settings/webhooks/{endpoint.pk}/test/", **htmx("webhooks-panel"))
        assert len(receiver.requests) == 1
    html = response.content.decode()
    assert 'class="small test-result"' in html and "succeeded" in html and "HTTP 200" in html
    assert WebhookDelivery.objects.get().status == "succeeded"
    log = html[html.index('id="delivery-log"'):]
    assert '<td class="mono small">test</td>' in log and '<td class="num">200</td>' in log


def test_webhook_can_be_disabled_and_deleted(admin_client, tenant, htmx):
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/h", secret="whsec_x",
                                              event_types=["budget.exceeded"])
    admin_client.post(f"/settings/webhooks/{endpoint.pk}/toggle/", **htmx("webhooks-panel"))
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    page = admin_client.get("/settings/webhooks/").content.decode()
    assert f'hx-confirm="Delete the endpoint {endpoint.url}?' in page
    admin_client.post(f"/settings/webhooks/{endpoint.pk}/delete/", **htmx("webhooks-panel"))
    assert not WebhookEndpoint.objects.exists()


def test_webhooks_page_query_count_is_flat(admin_client, tenant, django_assert_max_num_queries):
    for n in range(8):
        endpoint = WebhookEndpoint.objects.create(tenant=tenant, url=f"https://example.com/{n}", secret="s",
                                                  event_types=["budget.exceeded"])
        WebhookDelivery.objects.create(tenant=tenant, endpoint=endpoint, event_id=f"e{n}", event_type="test",
                                       payload={})
    with django_assert_max_num_queries(8):
        assert admin_client.get("/settings/webhooks/").status_code == 200


# --- Pricing --------------------------------------------------------------------------------------------

def test_pricing_explains_cost_modes_and_lists_the_catalogue(viewer_client, tenant):
    html = viewer_client.get("/settings/pricing/").content.decode()
    assert "Blended — $3 per million tokens" in html and "over-estimates cheap models" in html
    assert "gpt-4o-mini" in html
    assert "Save cost mode" not in html and "Save price" not in html


def test_admin_switches_cost_mode(admin_client, tenant, htmx):
    response = admin_client.post("/settings/pricing/mode/", {"cost_mode": "catalog"}, **htmx("pricing-panel"))
    assert response.status_code == 200
    tenant.refresh_from_db()
    assert tenant.cost_mode == "catalog"
    bad = admin_client.post("/settings/pricing/mode/", {"cost_mode": "free"}, **htmx("pricing-panel"))
    assert bad.status_code == 400 and b"blended or catalog" in bad.content


def test_unknown_models_seen_recently_are_listed_and_can_be_priced(admin_client, tenant, htmx):
    record(tenant, [event(model="acme-internal-7b"), event(model="acme-internal-7b"), event(model="gpt-4o")])
    html = admin_client.get("/settings/pricing/").content.decode()
    section = html[html.index("Models without a price"):]
    assert "acme-internal-7b" in section[:1500] and ">2<" in section[:1500]
    response = admin_client.post("/settings/pricing/overrides/", {
        "model": "acme-internal-7b", "input_per_mtok": "0.5", "output_per_mtok": "1.5"}, **htmx("pricing-panel"))
    assert response.status_code == 200
    price = ModelPrice.objects.get(tenant=tenant, model="acme-internal-7b")
    assert (price.input_per_mtok, price.output_per_mtok) == (Decimal("0.5"), Decimal("1.5"))
    assert b"Models without a price" not in response.content


def test_price_override_validation_and_removal(admin_client, tenant, htmx, other_tenant):
    bad = admin_client.post("/settings/pricing/overrides/", {"model": "m", "input_per_mtok": "-1",
                                                             "output_per_mtok": "x"}, **htmx())
    assert bad.status_code == 400
    assert b"greater than or equal to 0" in bad.content and b"Enter a number." in bad.content
    admin_client.post("/settings/pricing/overrides/", {"model": "gpt-4o", "input_per_mtok": "1",
                                                       "output_per_mtok": "2"})
    price = ModelPrice.objects.get(tenant=tenant, model="gpt-4o")
    assert admin_client.post(f"/settings/pricing/overrides/{price.pk}/delete/").status_code == 302
    assert not ModelPrice.objects.filter(tenant=tenant).exists()
    catalogue_row = ModelPrice.objects.filter(tenant__isnull=True).first()
    assert admin_client.post(f"/settings/pricing/overrides/{catalogue_row.pk}/delete/").status_code == 404


# --- Retention ------------------------------------------------------------------------------------------

def test_retention_shows_what_the_next_purge_removes(admin_client, tenant):
    now = timezone.now()
    record(tenant, [event(timestamp=now - datetime.timedelta(days=100)), event(timestamp=now - datetime.timedelta(
        days=95)), event()])
    PurgeRun.objects.create(started_at=now - datetime.timedelta(hours=3), finished_at=now, events_deleted=12,
                            sessions_deleted=3, per_tenant={"alice": {"events": 12, "cutoff": "2026-08-27T00:00"}})
    html = admin_client.get("/settings/retention/").content.decode()
    assert '<strong id="expired-count">2</strong> events older than' in html
    assert "12 of your events deleted (older than 2026-08-27)" in html
    PurgeRun.objects.create(started_at=now, finished_at=now, per_tenant={
        "alice": {"events": 5, "webhook_deliveries": 3, "cutoff": "2026-08-28T00:00"}})
    html = admin_client.get("/settings/retention/").content.decode()
    assert "5 of your events and 3 webhook deliveries deleted (older than 2026-08-28)" in html
    PurgeRun.objects.create(started_at=now + datetime.timedelta(seconds=1), finished_at=now, per_tenant={
        "alice": {"events": 0, "webhook_deliveries": 1, "cutoff": "2026-08-29T00:00"}})
    html = admin_client.get("/settings/retention/").content.decode()
    assert "0 of your events and 1 webhook delivery deleted (older than 2026-08-29)" in html


def test_retention_counts_only_what_a_purge_deletes_and_says_when_one_did_not_finish(admin_client, tenant):
    from usage.models import UsageEvent

    now = timezone.now()
    record(tenant, [event(timestamp=now - datetime.timedelta(days=100), event_id=f"old-{n}") for n in range(3)])
    # Set aside (quarantined): kept by the purge, so not counted as going to be deleted.
    UsageEvent.objects.filter(event_id="old-0").update(record_error="CostOverflow: test", cost_usd=None)
    PurgeRun.objects.create(started_at=now - datetime.timedelta(days=1), finished_at=now - datetime.timedelta(days=1),
                            per_tenant={"alice": {"events": 7, "cutoff": "2026-08-27T00:00"}})
    PurgeRun.objects.create(started_at=now - datetime.timedelta(minutes=5))  # stopped half-way: no counts
    html = admin_client.get("/settings/retention/").content.decode()
    assert '<strong id="expired-count">2</strong> events older than' in html
    assert "7 of your events deleted (older than 2026-08-27)" in html  # the last finished run, not the stopped one
    assert 'id="unfinished-purge"' in html and "has not finished" in html


def test_retention_days_are_validated_and_saved(admin_client, tenant, htmx):
    assert admin_client.post("/settings/retention/", {"retention_days": "0"}, **htmx()).status_code == 400
    assert admin_client.post("/settings/retention/", {"retention_days": "3651"}, **htmx()).status_code == 400
    response = admin_client.post("/settings/retention/", {"retention_days": "30"}, **htmx("retention-panel"))
    assert response.status_code == 200 and b"Retention saved: 30 days." in response.content
    tenant.refresh_from_db()
    assert tenant.retention_days == 30


# --- Members --------------------------------------------------------------------------------------------

# Joining by invitation: tests/pages/test_invitations.py.

def test_owner_changes_a_role_and_removes_a_member(owner_client, tenant, viewer, htmx):
    membership = Membership.objects.get(tenant=tenant, user=viewer)
    owner_client.post(f"/settings/members/{membership.pk}/role/", {"role": "admin"}, **htmx("members-panel"))
    membership.refresh_from_db()
    assert membership.role == "admin"
    owner_client.post(f"/settings/members/{membership.pk}/remove/", **htmx("members-panel"))
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_last_owner_cannot_be_demoted_or_removed(owner_client, owner, tenant, htmx):
    membership = Membership.objects.get(tenant=tenant, user=owner)
    demote = owner_client.post(f"/settings/members/{membership.pk}/role/", {"role": "viewer"},
                               **htmx("members-panel"))
    assert demote.status_code == 409 and b"The last owner cannot be demoted" in demote.content
    remove = owner_client.post(f"/settings/members/{membership.pk}/remove/", **htmx("members-panel"))
    assert remove.status_code == 409 and b"The last owner cannot be removed" in remove.content
    membership.refresh_from_db()
    assert membership.role == "owner"
    second = MembershipFactory(tenant=tenant, user=UserFactory(username="otto"), role=Membership.Role.OWNER)
    assert owner_client.post(f"/settings/members/{second.pk}/role/", {"role": "admin"}).status_code == 302
    second.refresh_from_db()
    assert second.role == "admin"


def test_another_tenants_membership_is_not_found(owner_client, other_tenant):
    theirs = MembershipFactory(tenant=other_tenant, user=UserFactory(username="zed"), role=Membership.Role.OWNER)
    assert owner_client.post(f"/settings/members/{theirs.pk}/role/", {"role": "viewer"}).status_code == 404
    assert owner_client.post(f"/settings/members/{theirs.pk}/remove/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.role == "owner"


def test_admin_cannot_change_members(admin_client, tenant, owner):
    membership = Membership.objects.get(tenant=tenant, user=owner)
    assert admin_client.post(f"/settings/members/{membership.pk}/role/", {"role": "viewer"}).status_code == 403


def test_prices_show_one_dollar_sign(admin_client, tenant):
    admin_client.post("/settings/pricing/overrides/", {"model": "gpt-4o", "input_per_mtok": "2.5",
                                                       "output_per_mtok": "10"})
    admin_client.post("/settings/pricing/overrides/", {"model": "acme-7b", "input_per_mtok": "0.1",
                                                       "output_per_mtok": "0.2"})
    html = admin_client.get("/settings/pricing/").content.decode()
    assert "$2.50 / $10.00" in html and "$0.10 / $0.20" in html
    assert "$$" not in html
