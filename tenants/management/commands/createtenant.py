from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify

from agentwatch_site.errors import ApiError
from tenants.models import Tenant
from tenants.services import tenant_create, user_create_owner

SLUG_MAX = 50  # what tenant_create keeps of a slug


def _checked(model, field_name: str, value: str, option: str) -> None:
    """The field's own rules (length, characters), as a one-line error instead of a database traceback."""
    try:
        model._meta.get_field(field_name).clean(value, None)
    except ValidationError as exc:
        raise CommandError(f"{option}: {' '.join(exc.messages)}") from None


class Command(BaseCommand):
    help = ("Create a tenant (and optionally its owner login; the owner then invites everyone else with a link from "
            "Settings → Members). Prints the tenant slug as the last line.")

    def add_arguments(self, parser):
        parser.add_argument("name", help="Display name of the organisation, e.g. 'Acme Inc'.")
        parser.add_argument("--slug", help="URL-safe identifier (default: derived from the name, with -2, -3 … "
                                           "added if taken). An explicit slug that is taken is an error.")
        parser.add_argument("--admin-username", help="Create this user as the tenant's owner (an existing user "
                                                     "becomes an owner and keeps their password).")
        parser.add_argument("--admin-password", help="Password for a new --admin-username (checked against the "
                                                     "password rules).")
        parser.add_argument("--admin-email", default="", help="E-mail for --admin-username.")
        parser.add_argument("--timezone", default="UTC",
                            help="IANA time zone of the organisation's calendar, e.g. Europe/Berlin (default UTC): "
                                 "the months of budgets, alerts and the CSV export, the days of reports and charts. "
                                 "Set it now: days already recorded keep the zone they were recorded in.")

    def handle(self, *args, name, slug, admin_username, admin_password, admin_email, timezone, **options):
        if not name.strip():
            raise CommandError("Tenant name must not be empty.")
        _checked(Tenant, "timezone", timezone, "--timezone")
        _checked(Tenant, "name", name.strip(), "name")
        if slug is not None and (slugify(slug) != slug or not 0 < len(slug) <= SLUG_MAX):
            raise CommandError(f"--slug {slug[:80]!r} is not a slug: up to {SLUG_MAX} lower-case letters, digits and "
                               f"hyphens, e.g. {slugify(slug)[:SLUG_MAX] or 'acme-inc'!r}.")
        if admin_password and not admin_username:
            raise CommandError("--admin-password needs --admin-username.")
        existing_user = None
        if admin_username:
            user_model = get_user_model()
            _checked(user_model, user_model.USERNAME_FIELD, admin_username, "--admin-username")
            if admin_email:
                _checked(user_model, "email", admin_email, "--admin-email")
            existing_user = get_user_model().objects.filter(username=admin_username).first()
            if existing_user is None and not admin_password:
                raise CommandError(f"No user {admin_username!r} yet: give --admin-password to create one.")
            if existing_user is None:
                try:
                    validate_password(admin_password, user=get_user_model()(username=admin_username,
                                                                            email=admin_email))
                except ValidationError as exc:
                    raise CommandError(f"--admin-password is too weak: {' '.join(exc.messages)}") from None
        # The tenant and its owner together: a failure leaves no tenant without one.
        with transaction.atomic():
            try:
                tenant = tenant_create(name=name, slug=slug, time_zone=timezone)
            except ApiError as exc:
                raise CommandError(exc.message) from None
            if admin_username:
                user_create_owner(tenant=tenant, username=admin_username, password=admin_password,
                                  email=admin_email)
        if admin_username:
            if existing_user is None:
                self.stderr.write(f"Owner {admin_username!r} can sign in to tenant {tenant.name!r} and invite members "
                                  f"from Settings → Members.")
            else:
                ignored = [option for option, given in (("--admin-password", admin_password),
                                                        ("--admin-email", admin_email)) if given]
                unused = f" ({' and '.join(ignored)} {'was' if len(ignored) == 1 else 'were'} not used)" if ignored \
                    else ""
                self.stderr.write(f"Existing user {admin_username!r} is now an owner of tenant {tenant.name!r}; "
                                  f"their password is unchanged{unused}.")
        self.stdout.write(tenant.slug)
