import datetime

from django.utils import timezone

from tenants.models import ApiKey
from tests.conftest import api_client_for, make_key


def create(api, **body):
    return api.post("/v1/keys", body, format="json")


def test_created_key_secret_is_returned_once_and_works(tenant, admin_api):
    response = create(admin_api, name="ci-agents", scope="telemetry")
    assert response.status_code == 201
    body = response.json()
    assert body["key"].startswith("aw_live_") and body["key"].startswith(body["prefix"])
    assert body["scope"] == "telemetry" and body["active"] is True and body["name"] == "ci-agents"
    assert "key_hash" not in body
    # The secret authenticates, and is never shown again.
    assert api_client_for(body["key"]).get("/v1/me").status_code == 200
    listed = admin_api.get("/v1/keys").json()["results"]
    created = next(k for k in listed if k["id"] == body["id"])
    assert "key" not in created and "key_hash" not in created
    assert body["key"] not in admin_api.get("/v1/keys").content.decode()
    assert ApiKey.objects.get(pk=body["id"]).created_by_key.scope == "admin"


def test_list_shows_only_this_tenants_keys(tenant, other_tenant, admin_api, other_admin_api):
    make_key(tenant, "telemetry", "agents")
    names = {k["name"] for k in admin_api.get("/v1/keys").json()["results"]}
    assert names == {"admin key", "agents"}
    other_names = {k["name"] for k in other_admin_api.get("/v1/keys").json()["results"]}
    assert other_names == {"other admin key"}


def test_expiring_admin_key(tenant, admin_api):
    expires = (timezone.now() + datetime.timedelta(days=30)).replace(microsecond=0)
    body = create(admin_api, name="script", scope="admin", expires_at=expires.isoformat()).json()
    assert datetime.datetime.fromisoformat(body["expires_at"]) == expires


def test_invalid_create_bodies_are_400_with_fields(tenant, admin_api):
    """Strings only: a number is not a name (DRF alone would store 0 as "0")."""
    past = (timezone.now() - datetime.timedelta(minutes=1)).isoformat()
    for body, field in [
        ({"scope": "admin"}, "name"), ({"name": "x", "scope": "root"}, "scope"), ({"name": "x"}, "scope"),
        ({"name": "   ", "scope": "admin"}, "name"), ({"name": "x" * 101, "scope": "admin"}, "name"),
        ({"name": "x", "scope": "admin", "expires_at": past}, "expires_at"),
        ({"name": "x", "scope": "admin", "expires_at": "soon"}, "expires_at"),
        ({"name": 0, "scope": "admin"}, "name"), ({"name": "a\x00b", "scope": "admin"}, "name"),
        ({"name": "\r" + "x" * 100, "scope": "admin"}, "name"),  # over 100 as sent, whatever trimming leaves
    ]:
        response = create(admin_api, **body)
        assert response.status_code == 400, body
        assert field in response.json()["error"]["fields"], body


def test_telemetry_key_cannot_list_create_or_revoke_keys(tenant, telemetry_api, admin_key):
    assert telemetry_api.get("/v1/keys").status_code == 403
    response = create(telemetry_api, name="escalate", scope="admin")
    assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error"
    assert not ApiKey.objects.filter(name="escalate").exists()
    admin = ApiKey.objects.get(tenant=tenant, scope="admin")
    assert telemetry_api.delete(f"/v1/keys/{admin.pk}").status_code == 403
    assert ApiKey.objects.get(pk=admin.pk).revoked_at is None


def test_revoke_by_id_then_the_key_gets_401(tenant, admin_api):
    raw = make_key(tenant, "telemetry", "agents")
    key = ApiKey.objects.get(name="agents")
    response = admin_api.delete(f"/v1/keys/{key.pk}")
    assert response.status_code == 200
    assert response.json()["active"] is False and response.json()["revoked_at"]
    assert api_client_for(raw).get("/v1/me").status_code == 401
    # Revoking again is harmless.
    assert admin_api.delete(f"/v1/keys/{key.pk}").status_code == 200


def test_revoke_by_prefix(tenant, admin_api):
    make_key(tenant, "telemetry", "agents")
    key = ApiKey.objects.get(name="agents")
    assert admin_api.delete(f"/v1/keys/{key.prefix}").status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_ambiguous_prefix_is_409(tenant, admin_api):
    make_key(tenant, "telemetry", "one")
    make_key(tenant, "telemetry", "two")
    ApiKey.objects.filter(name__in=["one", "two"]).update(prefix="aw_live_SAME")
    response = admin_api.delete("/v1/keys/aw_live_SAME")
    assert response.status_code == 409 and response.json()["error"]["code"] == "ambiguous_prefix"
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


def test_full_secret_in_the_path_is_refused(tenant, admin_api):
    raw = make_key(tenant, "telemetry", "agents")
    response = admin_api.delete(f"/v1/keys/{raw}")
    assert response.status_code == 400 and "key" in response.json()["error"]["fields"]
    assert ApiKey.objects.get(name="agents").revoked_at is None


def test_other_tenants_key_is_404_and_stays_active(tenant, other_tenant, admin_api):
    make_key(other_tenant, "admin", "theirs")
    theirs = ApiKey.objects.get(name="theirs")
    for reference in (str(theirs.pk), theirs.prefix):
        response = admin_api.delete(f"/v1/keys/{reference}")
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is None


def test_unknown_references_are_404(tenant, admin_api):
    for reference in ("999999", "99999999999999999999999", "aw_live_ZZZZ", "nonsense", "%20"):
        assert admin_api.delete(f"/v1/keys/{reference}").status_code == 404, reference
    # A NUL is refused before any view: 400, never a query PostgreSQL would reject.
    assert admin_api.delete("/v1/keys/aw_live_%00AB").status_code == 400


def test_a_lone_surrogate_repeated_in_an_error_message_is_shown_escaped_not_a_500(tenant, admin_api):
    """DRF's choice error repeats the value; a lone surrogate (JSON "\\ud800") cannot be written as UTF-8."""
    response = admin_api.post("/v1/keys", data=b'{"name": "k", "scope": "\\ud800"}', content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"]["scope"] == ['"\\ud800" is not a valid choice.']
    assert not ApiKey.objects.filter(name="k").exists()


def test_a_key_created_with_an_expiring_key_expires_with_it_at_the_latest(tenant, admin_api):
    parent_expiry = (timezone.now() + datetime.timedelta(hours=1)).replace(microsecond=0)
    short = create(admin_api, name="short", scope="admin", expires_at=parent_expiry.isoformat()).json()
    short_api = api_client_for(short["key"])

    # No expiry asked: the new key gets its creator's, so a short-lived key cannot mint a lasting admin key.
    minted = create(short_api, name="minted", scope="admin").json()
    assert datetime.datetime.fromisoformat(minted["expires_at"]) == parent_expiry
    earlier = parent_expiry - datetime.timedelta(minutes=5)
    assert datetime.datetime.fromisoformat(
        create(short_api, name="sooner", scope="telemetry", expires_at=earlier.isoformat()).json()["expires_at"]
    ) == earlier

    later = create(short_api, name="later", scope="admin",
                   expires_at=(parent_expiry + datetime.timedelta(days=1)).isoformat())
    assert later.status_code == 400
    assert later.json()["error"]["fields"] == {"expires_at": [f"Must be at most {parent_expiry:%Y-%m-%dT%H:%M:%S}Z."]}
    assert not ApiKey.objects.filter(name="later").exists()
    # A key without an expiry still creates keys without one.
    assert create(admin_api, name="lasting", scope="admin").json()["expires_at"] is None
