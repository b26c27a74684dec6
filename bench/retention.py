"""Retention benchmark (not a test): purge 1,000,000 expired events on PostgreSQL while ingestion runs at a
steady rate. Reports the purge's rows/s and the ingestion lag (post → visible in the session's spend) p50/p99
during the purge, next to the same lag measured quietly (no purge) just before.

    .venv/bin/python bench/retention.py [--events 1000000] [--rate 50] [--write]

The expired rows are generated in PostgreSQL itself (INSERT … SELECT generate_series), recorded and priced, for
one tenant with a 30-day retention; the purge is the real `manage.py purge_expired` in its own process, against
gunicorn (sync workers) and one Celery worker recording the live tenant's events. Figures on a shared 2-core
machine are noisy: read them as lower bounds.
"""

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ROOT,
    VENV_BIN,
    bench_env,
    paced_posts,
    percentile,
    setup_django,
    start_gunicorn,
    start_worker,
    write_results_section,
)
from bench.ingest import new_tenant, wait_drained  # noqa: E402

SDK_EVENT = {"model": "gpt-4o", "latency_ms": 812, "prompt_tokens": 1200, "completion_tokens": 300,
             "project": "checkout-service", "team": "payments-eng", "iteration_index": 1}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/aw_workers"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/5"))
    parser.add_argument("--events", type=int, default=1_000_000, help="expired events to purge")
    parser.add_argument("--rate", type=float, default=25, help="ingestion posts per second (open loop)")
    parser.add_argument("--quiet-duration", type=float, default=20, help="seconds of ingestion without a purge")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--pause-ratio", type=float, default=None, help="purge_expired --pause-ratio (its default)")
    parser.add_argument("--write", action="store_true", help="write the figures into bench/RESULTS.md")
    return parser.parse_args()


