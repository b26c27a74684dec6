"""Mass assignment: extra fields such as tenant, id, spent, key_hash, is_staff or created_at in any write never
change what is stored: the admin API's writes refuse them with a 400 naming them; ingest ignores them (aw-sdk
may send fields a later server knows)."""

import json

import pytest

from budgets.models import TeamBudget
from tenants.models import ApiKey, Tenant, WebhookEndpoint
from usage.models import UsageEvent

EXTRA = {"tenant": 999, "tenant_id": 999, "id": 424242, "spent": 1e9, "spent_usd": 1e9, "key_hash": "0" * 64,
         "is_staff": True, "created_at": "2001-01-01T00:00:00Z", "scope_override": "admin", "revoked_at": None,
         "cost_usd": 123.45, "recorded_at": "2001-01-01T00:00:00Z", "current_spend": 1e6}


def post(api, path, body, method="post"):
    return getattr(api, method)(path, json.dumps(body), content_type="application/json")


def test_ingest_ignores_extra_fields(tenant, other_tenant, telemetry_api):
    response = post(telemetry_api, "/v1/ingest", {"model": "gpt-4o", "prompt_tokens": 1000, **EXTRA})
    assert response.status_code in (202, 400)
    for event in UsageEvent.objects.all():
        assert event.tenant_id == tenant.pk and event.pk != 424242
        assert event.cost_usd != 123.45 and event.received_at.year > 2001


def test_budget_writes_refuse_extra_fields(tenant, other_tenant, admin_api):
    """A budget write names its fields exactly: anything else is a 400 naming it (a misspelt `hardstop` silently
    ignored would leave the team without its hard stop)."""
    response = post(admin_api, "/v1/teams/budgets", {"team": "t1", "monthly_budget_usd": 10, **EXTRA})
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) == set(EXTRA)
    assert not TeamBudget.objects.exists()
    assert post(admin_api, "/v1/teams/budgets", {"team": "t1", "monthly_budget_usd": 10}).status_code == 201
    response = post(admin_api, "/v1/teams/budgets/t1", {"hard_stop": True, **EXTRA}, method="patch")
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) == set(EXTRA)
    response = post(admin_api, "/v1/teams/budgets/t1", {"hardstop": True}, method="patch")
    assert response.json()["error"]["fields"] == {
        "hardstop": ["Unknown field; the fields are team, monthly_budget_usd, alert_threshold_pct, hard_stop."]}
    budget = TeamBudget.objects.get()
    assert budget.tenant_id == tenant.pk and budget.pk != 424242 and budget.hard_stop is False
    assert budget.created_at.year > 2001
    assert not TeamBudget.objects.filter(tenant=other_tenant).exists()


@pytest.mark.parametrize("scope", ["telemetry", "admin"])
def test_key_creation_refuses_extra_fields(tenant, other_tenant, admin_api, scope):
    response = post(admin_api, "/v1/keys", {"name": "k", "scope": scope, **EXTRA})
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) == set(EXTRA)
    assert not ApiKey.objects.filter(name="k").exists()


def test_webhook_creation_refuses_extra_fields(settings, tenant, other_tenant, admin_api):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    response = post(admin_api, "/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "event_types": ["budget.exceeded"],
                                                **EXTRA})
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) == set(EXTRA)
    assert not WebhookEndpoint.objects.exists()
    created = post(admin_api, "/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "event_types": ["budget.exceeded"]})
    # A misspelt field in a change is refused, not a 200 that left the endpoint enabled.
    response = post(admin_api, f"/v1/webhooks/{created.json()['id']}", {"enabeld": False}, method="patch")
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) == {"enabeld"}
    assert WebhookEndpoint.objects.get().enabled is True


def test_no_write_touched_the_other_tenant(tenant, other_tenant, admin_api):
    post(admin_api, "/v1/teams/budgets", {"team": "t2", "monthly_budget_usd": 10, "tenant": other_tenant.pk,
                                          "tenant_id": other_tenant.pk})
    assert Tenant.objects.get(pk=other_tenant.pk).name == "Bob Org"
    assert not TeamBudget.objects.filter(tenant=other_tenant).exists()
