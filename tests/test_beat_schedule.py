"""Every task the beat schedule names exists (imports) and is registered with the Celery app."""

import importlib

from django.conf import settings
from django.core.management import call_command

from agentwatch_site.celery import app


def test_every_scheduled_task_imports_and_is_registered():
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert {entry["task"] for entry in schedule.values()} >= {
        "usage.tasks.sweep_unrecorded_events", "usage.tasks.expire_sessions", "usage.tasks.detect_spend_spikes",
        "usage.tasks.purge_expired_events", "tenants.tasks.retry_due_webhook_deliveries",
    }
    for entry in schedule.values():
        module_name, _, function_name = entry["task"].rpartition(".")
        task = getattr(importlib.import_module(module_name), function_name)
        assert task.name == entry["task"]
        assert entry["task"] in app.tasks
        assert float(entry["schedule"]) > 0


def test_spike_detection_runs_every_15_minutes_and_the_purge_daily():
    by_task = {entry["task"]: float(entry["schedule"]) for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert by_task["usage.tasks.detect_spend_spikes"] == 900
    assert by_task["usage.tasks.purge_expired_events"] == 86400


def test_run_periodic_runs_every_job_by_hand(db, capsys):
    call_command("run_periodic")
    out = capsys.readouterr().out
    for job in ("record", "spikes", "webhooks", "sessions", "purge"):
        assert f"{job}: " in out
