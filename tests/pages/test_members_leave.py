"""Settings → Members, "Add a member": someone already in the organisation is refused with a pointer to the role
selector (never a 500, never a silent role change); the last owner stays an owner."""

from tenants.models import Membership
from tests.factories import MembershipFactory, UserFactory


def test_the_only_owner_adding_themselves_as_viewer_gets_a_form_error_not_a_500(owner_client, owner, tenant,
                                                                                 htmx):
    for role in ("viewer", "admin"):
        response = owner_client.post("/settings/members/", {"identifier": "olivia", "role": role},
                                     **htmx("members-panel"))
        assert response.status_code == 400
        assert b"olivia is already a member (owner)" in response.content
        assert b"Change their role with the selector" in response.content
    assert Membership.objects.get(tenant=tenant, user=owner).role == "owner"


def test_adding_an_existing_member_with_the_default_role_changes_nothing(owner_client, tenant, htmx):
    admin = MembershipFactory(tenant=tenant, user=UserFactory(username="adam"), role=Membership.Role.ADMIN)
    response = owner_client.post("/settings/members/", {"identifier": "ADAM", "role": "viewer"},
                                 **htmx("members-panel"))
    assert response.status_code == 400 and b"adam is already a member (admin)" in response.content
    admin.refresh_from_db()
    assert admin.role == "admin"


def test_a_member_of_another_organisation_can_still_be_added(owner_client, tenant, other_tenant, htmx):
    bob = UserFactory(username="bob")
    MembershipFactory(tenant=other_tenant, user=bob, role=Membership.Role.OWNER)
    response = owner_client.post("/settings/members/", {"identifier": "bob", "role": "viewer"},
                                 **htmx("members-panel"))
    assert response.status_code == 200
    assert Membership.objects.get(tenant=tenant, user=bob).role == "viewer"
    assert Membership.objects.get(tenant=other_tenant, user=bob).role == "owner"


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
