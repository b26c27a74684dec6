from django.core.management.base import BaseCommand

from usage.services.recording import month_spend_rebuild


class Command(BaseCommand):
    help = ("Recompute the per-team month totals the budget checks read (MonthlyTeamSpend) from the daily roll-ups. "
            "Run it once after upgrading to a version that adds them if workers on the old version were still "
            "recording while `migrate` ran. Safe to run at any time: recording waits for it, nothing is lost.")

    def handle(self, *args, **options):
        count = month_spend_rebuild()
        self.stdout.write(self.style.SUCCESS(f"Rebuilt {count} month totals from the daily roll-ups."))
