"""Settings → Members → invitations: the only way into an organisation from the dashboard. An owner makes a
one-time link (shown once, stored as a hash, 7 days); whoever opens it signs in or creates an account and accepts.
No page looks accounts up by username or e-mail, and nothing of one tenant is visible to another."""

import datetime
import logging
import re

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from tenants.keys import hash_key
from tenants.middleware import SESSION_TENANT_KEY
from tenants.models import Invitation, Membership
from tenants.services import invitation_create
from tests.factories import MembershipFactory, UserFactory
from tests.pages.conftest import PASSWORD, member, signed_in

LINK = re.compile(r"http://testserver/invitations/([A-Za-z0-9_-]+)/")
NEW_PASSWORD = "plum-orchard-lantern-42"


def create_link(owner_client, htmx, **data) -> str:
    response = owner_client.post("/settings/members/invitations/", {"role": "viewer", **data},
                                 **htmx("members-panel"))
    assert response.status_code == 200
    return LINK.search(response.content.decode()).group(1)


def invite(tenant, role=Membership.Role.VIEWER, **kwargs) -> tuple[Invitation, str]:
    return invitation_create(tenant=tenant, role=role, **kwargs)


def main_part(response) -> str:
    """The page's content without the per-request CSRF token in <body>'s hx-headers."""
    html = response.content.decode()
    return html[html.index("<main"):html.index("</main>")]


# --- Creating, listing and revoking (owners only) ---------------------------------------------------------

