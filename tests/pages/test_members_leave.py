"""Settings → Members: an owner who leaves or steps down is sent on. (People join by invitation:
tests/pages/test_invitations.py.)"""

from tenants.models import Membership
from tests.factories import MembershipFactory, UserFactory


def test_an_owner_who_leaves_or_steps_down_is_taken_to_the_overview(owner_client, owner, tenant, htmx):
    """Members is owner-only: after removing themselves (or becoming an admin) the owner is sent on, not shown
    the members panel of an organisation they can no longer manage."""
    second = UserFactory(username="sam")
    MembershipFactory(tenant=tenant, user=second, role=Membership.Role.OWNER)
    mine = Membership.objects.get(tenant=tenant, user=owner)
    response = owner_client.post(f"/settings/members/{mine.pk}/role/", {"role": "admin"}, **htmx())
    assert response.status_code == 200 and response["HX-Redirect"] == "/"
    assert Membership.objects.get(pk=mine.pk).role == "admin"
    Membership.objects.filter(pk=mine.pk).update(role=Membership.Role.OWNER)
    response = owner_client.post(f"/settings/members/{mine.pk}/remove/")
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Membership.objects.filter(pk=mine.pk).exists()
    assert "You left" in owner_client.get("/").content.decode()
