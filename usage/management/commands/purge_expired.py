import signal
import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from agentwatch_site.errors import ApiError
from usage.services.retention import PURGE_BATCH_SIZE, PURGE_PAUSE_RATIO, STOP_SIGNALS, purge_expired


class Command(BaseCommand):
    help = ("Delete usage events and finished webhook deliveries older than each tenant's retention_days, in "
            "bounded batches, and session states idle for 24 hours. Daily roll-ups, alerts and anomalies are kept. "
            "Exits non-zero (and changes nothing) if another purge is running.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=int, default=PURGE_BATCH_SIZE,
                            help=f"Rows per DELETE statement (default {PURGE_BATCH_SIZE}).")
        parser.add_argument("--pause-ratio", type=float, default=PURGE_PAUSE_RATIO,
                            help="After each batch, rest this many times as long as the batch took (default "
                                 f"{PURGE_PAUSE_RATIO:g}; 0 = flat out).")

    def handle(self, *args, dry_run, batch_size, pause_ratio, **options):
        if not 1 <= batch_size <= 50_000:
            raise CommandError("--batch-size must be between 1 and 50000.")
        if not 0 <= pause_ratio <= 100:
            raise CommandError("--pause-ratio must be between 0 and 100.")
        # SIGTERM (systemd, Kubernetes, `kill`) and SIGHUP unwind the purge like Ctrl-C does, so its lock is released
        # on the way out: killed outright, the lock kept the next run (beat's daily one too) out for 15 minutes.
        # (Signal handlers belong to the main thread: called from another, the purge runs without them.)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS}
        try:
            run = purge_expired(dry_run=dry_run, batch_size=batch_size, pause_ratio=pause_ratio,
                                progress=self.stdout.write)
        except _Stopped as stopped:
            raise CommandError(f"Stopped by {signal.Signals(stopped.signum).name}; each batch was committed on its "
                               "own, so run the purge again to go on from where it stopped.",
                               returncode=128 + stopped.signum) from None
        except ApiError as exc:
            raise CommandError(exc.message) from None
        except (OperationalError, InterfaceError) as exc:
            # Each batch commits on its own: what was deleted stays deleted, and a new run goes on from there.
            raise CommandError(f"Lost the database ({str(exc).strip()[:200]}); run the purge again to go on "
                               f"from where it stopped.") from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {run.events_deleted} events and {run.sessions_deleted} idle session states.")
        for slug, row in sorted(run.per_tenant.items()):
            self.stdout.write(f"  {slug}: {row['events']} events and {row.get('webhook_deliveries', 0)} webhook "
                              f"deliveries older than {row['cutoff'][:10]}")


class _Stopped(KeyboardInterrupt):
    """Raised in the purge by a stop signal. As a KeyboardInterrupt, no `except Exception` on the way swallows it,
    and psycopg cancels a statement it interrupts on the server instead of leaving the connection busy."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    for other in STOP_SIGNALS:  # once: a second signal must not interrupt the unwinding (and the lock's release)
        signal.signal(other, signal.SIG_IGN)
    raise _Stopped(signum)
