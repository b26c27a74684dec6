from celery import current_app
from django.core.management.base import BaseCommand, CommandError

from tenants.tasks import retry_due_webhook_deliveries
from usage.tasks import (
    detect_spend_spikes,
    expire_sessions,
    purge_expired_events,
    sweep_unrecorded_events,
)

JOBS = {
    "record": sweep_unrecorded_events,
    "spikes": detect_spend_spikes,
    # Looked up by name, like the recorder's follow-up: usage does not import budgets.
    "alerts": lambda: current_app.tasks["budgets.tasks.budget_alerts_sweep"](),
    "webhooks": retry_due_webhook_deliveries,
    "sessions": expire_sessions,
    "purge": purge_expired_events,
}


class Command(BaseCommand):
    help = ("Run the periodic jobs Celery beat runs in production, once, in this process: record pending events, "
            "detect spend spikes, check every team budget for alerts, retry due webhooks, expire idle sessions, "
            "purge expired events. For the embedded configuration (no beat there).")

    def add_arguments(self, parser):
        parser.add_argument("jobs", nargs="*", metavar="JOB", help=f"Some of: {', '.join(JOBS)} (default: all).")

    def handle(self, *args, jobs, **options):
        unknown = [job for job in jobs if job not in JOBS]
        if unknown:
            raise CommandError(f"Unknown job {unknown[0]!r}; choose from {', '.join(JOBS)}.")
        for name in jobs or JOBS:
            # Called directly, not through the broker: the job runs here and now.
            result = JOBS[name]()
            self.stdout.write(f"{name}: {result}")
