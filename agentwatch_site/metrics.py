"""Prometheus metrics at /metrics: requests and latency per endpoint, events accepted/recorded/rejected,
the recording queue depth and lag.

Counters count in the process that did the work: requests and events accepted in gunicorn's workers, events
recorded and set aside in the Celery workers. With several gunicorn or Celery processes on one host, set
PROMETHEUS_MULTIPROC_DIR to an empty directory shared by them (gunicorn.conf.py clears dead workers' files), so
/metrics adds up every process. The gauges (queue depth, ingest lag, events set aside, whether the database and
Redis answer) are read at each scrape, so they are right whichever process answers, on any host; a gauge the
database could not give is NaN (with agentwatch_database_up 0), never its last value.
"""

import math
import os
import time

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("agentwatch_http_requests_total", "HTTP requests by endpoint, method and status.",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("agentwatch_http_request_duration_seconds", "Request latency by endpoint.", ["endpoint"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
EVENTS_ACCEPTED = Counter("agentwatch_events_accepted_total", "Usage events accepted by /v1/ingest.")
EVENTS_RECORDED = Counter("agentwatch_events_recorded_total", "Usage events priced and rolled up by workers.")
EVENTS_QUARANTINED = Counter("agentwatch_events_quarantined_total",
                             "Usage events set aside because recording them failed (manage.py quarantined_events).")
EVENTS_REJECTED = Counter("agentwatch_events_rejected_total", "Telemetry requests refused.", ["reason"])
# Read at each scrape, so right whichever process answers: the counters above count only in the process that did
# the work (the recorded and quarantined ones in the Celery workers; see the module docstring). "mostrecent": with
# PROMETHEUS_MULTIPROC_DIR the value shown is the one the answering process has just set.
DATABASE_UP = Gauge("agentwatch_database_up", "1 when the database answered this scrape, 0 when it did not.",
                    multiprocess_mode="mostrecent")
REDIS_UP = Gauge("agentwatch_redis_up", "1 when Redis answered this scrape, 0 when it did not; NaN without Redis "
                 "(embedded mode).", multiprocess_mode="mostrecent")
QUEUE_DEPTH = Gauge("agentwatch_recording_queue_depth", "Events accepted but not yet recorded; NaN when the database "
                    "cannot be read.", multiprocess_mode="mostrecent")
INGEST_LAG = Gauge("agentwatch_ingest_lag_seconds", "Age of the oldest unrecorded event (0 when none); NaN when the "
                   "database cannot be read.", multiprocess_mode="mostrecent")
QUARANTINED = Gauge("agentwatch_quarantined_events",
                    "Usage events set aside now because recording them failed (manage.py quarantined_events); NaN "
                    "when the database cannot be read.", multiprocess_mode="mostrecent")


class MetricsMiddleware:
    """Counts every request under its URL route name (never the raw path: ids would explode cardinality)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        endpoint = (match.route or match.url_name or "unknown") if match else "unmatched"
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        return response


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def _read_database_gauges() -> None:
    from usage.models import UsageEvent
    from usage.selectors import ingest_lag_seconds, quarantined_event_count

    try:
        values = {QUEUE_DEPTH: UsageEvent.objects.filter(recorded_at__isnull=True).count(),
                  INGEST_LAG: ingest_lag_seconds(), QUARANTINED: quarantined_event_count()}
        up = 1
    except Exception:  # the database being down must not hide the other metrics, nor leave last scrape's values
        values = dict.fromkeys((QUEUE_DEPTH, INGEST_LAG, QUARANTINED), math.nan)
        up = 0
    for gauge, value in values.items():
        gauge.set(value)
    DATABASE_UP.set(up)


def _read_redis_gauge() -> None:
    from django.core.cache import cache

    from agentwatch_site.redis_guard import redis_skipped

    if not settings.REDIS_URL:
        REDIS_UP.set(math.nan)
        return
    if redis_skipped():  # a Redis call timed out moments ago: this process is skipping Redis (redis_guard)
        REDIS_UP.set(0)
        return
    try:
        cache._cache.get_client(write=True).ping()
        REDIS_UP.set(1)
    except Exception:
        REDIS_UP.set(0)


@never_cache
def metrics_view(request):
    _read_database_gauges()
    _read_redis_gauge()
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
