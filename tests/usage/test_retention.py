"""Retention purge: events older than the tenant's retention_days go, in batches; roll-ups stay."""

import datetime
import subprocess
import sys
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum
from django.utils import timezone

from tests.conftest import ROOT, requires_production, subprocess_env
from usage.models import DailySpend, HourlySpend, PurgeRun, SessionState, UsageEvent
from usage.services.retention import purge_lock
from usage.tasks import expire_sessions, purge_expired_events


def days_ago(days: float) -> str:
    return (timezone.now() - datetime.timedelta(days=days)).isoformat()


def ingest(api, *ages_in_days, team="search"):
    events = [{"model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100, "team": team,
               "timestamp": days_ago(age), "session_id": f"s-{n}"} for n, age in enumerate(ages_in_days)]
    assert api.post("/v1/ingest", {"events": events}, format="json").status_code == 202


def totals(tenant):
    daily = DailySpend.objects.filter(tenant=tenant).aggregate(events=Sum("events"), cost=Sum("cost_usd"))
    hourly = HourlySpend.objects.filter(tenant=tenant).aggregate(events=Sum("events"), cost=Sum("cost_usd"))
    days = sorted(DailySpend.objects.filter(tenant=tenant).values_list("day", "events", "cost_usd"))
    return daily, hourly, days


