from django.core.management.base import BaseCommand, CommandError

from tenants.models import Tenant
from usage.selectors import quarantined_event_list
from usage.services.ingest import recorder_wake
from usage.services.recording import events_quarantine_retry

SHOWN = 50


class Command(BaseCommand):
    help = ("List the usage events set aside (quarantined) because recording them failed, with the error; "
            "--retry puts them back in the queue once the cause is fixed (they are then recorded and counted "
            "once, like any pending event).")

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant (slug)")
        parser.add_argument("--retry", action="store_true", help="put them back in the recording queue")

    def handle(self, *args, tenant=None, retry=False, **options):
        scope = None
        if tenant is not None:
            scope = Tenant.objects.filter(slug=tenant).first()
            if scope is None:
                raise CommandError(f"No tenant with slug {tenant!r}.")
        events = quarantined_event_list(tenant=scope).select_related("tenant").order_by("id")
        count = events.count()
        if not count:
            self.stdout.write(self.style.SUCCESS("No quarantined events."))
            return
        for event in events[:SHOWN]:
            self.stdout.write(f"{event.tenant.slug}  id={event.pk}  event_id={event.event_id}  model={event.model}  "
                              f"received {event.received_at:%Y-%m-%d %H:%M:%S}Z  {event.record_error}")
        if count > SHOWN:
            self.stdout.write(f"… and {count - SHOWN} more.")
        if retry:
            requeued = events_quarantine_retry(tenant=scope)
            recorder_wake()
            self.stdout.write(self.style.SUCCESS(
                f"Put {requeued} event{'s' if requeued != 1 else ''} back in the recording queue; the next "
                f"recording run (within seconds, or the beat sweep) records them."))
        else:
            self.stdout.write(f"{count} quarantined event{'s' if count != 1 else ''}. Fix the cause (see the "
                              f"worker log), then run again with --retry.")