def generate_expired(count: int):
    """`count` recorded events 40 to 400 days old for a fresh tenant with a 30-day retention, made by PostgreSQL."""
    from django.db import connection

    tenant, _ = new_tenant("purge")
    tenant.retention_days = 30
    tenant.save(update_fields=["retention_days"])
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO usage_usageevent (tenant_id, event_id, model, provider, prompt_tokens, completion_tokens,
                latency_ms, identified_risks, team_name, project, session_id, iteration_index, customer_id, user_id,
                feature_id, status, metadata, timestamp, received_at, recorded_at, cost_usd, priced_by)
            SELECT %s, 'old-' || n, 'gpt-4o', 'openai', 1000 + n %% 2000, 200, 500, '[]'::jsonb, 'team-' || n %% 5,
                'project-' || n %% 7, 'session-' || n %% 5000, n %% 50, '', '', '', 'ok', '{}'::jsonb,
                now() - interval '40 days' - (n %% 31104000) * interval '1 second',
                now() - interval '40 days', now() - interval '40 days', 0.0036, 'blended'
            FROM generate_series(1, %s) AS n
            """,
            [tenant.pk, count],
        )
    elapsed = time.monotonic() - started
    # What autovacuum would do after a bulk insert, done now so it does not land in the quiet measurement.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE usage_usageevent")
    return tenant, elapsed


def lag_run(web, *, rate: float, duration: float | None = None, until=None) -> list[tuple[float, float]]:
    """Paced single-event posts, each a new session; returns (sent_at, lag seconds) per accepted event.
    Runs for `duration` seconds, or in 5-second rounds until `until()` is true."""
    from django.db import connection

    from usage.models import SessionState

    tenant, raw = new_tenant("lag")
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    stop = threading.Event()

    def poll():
        last_id = 0
        try:
            while not stop.is_set():
                rows = list(SessionState.objects.filter(tenant=tenant, id__gt=last_id, spent_usd__gt=0)
                            .order_by("id").values_list("id", "session_id"))
                now = time.monotonic()
                for row_id, session_id in rows:
                    seen_at.setdefault(session_id, now)
                    last_id = max(last_id, row_id)
                time.sleep(0.01)
        finally:
            connection.close()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    accepted: set[str] = set()
    offset = 0
    while True:
        round_seconds = duration or 5.0

        def body_for(i: int, offset=offset) -> bytes:
            return json.dumps(dict(SDK_EVENT, session_id=f"lag-{offset + i}")).encode()

        results = paced_posts(f"{web.url}/v1/ingest", rate=rate, duration=round_seconds, body_for=body_for,
                              headers={"Authorization": f"Bearer {raw}"},
                              on_sent=lambda i, started, offset=offset: sent_at.__setitem__(f"lag-{offset + i}",
                                                                                            started))
        accepted |= {f"lag-{offset + r.index}" for r in results if r.status == 202}
        offset += len(results)
        if duration or until():
            break
    deadline = time.monotonic() + 120
    while not accepted <= set(seen_at) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    poller.join()
    return [(sent_at[s], seen_at[s] - sent_at[s]) for s in accepted if s in seen_at]


def run_purge(args, env) -> dict:
    started = time.monotonic()
    argv = [str(VENV_BIN / "python"), "manage.py", "purge_expired", "--batch-size", str(args.batch_size)]
    if args.pause_ratio is not None:
        argv += ["--pause-ratio", str(args.pause_ratio)]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"purge failed: {proc.stderr[-2000:]}")
    match = re.search(r"tenant=bench-purge-\S+ deleted events=(\d+) .*? seconds=([\d.]+)", proc.stdout)
    deleted, seconds = (int(match.group(1)), float(match.group(2))) if match else (0, wall)
    return {"deleted": deleted, "seconds": seconds, "wall": wall, "output": proc.stdout}


def main() -> None:
    args = parse_args()
    setup_django(database_url=args.database_url, redis_url=args.redis_url)
    env = bench_env(DATABASE_URL=args.database_url, REDIS_URL=args.redis_url)
    print(f"generating {args.events:,} expired events …", flush=True)
    _, generate_s = generate_expired(args.events)
    print(f"    {generate_s:.1f}s", flush=True)
    with start_gunicorn(env, workers=args.web_workers, name="retention-web") as web, \
            start_worker(env, concurrency=1, name="retention-worker"):
        wait_drained()
        lag_run(web, rate=args.rate, duration=5)  # warm-up: gunicorn workers and the Celery worker load everything
        print(f"quiet: {args.rate:.0f} posts/s for {args.quiet_duration:.0f}s …", flush=True)
        quiet = [lag for _, lag in lag_run(web, rate=args.rate, duration=args.quiet_duration)]
        print(f"    lag p99 {percentile(quiet, 99) * 1000:.0f} ms", flush=True)

        print("purge while ingesting …", flush=True)
        purge: dict = {}
        window: dict = {}

        def purge_thread():
            window["start"] = time.monotonic()
            purge.update(run_purge(args, env))
            window["end"] = time.monotonic()

        thread = threading.Thread(target=purge_thread)
        thread.start()
        time.sleep(0.5)
        during_all = lag_run(web, rate=args.rate, until=lambda: not thread.is_alive())
        thread.join()
        print(f"quiet again: {args.quiet_duration:.0f}s …", flush=True)
        after = [lag for _, lag in lag_run(web, rate=args.rate, duration=args.quiet_duration)]
    during = [lag for sent, lag in during_all if window["start"] <= sent <= window["end"]]
    rate = purge["deleted"] / purge["seconds"] if purge["seconds"] else 0
    text = report(args, before=quiet, after=after, during=during, purge=purge, rate=rate, generate_s=generate_s)
    print()
    print(text)
    if args.write:
        write_results_section("Retention", text)
        print(f"\nwritten to {ROOT / 'bench' / 'RESULTS.md'}")


def pause_text(args) -> str:
    from usage.services.retention import PURGE_PAUSE_RATIO

    ratio = PURGE_PAUSE_RATIO if args.pause_ratio is None else args.pause_ratio
    return f"{ratio:g}× as long as the batch took (--pause-ratio)" if ratio else "not at all (--pause-ratio 0)"


def report(args, *, before, after, during, purge, rate, generate_s) -> str:
    # The quiet figure is taken before and after the purge together: the machine's other load drifts.
    quiet = before + after
    q99, d99 = percentile(quiet, 99), percentile(during, 99)
    lines = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores (load average "
        f"{os.getloadavg()[0]:.1f} at the end); PostgreSQL + Redis on the same machine; "
        f"gunicorn {args.web_workers} sync workers and one Celery worker recording the live ingestion.",
        "",
        "Command: `" + " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/retention.py", *sys.argv[1:]])
        + "`",
        "",
        "| measure | figure | target |",
        "|---|---|---|",
        f"| purge of {purge['deleted']:,} expired events (batches of {args.batch_size:,}), rows/s | {rate:,.0f} "
        f"| ≥ 50,000 |",
        f"| ingestion lag at {args.rate:.0f} posts/s, quiet (before and after): p50 / p99, ms | "
        f"{percentile(quiet, 50) * 1000:.0f} / {q99 * 1000:.0f} (before {percentile(before, 99) * 1000:.0f}"
        f", after {percentile(after, 99) * 1000:.0f}) | |",
        f"| ingestion lag at {args.rate:.0f} posts/s, during the purge: p50 / p99, ms | "
        f"{percentile(during, 50) * 1000:.0f} / {d99 * 1000:.0f} ({d99 / q99:.1f}× quiet) | p99 ≤ 2× quiet |",
        "",
        f"The {args.events:,} expired rows (40–400 days old, recorded, 30-day retention) were generated by "
        f"PostgreSQL in {generate_s:.0f}s. The purge (`manage.py purge_expired`, its own process) deleted them in "
        f"{purge['seconds']:.1f}s ({purge['wall']:.1f}s including start-up), one autocommitted DELETE of at most "
        f"{args.batch_size:,} rows per batch, walking the (tenant, timestamp, id) index in key order, resting after "
        f"each batch {pause_text(args)}. "
        f"{len(quiet):,} quiet and {len(during):,} during-purge posts were measured, each a new session "
        f"(lag = post sent → the session's spend visible in the database).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
