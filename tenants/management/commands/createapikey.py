from django.core.management.base import BaseCommand, CommandError

from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a tenant. Prints the full key alone as the last line (it is not stored)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--name", required=True, help="What the key is for, e.g. 'ci-agents'.")
        parser.add_argument("--scope", required=True, choices=ApiKey.Scope.values,
                            help="telemetry (ingest and budget-check only, for agents) or admin (every endpoint).")

    def handle(self, *args, tenant, name, scope, **options):
        try:
            tenant_obj = Tenant.objects.get(slug=tenant)
        except Tenant.DoesNotExist:
            raise CommandError(f"No tenant with slug {tenant!r}. List them in the admin or create one with "
                               f"`createtenant`.") from None
        if not name.strip():
            raise CommandError("--name must not be empty.")
        limit = ApiKey._meta.get_field("name").max_length
        if len(name.strip()) > limit:
            raise CommandError(f"--name must be at most {limit} characters (got {len(name.strip())}).")
        key, raw = api_key_create(tenant=tenant_obj, name=name, scope=scope)
        self.stderr.write(f"Created {scope} key {key.prefix}… for {tenant_obj.name}. Store it now: it is not "
                          f"shown again.")
        self.stdout.write(raw)
