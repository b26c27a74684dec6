"""Usage data for page tests, made through the real ingest and recording services (no hand-made roll-ups)."""

import datetime
import random

from django.utils import timezone

from usage.services.ingest import event_batch_ingest, parse_ingest_body
from usage.services.recording import events_record_pending


def record(tenant, events: list[dict]) -> None:
    """Ingest `events` (dicts as the aw-sdk sends them) for `tenant` and record them all, in-process."""
    now = timezone.now()
    for start in range(0, len(events), 1000):
        cleaned = parse_ingest_body({"events": events[start:start + 1000]}, now=now)
        event_batch_ingest(tenant=tenant, events=cleaned, received_at=now)
    while events_record_pending().recorded:
        pass


def event(**fields) -> dict:
    base = {"model": "gpt-4o", "latency_ms": 800, "prompt_tokens": 1000, "completion_tokens": 200,
            "identified_risks": [], "project": "checkout-service", "team": "payments-eng"}
    base.update(fields)
    if isinstance(base.get("timestamp"), datetime.datetime):
        base["timestamp"] = base["timestamp"].isoformat()
    return base


def runaway_session(session_id: str = "run-loop-1", team: str = "payments-eng", iterations: int = 8) -> list[dict]:
    """A session whose prompt doubles each iteration after the third: a runaway loop."""
    now = timezone.now()
    events, prompt = [], 1000
    for index in range(1, iterations + 1):
        if index > 3:
            prompt *= 2
        events.append(event(session_id=session_id, iteration_index=index, prompt_tokens=prompt,
                            completion_tokens=150, team=team,
                            timestamp=now - datetime.timedelta(seconds=(iterations - index) * 5 + 5)))
    return events


def demo_month(*, days: int = 30, per_day: int = 6, seed: int = 7) -> list[dict]:
    """A month of varied calls over several teams, projects and models (for screenshots and query counts)."""
    rng = random.Random(seed)
    now = timezone.now()
    teams = ["payments-eng", "search", "support-bots", "data-platform", ""]
    models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "gemini-1.5-pro", "acme-internal-7b"]
    events = []
    for day in range(days):
        for n in range(per_day):
            team = rng.choice(teams)
            fields = {"timestamp": now - datetime.timedelta(days=day, minutes=rng.randint(1, 600)),
                      "model": rng.choice(models), "prompt_tokens": rng.randint(2_000, 200_000),
                      "completion_tokens": rng.randint(100, 20_000), "project": rng.choice(["checkout", "triage"]),
                      "session_id": f"s-{day}-{n % 3}", "iteration_index": n // 3 + 1,
                      "customer_id": rng.choice(["acme", "globex", ""]),
                      "identified_risks": ["PII_EMAIL"] if rng.random() < 0.1 else []}
            if team:
                fields["team"] = team
            else:
                fields.pop("team", None)
            events.append(event(**fields) if team else {k: v for k, v in event(**fields).items() if k != "team"})
    return events
