import pytest
from django.test import Client

from tenants.models import Membership
from tests.factories import MembershipFactory, UserFactory

PASSWORD = "correct-horse-battery"


def member(tenant, role, username):
    user = UserFactory(username=username)
    MembershipFactory(tenant=tenant, user=user, role=role)
    return user


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner(tenant):
    return member(tenant, Membership.Role.OWNER, "olivia")


@pytest.fixture
def admin_user(tenant):
    return member(tenant, Membership.Role.ADMIN, "adam")


@pytest.fixture
def viewer(tenant):
    return member(tenant, Membership.Role.VIEWER, "vera")


@pytest.fixture
def owner_client(owner):
    return signed_in(owner)


@pytest.fixture
def admin_client(admin_user):
    return signed_in(admin_user)


@pytest.fixture
def viewer_client(viewer):
    return signed_in(viewer)


@pytest.fixture
def htmx():
    """Headers of an htmx request (django-htmx reads HX-Request; HX-Target names the swapped element)."""
    def headers(target: str | None = None) -> dict:
        values = {"HTTP_HX_REQUEST": "true"}
        if target:
            values["HTTP_HX_TARGET"] = target
        return values

    return headers


@pytest.fixture(autouse=True)
def _unhashed_static_files(settings):
    """Production settings use whitenoise's manifest storage, which needs `collectstatic` first; the page tests
    render with plain static URLs instead (the manifest itself is whitenoise's and deploy's concern)."""
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
