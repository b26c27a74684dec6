"""`manage.py seed_demo`: a demo organisation with 30 days of realistic agent traffic, recorded by the same code
that records real telemetry (validation, bulk insert, pricing, roll-ups, session state, runaway-loop detection).
Safe to run again: the tenant, login, teams and budgets are reused, events are generated only once, and fresh
demo API keys replace the previous ones (keys are stored hashed, so they cannot be shown again)."""

import datetime
import random
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from budgets.services import budget_upsert
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create, api_key_revoke, tenant_create, user_create_owner
from usage.models import UsageEvent
from usage.services.ingest import event_batch_ingest, parse_ingest_body
from usage.services.recording import events_record_pending

DEMO_SLUG = "demo"
DEMO_NAME = "Demo Org"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "agentwatch-demo"  # noqa: S105 - a published demo login, printed on every run
DAYS = 30
RUNAWAY_SESSION = "eval-loop-7f3a"

# team → (monthly budget USD, projects, models with weights)
TEAMS = {
    "payments-eng": (Decimal("8"), ["checkout-service", "refund-bot"],
                     {"gpt-4o": 5, "gpt-4o-mini": 8, "claude-3-5-haiku": 2}),
    "research": (Decimal("20"), ["paper-summariser", "eval-harness"],
                 {"claude-sonnet-4": 5, "gpt-4.1": 3, "gemini-2.5-pro": 2, "o3-mini": 1}),
    "platform": (Decimal("10"), ["support-triage", "code-review-agent"],
                 {"gpt-4.1-mini": 6, "llama-3.3-70b-instruct": 3, "mistral-small-latest": 2, "codestral-latest": 2}),
}
RISKS = [("PII_EMAIL", 0.04), ("FINANCIAL_CREDIT_CARD", 0.006), ("SECRET_AWS_ACCESS_KEY", 0.004),
         ("PII_SSN", 0.003), ("SECRET_GITHUB", 0.003)]


class Command(BaseCommand):
    help = ("Create (or refresh) the demo tenant 'Demo Org' with 30 days of events. Prints the login; the last two "
            "lines are a fresh admin API key and a fresh telemetry API key.")

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true",
                            help="Seed even with DEBUG off. The demo login's password is published (and reset to it "
                                 "on every run): never on a server others can reach.")

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            # `make run` in a shell that still has the production variables would otherwise put an owner with a
            # published password into the production database.
            raise CommandError("DEBUG is off, so this looks like a production database: seed_demo creates an owner "
                               f"'{DEMO_USERNAME}' with the published password '{DEMO_PASSWORD}'. Unset "
                               "DATABASE_URL for a local demo, or pass --force if this server is yours alone.")
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first() or tenant_create(name=DEMO_NAME, slug=DEMO_SLUG)
        if tenant.cost_mode != Tenant.CostMode.CATALOG:
            tenant.cost_mode = Tenant.CostMode.CATALOG
            tenant.save(update_fields=["cost_mode"])
        user = user_create_owner(tenant=tenant, username=DEMO_USERNAME, password=DEMO_PASSWORD)
        if not user.check_password(DEMO_PASSWORD):
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        for team_name, (budget, _, _) in TEAMS.items():
            budget_upsert(tenant=tenant, team_name=team_name, monthly_budget_usd=budget, actor_user=user)

        if UsageEvent.objects.filter(tenant=tenant).exists():
            self.stdout.write("Events: already seeded, kept as they are.")
        else:
            created = seed_events(tenant, now=timezone.now())
            self.stdout.write(f"Events: {created} generated over the last {DAYS} days and recorded.")

        admin_raw, telemetry_raw = _fresh_keys(tenant)
        self.stdout.write(f"Tenant: {tenant.name} (slug {tenant.slug})")
        self.stdout.write(f"Sign in: username {DEMO_USERNAME} / password {DEMO_PASSWORD}")
        self.stdout.write("API keys (admin, then telemetry) — shown once, the previous demo keys are revoked:")
        self.stdout.write(admin_raw)
        self.stdout.write(telemetry_raw)


@transaction.atomic
def _fresh_keys(tenant: Tenant) -> tuple[str, str]:
    for key in ApiKey.objects.filter(tenant=tenant, name__in=["demo admin", "demo telemetry"], revoked_at=None):
        api_key_revoke(key=key)
    _, admin_raw = api_key_create(tenant=tenant, name="demo admin", scope=ApiKey.Scope.ADMIN)
    _, telemetry_raw = api_key_create(tenant=tenant, name="demo telemetry", scope=ApiKey.Scope.TELEMETRY)
    return admin_raw, telemetry_raw


