"""Page benchmark (not a test): server-side render time of the dashboard pages with 1,000,000 events over 90 days
in PostgreSQL, through the Django test client (no network), median of 20 after two warm-up requests.

    .venv/bin/python bench/pages.py [--events 1000000] [--reuse] [--write]

The events are generated in PostgreSQL itself (INSERT … SELECT generate_series) together with the matching
roll-ups (daily spend per day × team × project × model, session states) computed from them by GROUP BY, the same
aggregates the recording path keeps; budgets go through `budget_upsert`. One tenant holds everything: 10 teams,
20,000 sessions of 50 iterations, one session of 500 iterations ending in a runaway loop, 300 anomalies.
Target: each page under 150 ms. Figures on a shared 2-core machine are noisy: read them as upper bounds.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, setup_django, write_results_section  # noqa: E402

SLUG = "bench-pages"
TEAMS = 10
SESSION_LENGTH = 50
LONG_SESSION = "bench/long run 500"
TARGET_MS = 150
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "gemini-1.5-pro", "o3-mini", "acme-internal-7b"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/aw_pages"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/7"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="keep the bench tenant's data if it is already there")
    parser.add_argument("--write", action="store_true", help="write the figures into bench/RESULTS.md")
    return parser.parse_args()


def generate(count: int):
    """A fresh bench tenant with `count` recorded events over the last 90 days and their roll-ups."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from budgets.services import budget_upsert
    from tenants.models import Membership, Tenant
    from tenants.services import membership_set, team_get_or_create

    Tenant.objects.filter(slug=SLUG).delete()
    tenant = Tenant.objects.create(name="Bench Pages Org", slug=SLUG)
    user, _ = get_user_model().objects.get_or_create(username="bench-pages-owner")
    membership_set(tenant=tenant, user=user, role=Membership.Role.OWNER)
    team_ids = [team_get_or_create(tenant=tenant, name=f"team-{i}")[0].pk for i in range(TEAMS)]
    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO usage_usageevent (tenant_id, event_id, model, provider, prompt_tokens, completion_tokens,
                latency_ms, identified_risks, team_id, team_name, project, session_id, iteration_index, customer_id,
                user_id, feature_id, status, metadata, timestamp, received_at, recorded_at, cost_usd, priced_by)
            SELECT %(tenant)s, 'ev-' || n, (%(models)s::text[])[1 + (n / 7) %% 6], 'openai',
                500 + n %% 3000, 50 + n %% 500, 300 + n %% 2000,
                CASE WHEN n %% 50 = 0 THEN '["PII_EMAIL"]'::jsonb ELSE '[]'::jsonb END,
                (%(teams)s::bigint[])[1 + (n / %(len)s) %% %(nteams)s], 'team-' || ((n / %(len)s) %% %(nteams)s),
                'project-' || (n / %(len)s) %% 8, 'sess-' || (n / %(len)s), 1 + n %% %(len)s,
                'cust-' || n %% 100, '', 'feat-' || n %% 20, 'ok', '{}'::jsonb, ts, ts, ts,
                round((500 + n %% 3000 + 50 + n %% 500) * 3 / 1000000.0, 10), 'blended'
            FROM (SELECT n, now() - (%(count)s - n) * (interval '90 days' / %(count)s) AS ts
                  FROM generate_series(1, %(count)s) AS n) AS g
            """,
            {"tenant": tenant.pk, "models": MODELS, "teams": team_ids, "len": SESSION_LENGTH, "nteams": TEAMS,
             "count": count},
        )
        # The long session: 500 iterations, the last five growing 2× each (a runaway loop).
        cursor.execute(
            """
            INSERT INTO usage_usageevent (tenant_id, event_id, model, provider, prompt_tokens, completion_tokens,
                latency_ms, identified_risks, team_id, team_name, project, session_id, iteration_index, customer_id,
                user_id, feature_id, status, metadata, timestamp, received_at, recorded_at, cost_usd, priced_by)
            SELECT %(tenant)s, 'long-' || i, 'gpt-4o', 'openai', p, 200, 500, '[]'::jsonb, %(team)s, 'team-0',
                'project-0', %(sid)s, i, '', '', '', 'ok', '{}'::jsonb, ts, ts, ts, round((p + 200) * 3 / 1e6, 10),
                'blended'
            FROM (SELECT i, now() - (500 - i) * interval '2 seconds' AS ts,
                         CASE WHEN i > 495 THEN 2000 * power(2, i - 495)::int ELSE 1000 + i * 2 END AS p
                  FROM generate_series(1, 500) AS i) AS g
            """,
            {"tenant": tenant.pk, "team": team_ids[0], "sid": LONG_SESSION},
        )
        cursor.execute(
            """
            INSERT INTO usage_dailyspend (tenant_id, day, team_name, project, model, events, prompt_tokens,
                completion_tokens, cost_usd)
            SELECT tenant_id, (timestamp AT TIME ZONE 'UTC')::date, team_name, project, model, count(*),
                sum(prompt_tokens), sum(completion_tokens), sum(cost_usd)
            FROM usage_usageevent WHERE tenant_id = %(tenant)s GROUP BY 1, 2, 3, 4, 5
            """,
            {"tenant": tenant.pk},
        )
        cursor.execute(
            """
            INSERT INTO usage_sessionstate (tenant_id, session_id, team_id, project, spent_usd, prompt_tokens,
                completion_tokens, events, iterations, recent_prompts, last_limit_usd, first_seen, last_seen,
                expires_at)
            SELECT tenant_id, session_id, min(team_id), min(project), sum(cost_usd), sum(prompt_tokens),
                sum(completion_tokens), count(*), max(iteration_index), '{}'::jsonb,
                CASE WHEN session_id LIKE '%%7' THEN 0.05 ELSE 5.00 END, min(timestamp), max(timestamp),
                max(timestamp) + interval '24 hours'
            FROM usage_usageevent WHERE tenant_id = %(tenant)s GROUP BY tenant_id, session_id
            """,
            {"tenant": tenant.pk},
        )
        cursor.execute(
            """
            INSERT INTO usage_anomaly (tenant_id, kind, status, team_id, session_id, day, details, count, first_seen,
                last_seen, acknowledged_at, acknowledged_by)
            SELECT %(tenant)s, 'runaway_loop', CASE WHEN k %% 3 = 0 THEN 'acknowledged' ELSE 'open' END,
                %(team)s, 'sess-' || (k * 61), NULL,
                '{"iterations": [46, 47, 48, 49], "prompt_tokens": [1000, 1500, 2300, 3500],
                  "ratios": [1.5, 1.53, 1.52]}'::jsonb, 1, now() - k * interval '5 hours',
                now() - k * interval '5 hours', NULL, ''
            FROM generate_series(1, 300) AS k
            """,
            {"tenant": tenant.pk, "team": team_ids[1]},
        )
        cursor.execute(
            """
            INSERT INTO usage_anomaly (tenant_id, kind, status, team_id, session_id, day, details, count, first_seen,
                last_seen, acknowledged_at, acknowledged_by)
            VALUES (%(tenant)s, 'runaway_loop', 'open', %(team)s, %(sid)s, NULL,
                '{"iterations": [496, 497, 498, 499, 500], "ratios": [2.0, 2.0, 2.0]}'::jsonb, 1, now(), now(),
                NULL, '')
            """,
            {"tenant": tenant.pk, "team": team_ids[0], "sid": LONG_SESSION},
        )
    for index, _ in enumerate(team_ids):
        budget_upsert(tenant=tenant, team_name=f"team-{index}", monthly_budget_usd=50 + index * 40,
                      hard_stop=index % 2 == 0, actor_user=user)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE usage_usageevent")
        cursor.execute("ANALYZE usage_dailyspend")
        cursor.execute("ANALYZE usage_sessionstate")
        cursor.execute("ANALYZE usage_anomaly")
    return tenant, user, time.monotonic() - started


def existing(count: int):
    from django.contrib.auth import get_user_model

    from tenants.models import Tenant
    from usage.models import UsageEvent

    tenant = Tenant.objects.filter(slug=SLUG).first()
    if tenant is None or UsageEvent.objects.filter(tenant=tenant).count() < count:
        return None
    return tenant, get_user_model().objects.get(username="bench-pages-owner"), 0.0


PAGES = [
    ("Overview", "/"),
    ("Activity, first page", "/activity/"),
    ("Activity, filtered (team + model)", "/activity/?team=team-3&model=gpt-4o-mini"),
    ("Activity, filtered (risk tag, last 7 days)", "/activity/?risk=PII_EMAIL&from={week_ago}"),
    ("Activity, htmx live poll", "/activity/live/?after={live_mark}"),
    ("Budgets", "/budgets/"),
    ("Sessions", "/sessions/"),
    ("Sessions, over limit", "/sessions/?over_limit=1"),
    ("Session page, 500 iterations", "/sessions/bench/long%20run%20500/"),
    ("Anomalies", "/anomalies/"),
    ("Settings → Pricing", "/settings/pricing/"),
    ("Settings → Retention", "/settings/retention/"),
    ("Settings → API keys", "/settings/api-keys/"),
]


def measure(user, *, runs: int) -> list[dict]:
    import datetime

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from agentwatch_site.pagination import encode_cursor
    from usage.models import UsageEvent

    client = Client()
    client.force_login(user)
    values = {"week_ago": (timezone.now() - datetime.timedelta(days=7)).date().isoformat(),
              "live_mark": encode_cursor(list(UsageEvent.objects.filter(tenant__slug=SLUG)
                                               .order_by("-timestamp", "-id").values_list("timestamp", "id")[0]))}
    rows = []
    for name, template in PAGES:
        url = template.format(**values)
        for _ in range(2):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        rows.append({"page": name, "url": url, "median": statistics.median(timings), "p90": sorted(timings)[
            int(0.9 * (len(timings) - 1))], "queries": len(queries)})
        print(f"  {name:<45} median {rows[-1]['median']:7.1f} ms  p90 {rows[-1]['p90']:7.1f} ms  "
              f"queries {rows[-1]['queries']}", flush=True)
    return rows


def report(rows, *, events: int, generate_s: float, runs: int) -> str:
    lines = [
        f"Server-side time through the Django test client (no network; the full middleware stack, sign-in session "
        f"in the database, templates rendered), median and p90 of "
        f"{runs} requests after 2 warm-ups, one tenant with {events:,} events over 90 days in PostgreSQL (plus its "
        f"daily roll-ups, 20,000 session states, 301 anomalies, 10 budgets). Load average "
        f"{os.getloadavg()[0]:.1f} at the end. Target: < {TARGET_MS} ms each.",
        "",
        "| page | median ms | p90 ms | queries | target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        ok = "met" if row["median"] < TARGET_MS else "**missed**"
        lines.append(f"| {row['page']} (`{row['url']}`) | {row['median']:.1f} | {row['p90']:.1f} | {row['queries']} "
                     f"| {ok} |")
    if generate_s:
        lines += ["", f"Data generation (INSERT … SELECT and the GROUP BY roll-ups, then VACUUM ANALYZE): "
                      f"{generate_s:.0f} s."]
    lines += ["", "Run: `.venv/bin/python bench/pages.py --write` (add `--reuse` to keep the generated data)."]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    setup_django(database_url=args.database_url, redis_url=args.redis_url)
    from django.test.utils import override_settings

    found = existing(args.events) if args.reuse else None
    if found is None:
        print(f"generating {args.events:,} events …", flush=True)
        found = generate(args.events)
        print(f"    {found[2]:.1f}s", flush=True)
    _, user, generate_s = found
    # Deployments run collectstatic (whitenoise's manifest); here static URLs need no manifest.
    with override_settings(STORAGES={"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                                     "staticfiles": {
                                         "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}):
        rows = measure(user, runs=args.runs)
    text = report(rows, events=args.events, generate_s=generate_s, runs=args.runs)
    print()
    print(text)
    if args.write:
        write_results_section("Pages", text)
        print(f"\nwritten to {ROOT / 'bench' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