def purge(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("purge_expired", *args, stdout=out)
    return out.getvalue()


def test_expired_events_go_newer_stay_and_roll_ups_are_unchanged(tenant, other_tenant, telemetry_api,
                                                                  other_admin_api, recording):
    tenant.retention_days = 30
    tenant.save()
    ingest(telemetry_api, 45, 31, 29, 1)
    ingest(other_admin_api, 45)  # default retention 90 days
    recording()
    before = totals(tenant)
    assert before[0]["events"] == 4
    output = purge()
    assert UsageEvent.objects.filter(tenant=tenant).count() == 2
    assert all(e.timestamp > timezone.now() - datetime.timedelta(days=30) for e in UsageEvent.objects.filter(
        tenant=tenant))
    assert UsageEvent.objects.filter(tenant=other_tenant).count() == 1
    # Spend history survives: the daily and hourly roll-ups of the purged days are untouched.
    assert totals(tenant) == before
    assert before[0]["cost"] == Decimal("0.0132")
    assert "alice" in output and "Deleted 2 events" in output
    run = PurgeRun.objects.get()
    assert run.events_deleted == 2 and run.dry_run is False and run.finished_at is not None
    assert run.per_tenant["alice"]["events"] == 2 and run.per_tenant["bob"]["events"] == 0


def test_dry_run_deletes_nothing(tenant, telemetry_api, recording):
    tenant.retention_days = 7
    tenant.save()
    ingest(telemetry_api, 10, 9, 1)
    recording()
    output = purge("--dry-run")
    assert "Would delete 2 events" in output
    assert UsageEvent.objects.filter(tenant=tenant).count() == 3
    run = PurgeRun.objects.get()
    assert run.dry_run is True and run.events_deleted == 2


def test_purge_works_in_small_batches(tenant, telemetry_api, recording):
    tenant.retention_days = 7
    tenant.save()
    ingest(telemetry_api, 20, 19, 18, 17, 16, 15, 2)
    recording()
    purge("--batch-size", "2")
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1


def test_unrecorded_events_are_never_purged(tenant, telemetry_api, db):
    tenant.retention_days = 7
    tenant.save()
    UsageEvent.objects.create(tenant=tenant, event_id="late", model="gpt-4o", prompt_tokens=10,
                              timestamp=timezone.now() - datetime.timedelta(days=30), received_at=timezone.now())
    purge()
    assert UsageEvent.objects.filter(event_id="late").exists()


def test_a_second_purge_is_refused_while_one_runs(tenant, telemetry_api, recording):
    tenant.retention_days = 7
    tenant.save()
    ingest(telemetry_api, 10)
    recording()
    with purge_lock():
        with pytest.raises(CommandError, match="already running"):
            purge()
        assert purge_expired_events() == 0
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1
    assert not PurgeRun.objects.exists()
    purge()  # the lock is released afterwards
    assert UsageEvent.objects.filter(tenant=tenant).count() == 0


@requires_production
def test_a_second_purge_process_exits_non_zero_with_a_clear_message(tenant, transactional_db):
    with purge_lock():
        result = subprocess.run([sys.executable, "manage.py", "purge_expired"], cwd=ROOT, env=subprocess_env(),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "already running" in result.stderr


def test_idle_session_states_are_deleted_and_their_events_kept(tenant, telemetry_api, recording):
    ingest(telemetry_api, 0, 0)
    recording()
    stale = SessionState.objects.get(session_id="s-0")
    stale.expires_at = timezone.now() - datetime.timedelta(minutes=1)
    stale.save()
    assert expire_sessions() == 1
    assert list(SessionState.objects.values_list("session_id", flat=True)) == ["s-1"]
    assert UsageEvent.objects.filter(tenant=tenant).count() == 2


def test_the_purge_also_deletes_idle_session_states(tenant, telemetry_api, recording):
    ingest(telemetry_api, 0)
    recording()
    SessionState.objects.update(expires_at=timezone.now() - datetime.timedelta(hours=1))
    output = purge()
    assert not SessionState.objects.exists()
    assert "1 idle session states" in output


def test_the_purge_deletes_finished_webhook_deliveries_past_retention(tenant, other_tenant, db):
    from tenants.models import WebhookDelivery, WebhookEndpoint

    tenant.retention_days = 30
    tenant.save()

    def delivery(owner, event_id, age_days, status):
        endpoint, _ = WebhookEndpoint.objects.get_or_create(tenant=owner, url="https://example.com/h",
                                                            defaults={"secret": "s", "event_types": ["test"]})
        made = WebhookDelivery.objects.create(tenant=owner, endpoint=endpoint, event_id=event_id, event_type="test",
                                              payload={"n": event_id}, status=status)
        # created_at is auto_now_add: age it afterwards.
        WebhookDelivery.objects.filter(pk=made.pk).update(created_at=timezone.now() - datetime.timedelta(days=age_days))

    delivery(tenant, "old-ok", 45, "succeeded")
    delivery(tenant, "old-failed", 31, "failed")
    delivery(tenant, "old-pending", 45, "pending")  # still being retried: left alone
    delivery(tenant, "recent", 29, "succeeded")
    delivery(other_tenant, "other-old", 45, "succeeded")  # bob keeps 90 days

    assert "webhook_deliveries=2" in purge("--dry-run")
    assert WebhookDelivery.objects.count() == 5
    assert "alice: 0 events and 2 webhook deliveries older than" in purge("--batch-size", "1")
    left = set(WebhookDelivery.objects.values_list("event_id", flat=True))
    assert left == {"old-pending", "recent", "other-old"}
    run = PurgeRun.objects.filter(dry_run=False).get()
    assert run.per_tenant["alice"]["webhook_deliveries"] == 2 and run.per_tenant["bob"]["webhook_deliveries"] == 0


@requires_production
@pytest.mark.django_db(transaction=True)
def test_a_purge_that_loses_the_database_says_so_in_one_line_and_a_new_run_finishes(tenant, telemetry_api,
                                                                                    recording):
    from django.db import connection

    from tests.conftest import terminate_backend

    tenant.retention_days = 7
    tenant.save()
    ingest(telemetry_api, 20, 19, 18, 2)
    recording()
    fired = []

    def terminate_before_the_second_delete(execute, sql, params, many, context):
        if "DELETE FROM usage_usageevent" in sql and len(fired) < 2:
            fired.append(sql)
            if len(fired) == 2:
                terminate_backend(context["connection"])
        return execute(sql, params, many, context)

    with (connection.execute_wrapper(terminate_before_the_second_delete),
          pytest.raises(CommandError, match="run the purge again to go on from where it stopped")):
        purge("--batch-size", "1", "--pause-ratio", "0")
    connection.close()
    purge("--batch-size", "1", "--pause-ratio", "0")
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1


@requires_production
@pytest.mark.django_db(transaction=True)
def test_a_purge_stopped_with_sigterm_releases_its_lock_so_the_next_run_starts_at_once(tenant, telemetry_api,
                                                                                       recording):
    """systemd and Kubernetes stop a job with SIGTERM: killed outright, the purge kept its lock for 15 minutes and
    the next run (beat's daily one too) was refused as "already running"."""
    import signal
    import time

    tenant.retention_days = 7
    tenant.save()
    ingest(telemetry_api, 20, 19, 18, 17, 16, 2)
    recording()
    slow = subprocess.Popen([sys.executable, "manage.py", "purge_expired", "--batch-size", "1", "--pause-ratio", "100"],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while UsageEvent.objects.filter(tenant=tenant).count() == 6:  # its first batch is in: it holds the lock
        assert time.monotonic() < deadline and slow.poll() is None, slow.communicate()
        time.sleep(0.05)
    slow.send_signal(signal.SIGTERM)
    out, err = slow.communicate(timeout=30)
    assert slow.returncode == 128 + signal.SIGTERM, (out, err)
    assert err.strip().splitlines() == [
        "CommandError: Stopped by SIGTERM; each batch was committed on its own, so run the purge again to go on "
        "from where it stopped."]
    again = subprocess.run([sys.executable, "manage.py", "purge_expired", "--pause-ratio", "0"], cwd=ROOT,
                           env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1


def test_the_purge_command_puts_back_the_signal_handlers_it_found(db):
    """Run in-process (call_command, a shell, a test), it must not leave its stop handlers behind."""
    import signal

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    purge()
    assert {signum: signal.getsignal(signum) for signum in before} == before