def test_owner_creates_an_invitation_and_sees_the_link_once_and_only_its_hash_is_stored(owner_client, owner,
                                                                                        tenant, htmx):
    response = owner_client.post("/settings/members/invitations/", {"role": "admin", "email": "nina@example.com"},
                                 **htmx("members-panel"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Copy the link now: it will not be shown again." in html
    token = LINK.search(html).group(1)
    assert len(token) >= 43  # secrets.token_urlsafe(32)

    invitation = Invitation.objects.get(tenant=tenant)
    assert invitation.token_hash == hash_key(token)
    assert token not in {str(value) for value in Invitation.objects.values().get().values()}
    assert invitation.role == "admin" and invitation.email == "nina@example.com"
    assert invitation.created_by == owner
    expected_expiry = timezone.now() + datetime.timedelta(days=7)
    assert abs(invitation.expires_at - expected_expiry) < datetime.timedelta(minutes=1)

    page = owner_client.get("/settings/members/").content.decode()
    assert token not in page and not LINK.search(page)
    row = page[page.index(f'id="invitation-{invitation.pk}"'):]
    row = row[:row.index("</tr>")]
    assert "Admin" in row and "nina@example.com" in row and "olivia" in row


def test_with_https_on_the_link_is_https_even_when_the_proxy_did_not_say_so(owner_client, tenant, htmx, settings):
    settings.HTTPS = True
    response = owner_client.post("/settings/members/invitations/", {"role": "viewer"}, **htmx("members-panel"))
    assert re.search(r"https://testserver/invitations/[A-Za-z0-9_-]+/", response.content.decode())


def test_without_htmx_the_whole_members_page_comes_back_with_the_link(owner_client, tenant):
    response = owner_client.post("/settings/members/invitations/", {"role": "viewer"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Settings</h1>" in html and LINK.search(html)


def test_a_bad_role_or_email_is_a_form_error_and_creates_nothing(owner_client, tenant, htmx):
    for data in ({"role": "superuser"}, {"role": "viewer", "email": "not-an-email"}):
        response = owner_client.post("/settings/members/invitations/", data, **htmx("members-panel"))
        assert response.status_code == 400
        assert b"errorlist" in response.content and not LINK.search(response.content.decode())
    assert not Invitation.objects.exists()


def test_owner_revokes_a_pending_invitation_and_its_link_stops_working(owner_client, tenant, htmx):
    invitation, token = invite(tenant, email="gone@example.com")
    response = owner_client.post(f"/settings/members/invitations/{invitation.pk}/revoke/", **htmx("members-panel"))
    assert response.status_code == 200
    assert b"gone@example.com" not in response.content and b"No pending invitations." in response.content
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    assert Client().get(f"/invitations/{token}/").status_code == 404
    # Without htmx: back to the Members page, with a message.
    other, _ = invite(tenant)
    response = owner_client.post(f"/settings/members/invitations/{other.pk}/revoke/")
    assert response.status_code == 302 and response["Location"] == "/settings/members/"


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_admins_and_viewers_cannot_create_or_revoke_invitations(tenant, owner, role):
    client = signed_in(member(tenant, role, f"someone-{role}"))
    invitation, _ = invite(tenant)
    response = client.post("/settings/members/invitations/", {"role": "owner"})
    assert response.status_code == 403 and b"Only an owner" in response.content
    assert client.post(f"/settings/members/invitations/{invitation.pk}/revoke/").status_code == 403
    assert client.get("/settings/members/").status_code == 403
    assert Invitation.objects.count() == 1
    invitation.refresh_from_db()
    assert invitation.revoked_at is None


def test_another_tenants_owner_cannot_revoke_an_invitation_or_see_it(owner, tenant, other_tenant):
    invitation, _ = invite(tenant, email="alice-secret@example.com")
    bob = signed_in(member(other_tenant, Membership.Role.OWNER, "bob"))
    assert bob.post(f"/settings/members/invitations/{invitation.pk}/revoke/").status_code == 404
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    assert b"alice-secret@example.com" not in bob.get("/settings/members/").content


@pytest.mark.parametrize("change", ["removed", "demoted"])
def test_an_owner_removed_or_demoted_loses_the_links_they_made(owner, tenant, change):
    """A link kept by an owner who is removed (or made a viewer) would let them, or anyone they give it to, back in
    as an owner."""
    second = member(tenant, Membership.Role.OWNER, "oscar")
    _, token = invite(tenant, role=Membership.Role.OWNER, created_by=second)
    _, olivias_token = invite(tenant, role=Membership.Role.VIEWER, created_by=owner)
    membership = Membership.objects.get(tenant=tenant, user=second)
    url = f"/settings/members/{membership.pk}/" + ("remove/" if change == "removed" else "role/")
    response = signed_in(owner).post(url, {} if change == "removed" else {"role": "viewer"})
    assert response.status_code in (200, 302), response.content[:300]
    assert Client().get(f"/invitations/{token}/").status_code == 404
    assert Client().get(f"/invitations/{olivias_token}/", follow=True).status_code == 200  # another owner's: kept


def test_invitation_steps_are_logged_without_the_token(owner_client, tenant, htmx, caplog):
    caplog.set_level(logging.INFO, logger="tenants.services")
    token = create_link(owner_client, htmx, role="admin")
    invitation = Invitation.objects.get()
    signed_in(UserFactory(username="nina")).post(f"/invitations/{token}/")
    second, _ = invite(tenant)
    owner_client.post(f"/settings/members/invitations/{second.pk}/revoke/")
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("invitation created") and f"invitation_id={invitation.pk}" in m for m in messages)
    assert any(m.startswith("invitation accepted") and "role=admin" in m for m in messages)
    assert any(m.startswith("invitation revoked") and f"invitation_id={second.pk}" in m for m in messages)
    assert not any(token in m for m in messages)


# --- Accepting while signed in ----------------------------------------------------------------------------

def test_a_signed_in_user_of_another_organisation_accepts_and_is_switched_to_it(owner, tenant, other_tenant):
    invitation, token = invite(tenant, role=Membership.Role.ADMIN)
    nina = member(other_tenant, Membership.Role.OWNER, "nina")
    client = signed_in(nina)
    page = client.get(f"/invitations/{token}/", follow=True)
    assert page.status_code == 200 and page.redirect_chain == [("/invitations/accept/", 302)]
    html = page.content.decode()
    assert "Join Alice Org" in html and "<strong>admin</strong>" in html and ">Accept</button>" in html
    assert "Signed in as <strong>nina</strong>" in html
    assert "no-cache" in page["Cache-Control"]

    response = client.post("/invitations/accept/", {"invitation": invitation.pk})
    assert response.status_code == 302 and response["Location"] == "/"
    assert Membership.objects.get(tenant=tenant, user=nina).role == "admin"
    assert Membership.objects.get(tenant=other_tenant, user=nina).role == "owner"
    assert client.session[SESSION_TENANT_KEY] == tenant.pk
    overview = client.get("/").content.decode()
    assert "You joined Alice Org as admin." in overview
    assert '<span class="tenant-name">Alice Org</span>' in overview
    invitation.refresh_from_db()
    assert invitation.accepted_by == nina and invitation.accepted_at is not None
    # Single use.
    assert signed_in(UserFactory(username="later")).post(f"/invitations/{token}/").status_code == 404
    assert not Membership.objects.filter(tenant=tenant, user__username="later").exists()


def test_a_user_without_any_organisation_accepts(owner, tenant):
    _, token = invite(tenant)
    loner = UserFactory(username="loner")
    client = signed_in(loner)
    assert client.get("/").status_code == 403  # "No organisation yet"
    assert client.post(f"/invitations/{token}/").status_code == 302
    assert Membership.objects.get(tenant=tenant, user=loner).role == "viewer"
    assert client.get("/").status_code == 200


def test_an_existing_member_is_told_so_keeps_their_role_and_the_link_stays_open(owner_client, owner, tenant,
                                                                                  admin_user):
    invitation, token = invite(tenant, role=Membership.Role.VIEWER)
    client = signed_in(admin_user)
    response = client.post(f"/invitations/{token}/", follow=True)
    assert "You are already a member of Alice Org (admin); your role is unchanged." in response.content.decode()
    assert Membership.objects.get(tenant=tenant, user=admin_user).role == "admin"
    invitation.refresh_from_db()
    assert invitation.accepted_at is None
    # The owner opening their own link does not use it up either.
    owner_client.post(f"/invitations/{token}/")
    assert Membership.objects.get(tenant=tenant, user=owner).role == "owner"
    assert Client().get(f"/invitations/{token}/", follow=True).status_code == 200


def test_accepting_needs_the_csrf_token(owner, tenant):
    _, token = invite(tenant)
    nina = UserFactory(username="nina")
    client = Client(enforce_csrf_checks=True)
    client.force_login(nina)
    response = client.post(f"/invitations/{token}/")
    assert response.status_code == 403
    assert not Membership.objects.filter(user=nina).exists()
    client.get(f"/invitations/{token}/")
    invitation = Invitation.objects.get()
    assert client.post("/invitations/accept/", {"invitation": invitation.pk}).status_code == 403
    assert not Membership.objects.filter(user=nina).exists()
    response = client.post("/invitations/accept/", {"invitation": invitation.pk,
                                                    "csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    assert response.status_code == 302
    assert Membership.objects.filter(tenant=tenant, user=nina).exists()


# --- Not signed in: sign in and come back, or create an account ------------------------------------------

def test_signing_in_from_the_link_comes_back_to_it(owner, tenant):
    """The link leads to /invitations/accept/, which keeps the token in the session (across signing in): the token
    is not repeated in the address bar, the sign-in link's ?next=, Referer headers or later requests' logs."""
    invitation, token = invite(tenant, role=Membership.Role.ADMIN)
    UserFactory(username="nina")
    client = Client()
    opened = client.get(f"/invitations/{token}/")
    assert opened.status_code == 302 and opened["Location"] == "/invitations/accept/"
    html = client.get("/invitations/accept/").content.decode()
    assert "Join Alice Org" in html and "Create an account" in html and token not in html
    login_url = "/login/?next=/invitations/accept/"
    assert f'href="{login_url}"' in html
    response = client.post(login_url, {"username": "nina", "password": PASSWORD, "next": "/invitations/accept/"})
    assert response.status_code == 302 and response["Location"] == "/invitations/accept/"
    assert ">Accept</button>" in client.get("/invitations/accept/").content.decode()
    assert client.post("/invitations/accept/", {"invitation": invitation.pk}).status_code == 302
    assert Membership.objects.get(tenant=tenant, user__username="nina").role == "admin"
    assert token not in str(client.session.items())  # the session kept its hash only, and no longer keeps it
    # Used: neither the session nor the link opens it again.
    assert client.get("/invitations/accept/").status_code == 404
    assert client.get(f"/invitations/{token}/").status_code == 404


def test_the_accept_page_without_a_link_opened_in_this_browser_asks_to_open_it(owner, tenant):
    """Another browser, blocked cookies, an hour gone: the link may still work, so the page says to open it (not
    that it is invalid); nothing is accepted."""
    invitation, token = invite(tenant)
    response = Client().get("/invitations/accept/")
    assert response.status_code == 404 and "Open your invitation link" in response.content.decode()
    nina = signed_in(UserFactory(username="nina"))
    assert nina.post("/invitations/accept/", {"invitation": invitation.pk}).status_code == 404
    nina.get(f"/invitations/{token}/")
    with time_machine.travel(timezone.now() + datetime.timedelta(minutes=61)):
        assert "Open your invitation link" in nina.get("/invitations/accept/").content.decode()
        assert nina.post("/invitations/accept/", {"invitation": invitation.pk}).status_code == 404
    assert not Membership.objects.filter(user__username="nina").exists()
    assert Client().head(f"/invitations/{token}/").status_code == 302


def test_accept_joins_the_invitation_on_screen_not_a_link_opened_since(owner, tenant, other_tenant):
    """Two links in two tabs (or a site sending the browser through its own link): the Accept on screen for Alice
    Org must not join the organisation of the link opened last."""
    alices, alice_token = invite(tenant, role=Membership.Role.VIEWER)
    _, bobs_token = invite(other_tenant, role=Membership.Role.OWNER)
    client = signed_in(UserFactory(username="nina"))
    assert "Join Alice Org" in client.get(f"/invitations/{alice_token}/", follow=True).content.decode()
    client.get(f"/invitations/{bobs_token}/")  # the other tab
    response = client.post("/invitations/accept/", {"invitation": alices.pk}, follow=True)
    html = response.content.decode()
    assert "Another invitation link was opened in this browser since" in html and "Join Bob Org" in html
    assert not Membership.objects.filter(user__username="nina").exists()
    anonymous = Client()
    anonymous.get(f"/invitations/{alice_token}/")
    anonymous.get(f"/invitations/{bobs_token}/")
    anonymous.post("/invitations/accept/", {"invitation": alices.pk, "username": "nora", "email": "n@example.com",
                                            "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert not get_user_model().objects.filter(username="nora").exists()


def test_signing_out_from_the_invitation_keeps_it_open_for_whoever_signs_in(owner, tenant):
    """"Not you? Sign out": the link opened stays open after signing out (which empties the session), and no
    address carries the token."""
    _, token = invite(tenant)
    client = signed_in(UserFactory(username="nina"))
    client.get(f"/invitations/{token}/")
    html = client.get("/invitations/accept/").content.decode()
    assert 'name="next" value="/invitations/accept/"' in html and token not in html
    response = client.post("/logout/", {"next": "/invitations/accept/"})
    assert response["Location"] == "/invitations/accept/"
    assert "Create an account" in client.get("/invitations/accept/").content.decode()


def test_a_new_person_creates_an_account_from_the_link_and_is_signed_in_as_a_member(owner, tenant):
    _, token = invite(tenant, role=Membership.Role.ADMIN, email="nina@example.com")
    client = Client()
    form = client.get(f"/invitations/{token}/", follow=True).content.decode()
    assert 'value="nina@example.com"' in form  # the owner's note, as a starting value
    assert 'action="/invitations/accept/"' in form
    invitation = Invitation.objects.get()
    response = client.post("/invitations/accept/", {"invitation": invitation.pk, "username": "nina",
                                                    "email": "nina@example.com", "password1": NEW_PASSWORD,
                                                    "password2": NEW_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    nina = get_user_model().objects.get(username="nina")
    assert nina.email == "nina@example.com" and nina.check_password(NEW_PASSWORD)
    assert Membership.objects.get(tenant=tenant, user=nina).role == "admin"
    assert client.session[SESSION_TENANT_KEY] == tenant.pk
    overview = client.get("/")
    assert overview.status_code == 200
    assert "Welcome, nina: you joined Alice Org as admin." in overview.content.decode()
    assert Invitation.objects.get().accepted_by == nina
    assert Client().get(f"/invitations/{token}/").status_code == 404


@pytest.mark.parametrize(("data", "error"), [
    ({"password1": NEW_PASSWORD, "password2": NEW_PASSWORD + "x"}, "The two password fields didn"),
    ({"password1": "password", "password2": "password"}, "This password is too common."),
    ({"password1": "nina-nina", "password2": "nina-nina", "username": "nina-nina"}, "too similar"),
    ({"email": "not-an-email"}, "Enter a valid email address."),
    ({"username": ""}, "This field is required."),
])
def test_account_creation_checks_the_form_and_the_password_rules(owner, tenant, data, error):
    _, token = invite(tenant)
    body = {"username": "nina", "email": "nina@example.com", "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD, **data}
    response = Client().post(f"/invitations/{token}/", body)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Membership.objects.filter(tenant=tenant).exclude(user=owner).exists()
    assert Invitation.objects.get().accepted_at is None


def test_a_taken_username_is_refused_and_the_link_stays_usable(owner, tenant):
    _, token = invite(tenant)
    response = Client().post(f"/invitations/{token}/", {"username": "OLIVIA", "email": "x@example.com",
                                                        "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 400
    assert get_user_model().objects.filter(username__iexact="olivia").count() == 1
    assert Invitation.objects.get().accepted_at is None


def test_trying_usernames_through_a_link_is_throttled_per_address(owner, tenant):
    """ "That username already exists" tells whether an account exists: an owner with a link of their own must not
    be able to try names without end. After 20 refused attempts from an address nothing more is checked."""
    _, token = invite(tenant)
    prober = Client(REMOTE_ADDR="203.0.113.30")
    body = {"email": "x@example.com", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    for n in range(20):
        assert prober.post(f"/invitations/{token}/", {**body, "username": f"guess{n}", "password2": "x"}
                           ).status_code == 400
    blocked = prober.post(f"/invitations/{token}/", {**body, "username": "olivia"}).content.decode()
    assert "Too many refused attempts" in blocked and "already exists" not in blocked
    response = Client(REMOTE_ADDR="203.0.113.31").post(f"/invitations/{token}/", {**body, "username": "nina"})
    assert response.status_code == 302
    assert Membership.objects.filter(tenant=tenant, user__username="nina").exists()


def test_creating_an_account_needs_the_csrf_token(owner, tenant):
    _, token = invite(tenant)
    response = Client(enforce_csrf_checks=True).post(f"/invitations/{token}/", {
        "username": "nina", "email": "nina@example.com", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 403
    assert not get_user_model().objects.filter(username="nina").exists()


# --- Links that do not work: one answer for all ----------------------------------------------------------

def test_expired_used_revoked_and_unknown_links_all_get_the_same_not_found_page(owner, tenant):
    expired, expired_token = invite(tenant, role=Membership.Role.OWNER)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    used, used_token = invite(tenant, role=Membership.Role.OWNER)
    signed_in(UserFactory(username="first")).post(f"/invitations/{used_token}/")
    revoked, revoked_token = invite(tenant, role=Membership.Role.OWNER)
    Invitation.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    tokens = [expired_token, used_token, revoked_token, "garbage", "x" * 5000, "%ff%fe", "ünïcødé", expired.token_hash]

    stranger = UserFactory(username="stranger")
    for client in (Client(), signed_in(stranger)):
        pages = set()
        for token in tokens:
            for method in ("get", "post"):
                data = {"username": "mallory", "email": "m@example.com", "password1": NEW_PASSWORD,
                        "password2": NEW_PASSWORD} if method == "post" else None
                response = getattr(client, method)(f"/invitations/{token}/", data)
                assert response.status_code == 404, (token[:20], method)
                pages.add(main_part(response))
        assert len(pages) == 1
        page = pages.pop()
        assert "This invitation link is not valid" in page and "Alice Org" not in page
    assert set(Membership.objects.filter(tenant=tenant).values_list("user__username", flat=True)) == {"olivia",
                                                                                                     "first"}
    assert not get_user_model().objects.filter(username="mallory").exists()


def test_an_invitation_that_expires_between_reading_and_accepting_is_not_found(owner, tenant, monkeypatch):
    from tenants import views

    invitation, token = invite(tenant)
    real = views.invitation_by_token

    def read_then_expire(*, raw_token):
        found = real(raw_token=raw_token)
        Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now())
        return found

    monkeypatch.setattr(views, "invitation_by_token", read_then_expire)
    assert signed_in(UserFactory(username="slow")).post(f"/invitations/{token}/").status_code == 404
    response = Client().post(f"/invitations/{token}/", {"username": "slower", "email": "s@example.com",
                                                        "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 404
    # No account is left behind by a link that no longer works.
    assert not get_user_model().objects.filter(username="slower").exists()
    assert not Membership.objects.filter(tenant=tenant).exclude(user=owner).exists()


# --- Nothing reveals whether an account exists -------------------------------------------------------------

def test_the_old_add_by_username_or_email_path_is_gone(owner_client, tenant, other_tenant, htmx):
    bob = UserFactory(username="bob", email="bob@bob.example")
    MembershipFactory(tenant=other_tenant, user=bob, role=Membership.Role.OWNER)
    for identifier in ("bob", "bob@bob.example", "ghost", "ghost@nowhere.example"):
        response = owner_client.post("/settings/members/", {"identifier": identifier, "role": "viewer"},
                                     **htmx("members-panel"))
        assert response.status_code == 405
    assert not Membership.objects.filter(tenant=tenant, user=bob).exists()
    page = owner_client.get("/settings/members/").content.decode()
    assert 'name="identifier"' not in page and "Username or e-mail" not in page
    assert "bob@bob.example" not in page


def test_inviting_an_existing_or_unknown_email_answers_the_same_and_adds_no_one(owner_client, tenant, other_tenant,
                                                                              htmx):
    bob = UserFactory(username="bob", email="bob@bob.example")
    MembershipFactory(tenant=other_tenant, user=bob, role=Membership.Role.OWNER)
    cards = []
    for email in ("bob@bob.example", "ghost@nowhere.example"):
        html = owner_client.post("/settings/members/invitations/", {"role": "viewer", "email": email},
                                 **htmx("members-panel")).content.decode()
        card = html[html.index('id="new-invitation"'):]
        card = card[:card.index("</section>")].replace(email, "EMAIL")
        cards.append(re.sub(r"until [^<]* UTC", "until …", LINK.sub("LINK", card)))
        assert ">bob<" not in html
    assert cards[0] == cards[1]
    assert not Membership.objects.filter(tenant=tenant, user=bob).exists()