def seed_events(tenant: Tenant, *, now: datetime.datetime) -> int:
    """Generate the traffic hour by hour, store each hour's events as the ingest view does, record each day."""
    rng = random.Random(20261125)
    events = _generate(rng, now=now)
    events.sort(key=lambda e: e["timestamp"])
    by_hour: dict[datetime.datetime, list[dict]] = {}
    for event in events:
        by_hour.setdefault(event["timestamp"].replace(minute=0, second=0, microsecond=0), []).append(event)
    day = None
    for hour, batch in sorted(by_hour.items()):
        if day is not None and hour.date() != day:
            _record_all()
        day = hour.date()
        for start in range(0, len(batch), 1000):
            chunk = batch[start:start + 1000]
            received_at = max(e["timestamp"] for e in chunk)
            raw = [dict(e, timestamp=e["timestamp"].isoformat()) for e in chunk]
            clean = parse_ingest_body({"events": raw}, now=now)
            event_batch_ingest(tenant=tenant, events=clean, received_at=received_at)
    _record_all()
    return len(events)


def _record_all() -> None:
    while events_record_pending().recorded:
        pass


def _generate(rng: random.Random, *, now: datetime.datetime) -> list[dict]:
    events: list[dict] = []
    serial = 0
    first_day = (now - datetime.timedelta(days=DAYS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    for day_offset in range(DAYS):
        day = first_day + datetime.timedelta(days=day_offset)
        weekday = day.weekday() < 5
        for team_name, (_, projects, models) in TEAMS.items():
            for _ in range(rng.randint(4, 9) if weekday else rng.randint(0, 3)):
                serial += 1
                project = rng.choice(projects)
                model = rng.choices(list(models), weights=list(models.values()))[0]
                session_id = f"{project}-{serial:05d}"
                length = max(1, int(rng.lognormvariate(1.6, 0.8)))
                started = day + datetime.timedelta(hours=rng.uniform(7, 20))
                base_prompt = rng.randint(1500, 12000)
                for iteration in range(1, min(length, 60) + 1):
                    at = started + datetime.timedelta(seconds=iteration * rng.uniform(4, 90))
                    if at > now:
                        break
                    prompt = int(base_prompt * rng.uniform(0.8, 1.25)) + iteration * rng.randint(20, 200)
                    events.append(_event(rng, f"demo-{serial}-{iteration}", iteration, at=at, model=model,
                                         team=team_name, project=project, session_id=session_id,
                                         prompt_tokens=prompt))
        # Batch jobs nobody has allocated to a team yet.
        for n in range(rng.randint(0, 6)):
            at = day + datetime.timedelta(hours=rng.uniform(0, 24))
            if at <= now:
                events.append(_event(rng, f"demo-etl-{day_offset}-{n}", None, at=at, model="gpt-4o-mini", team=None,
                                     project="nightly-etl", session_id=None, prompt_tokens=rng.randint(2000, 9000)))
    # The runaway session: every prompt carries the whole history, growing 1.5× per iteration.
    started = now - datetime.timedelta(days=2, hours=3)
    for iteration in range(1, 13):
        at = started + datetime.timedelta(seconds=40 * iteration)
        events.append(_event(rng, f"demo-loop-{iteration}", iteration, at=at,
                             model="claude-sonnet-4", team="research", project="eval-harness",
                             session_id=RUNAWAY_SESSION, prompt_tokens=int(2000 * 1.5 ** (iteration - 1))))
    return events


def _event(rng, event_id, iteration, *, at, model, team, project, session_id, prompt_tokens) -> dict:
    risks = [tag for tag, chance in RISKS if rng.random() < chance]
    return {
        "event_id": event_id,
        "timestamp": at,
        "model": model,
        "provider": _provider(model),
        "latency_ms": int(rng.lognormvariate(6.8, 0.5)),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": int(rng.lognormvariate(5.3, 0.7)),
        "identified_risks": risks,
        "team": team,
        "project": project,
        "session_id": session_id,
        "iteration_index": iteration,
        "status": "error" if rng.random() < 0.01 else "ok",
    }


def _provider(model: str) -> str:
    for prefix, provider in (("gpt", "openai"), ("o3", "openai"), ("claude", "anthropic"), ("gemini", "google"),
                             ("llama", "meta"), ("mistral", "mistral"), ("codestral", "mistral")):
        if model.startswith(prefix):
            return provider
    return ""
