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
        "budgets.tasks.budget_alerts_sweep",
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
    for job in ("record", "spikes", "alerts", "webhooks", "sessions", "purge"):
        assert f"{job}: " in out


def test_every_queue_a_task_is_routed_to_has_a_worker_in_the_procfile_and_make_worker():
    """A routed queue nobody consumes would hold its tasks (webhook deliveries) forever."""
    import re
    import shlex
    from pathlib import Path

    root = Path(settings.BASE_DIR)
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {app.conf.task_default_queue}
    consumed = set()
    for line in (root / "Procfile").read_text().splitlines():
        argv = shlex.split(line.partition(":")[2])
        if "worker" in argv:
            assert "-Q" in argv, f"a Procfile worker without -Q consumes only the default queue: {line}"
            consumed |= set(argv[argv.index("-Q") + 1].split(","))
    assert consumed == routed
    assert all(task in app.tasks for task in settings.CELERY_TASK_ROUTES)
    make_queues = re.search(r"^WORKER_QUEUES \?= (\S+)$", (root / "Makefile").read_text(), re.M).group(1)
    assert set(make_queues.split(",")) == routed
