"""Every task the beat schedule names exists (imports) and is registered with the Celery app."""

import datetime
import importlib

import pytest
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


def _runs(task: str, *, started: datetime.datetime, hours: float) -> list[datetime.datetime]:
    """When a beat started at `started` with no schedule file runs `task` in its first `hours` hours."""
    from celery.schedules import maybe_schedule

    schedule = maybe_schedule(next(e["schedule"] for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == task),
                              app=app)
    schedule.nowfun = lambda: now
    runs, last_run, now = [], started, started
    end = started + datetime.timedelta(hours=hours)
    while now < end:
        due, _ = schedule.is_due(last_run)
        if due:
            runs.append(now)
            last_run = now
        now += datetime.timedelta(seconds=60)
    return runs


@pytest.mark.parametrize("started_at", ["00:00", "03:30", "16:45", "23:59"])
def test_a_beat_restarted_every_23_hours_without_its_schedule_file_still_purges_daily_and_checks_spikes(started_at):
    """Intervals counted from beat's start never came due for a beat restarting more often than they last: the
    purge (retention) never ran on a container whose disk is thrown away at each restart."""
    hour, minute = map(int, started_at.split(":"))
    first = datetime.datetime(2026, 11, 25, hour, minute, tzinfo=datetime.UTC)
    restarts = [first + datetime.timedelta(hours=23 * n) for n in range(4)]  # 92 hours, four fresh beats
    purges = [run for start in restarts
              for run in _runs("usage.tasks.purge_expired_events", started=start, hours=23)]
    assert len(purges) >= 3
    assert all((run.hour, run.minute) == (3, 17) for run in purges)
    spikes = _runs("usage.tasks.detect_spend_spikes", started=first, hours=2)
    assert len(spikes) in (7, 8) and all(run.minute % 15 == 0 for run in spikes)
    assert len(_runs("usage.tasks.expire_sessions", started=first, hours=2)) == 2


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
