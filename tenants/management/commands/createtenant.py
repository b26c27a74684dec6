from django.core.management.base import BaseCommand, CommandError

from tenants.services import tenant_create, user_create_owner


class Command(BaseCommand):
    help = "Create a tenant (and optionally its owner login). Prints the tenant slug as the last line."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Display name of the organisation, e.g. 'Acme Inc'.")
        parser.add_argument("--slug", help="URL-safe identifier (default: derived from the name).")
        parser.add_argument("--admin-username", help="Create (or reuse) this user as the tenant's owner.")
        parser.add_argument("--admin-password", help="Password for --admin-username.")
        parser.add_argument("--admin-email", default="", help="E-mail for --admin-username.")

    def handle(self, *args, name, slug, admin_username, admin_password, admin_email, **options):
        if not name.strip():
            raise CommandError("Tenant name must not be empty.")
        if bool(admin_username) != bool(admin_password):
            raise CommandError("--admin-username and --admin-password go together.")
        tenant = tenant_create(name=name, slug=slug)
        if admin_username:
            user_create_owner(tenant=tenant, username=admin_username, password=admin_password, email=admin_email)
            self.stderr.write(f"Owner {admin_username!r} can sign in to tenant {tenant.name!r}.")
        self.stdout.write(tenant.slug)
