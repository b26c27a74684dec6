import re
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
def test_createtenant_sets_the_time_zone_of_the_organisations_calendar(client):
    """The zone decides which month (and budget) an event at 03:00 UTC on the 1st counts in: it can be set, and a
    misspelling is refused instead of quietly meaning UTC."""
    slug = run("createtenant", "Acme West", "--timezone", "America/Los_Angeles")[-1]
    assert Tenant.objects.get(slug=slug).timezone == "America/Los_Angeles"
    assert Tenant.objects.get(slug=run("createtenant", "Acme UTC")[-1]).timezone == "UTC"
    with pytest.raises(CommandError, match=r"--timezone: 'America/Los Angeles' is not an IANA time zone name"):
        run("createtenant", "Acme Typo", "--timezone", "America/Los Angeles")
    assert not Tenant.objects.filter(name="Acme Typo").exists()


@pytest.mark.django_db
def test_the_django_admin_refuses_a_time_zone_that_does_not_exist(client):
    tenant = Tenant.objects.create(name="Acme", slug="acme")
    get_user_model().objects.create_superuser("root", "root@example.com", "correct-horse-battery")
    client.login(username="root", password="correct-horse-battery")
    page = client.get(f"/admin/tenants/tenant/{tenant.pk}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update({"timezone": "America/Los Angeles", "memberships-TOTAL_FORMS": "0",
                 "memberships-INITIAL_FORMS": "0"})
    response = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", data)
    assert response.status_code == 200
    assert "is not an IANA time zone name" in response.content.decode()
    tenant.refresh_from_db()
    assert tenant.timezone == "UTC"


@pytest.mark.django_db
def test_createtenant_refuses_half_the_admin_options():
    with pytest.raises(CommandError, match="give --admin-password to create one"):
        run("createtenant", "Acme", "--admin-username", "ada")
    with pytest.raises(CommandError, match="needs --admin-username"):
        run("createtenant", "Acme", "--admin-password", "s3cret-pass!")
    assert not Tenant.objects.exists()


@pytest.mark.django_db
def test_createtenant_makes_an_existing_user_an_owner_without_a_password():
    get_user_model().objects.create_user(username="ada", password="original-pass-1")
    err = StringIO()
    call_command("createtenant", "Gamma", "--admin-username", "ada", stdout=StringIO(), stderr=err)
    user = get_user_model().objects.get(username="ada")
    assert user.check_password("original-pass-1")
    assert "password is unchanged." in err.getvalue()
    assert Membership.objects.get(user=user, tenant__slug="gamma").role == "owner"


@pytest.mark.django_db
def test_createtenant_says_which_options_an_existing_user_left_unused():
    get_user_model().objects.create_user(username="ada", password="original-pass-1", email="ada@old.example")
    err = StringIO()
    call_command("createtenant", "Delta", "--admin-username", "ada", "--admin-email", "ada@new.example",
                 "--admin-password", "another-pass-2", stdout=StringIO(), stderr=err)
    assert "(--admin-password and --admin-email were not used)" in err.getvalue()
    user = get_user_model().objects.get(username="ada")
    assert user.email == "ada@old.example" and user.check_password("original-pass-1")


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


@pytest.mark.django_db
def test_createtenant_with_a_taken_slug_is_refused_rather_than_renamed():
    # Renamed, `createapikey --tenant acme` would then make keys for the tenant that already had the slug.
    run("createtenant", "Acme")
    with pytest.raises(CommandError, match="A tenant with slug 'acme' already exists"):
        run("createtenant", "Acme EU", "--slug", "acme")
    assert Tenant.objects.count() == 1


@pytest.mark.django_db
def test_createtenant_without_a_slug_still_picks_a_free_one():
    run("createtenant", "Acme")
    assert run("createtenant", "Acme")[-1] == "acme-2"


@pytest.mark.django_db
def test_createtenant_refuses_a_weak_owner_password():
    with pytest.raises(CommandError, match="too weak"):
        run("createtenant", "Acme", "--admin-username", "ada", "--admin-password", "123")
    assert not Tenant.objects.exists()
    assert not get_user_model().objects.filter(username="ada").exists()


@pytest.mark.django_db
def test_createtenant_says_an_existing_owner_keeps_their_password():
    get_user_model().objects.create_user(username="ada", password="original-pass-1")
    err = StringIO()
    call_command("createtenant", "Beta", "--admin-username", "ada", "--admin-password", "new-pass-2",
                 stdout=StringIO(), stderr=err)
    user = get_user_model().objects.get(username="ada")
    assert user.check_password("original-pass-1")
    assert "password is unchanged" in err.getvalue()
    assert Membership.objects.get(user=user, tenant__slug="beta").role == "owner"


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "message"), [
    (["Partial Co", "--admin-username", "u" * 151, "--admin-password", "pw-good-12345"],
     "--admin-username: Ensure this value has at most 150 characters"),
    (["Partial Co", "--admin-username", "no spaces!", "--admin-password", "pw-good-12345"],
     "--admin-username: Enter a valid username"),
    (["Partial Co", "--admin-username", "ada", "--admin-password", "pw-good-12345", "--admin-email", "not-mail"],
     "--admin-email: Enter a valid email address"),
    (["x" * 201], "name: Ensure this value has at most 200 characters"),
    (["Partial Co", "--slug", "bad slug!"], "--slug 'bad slug!' is not a slug"),
    (["Partial Co", "--slug", "a" * 51], "is not a slug: up to 50"),
])
def test_createtenant_refuses_bad_values_with_one_line_and_creates_nothing(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run("createtenant", *args)
    assert not Tenant.objects.exists() and not get_user_model().objects.exists()


@pytest.mark.django_db
def test_createapikey_refuses_a_name_too_long():
    slug = run("createtenant", "Acme")[-1]
    with pytest.raises(CommandError, match="at most 100 characters"):
        run("createapikey", "--tenant", slug, "--name", "x" * 101, "--scope", "admin")
    assert not ApiKey.objects.exists()
