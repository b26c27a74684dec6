from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from tenants.keys import hash_key
from tenants.models import ApiKey, Membership, Tenant


def run(*args) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip().splitlines()


@pytest.mark.django_db
def test_createtenant_prints_the_slug_last():
    assert run("createtenant", "Acme Inc")[-1] == "acme-inc"
    assert Tenant.objects.get(slug="acme-inc").name == "Acme Inc"


@pytest.mark.django_db
def test_createtenant_with_admin_creates_an_owner():
    slug = run("createtenant", "Acme", "--admin-username", "ada", "--admin-password", "s3cret-pass!")[-1]
    user = get_user_model().objects.get(username="ada")
    assert user.check_password("s3cret-pass!")
    assert Membership.objects.get(user=user, tenant__slug=slug).role == "owner"


@pytest.mark.django_db
def test_createtenant_refuses_half_the_admin_options():
    with pytest.raises(CommandError, match="go together"):
        run("createtenant", "Acme", "--admin-username", "ada")


@pytest.mark.django_db
def test_createapikey_prints_a_working_key_alone_on_the_last_line():
    slug = run("createtenant", "Acme")[-1]
    key = run("createapikey", "--tenant", slug, "--name", "ci", "--scope", "telemetry")[-1]
    assert key.startswith("aw_live_")
    stored = ApiKey.objects.get(key_hash=hash_key(key))
    assert stored.scope == "telemetry" and stored.tenant.slug == slug


@pytest.mark.django_db
def test_createapikey_unknown_tenant_is_a_clear_error():
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        run("createapikey", "--tenant", "nope", "--name", "ci", "--scope", "admin")


@pytest.mark.django_db
def test_createapikey_bad_scope_is_refused():
    run("createtenant", "Acme")
    with pytest.raises(CommandError):
        run("createapikey", "--tenant", "acme", "--name", "ci", "--scope", "root")
