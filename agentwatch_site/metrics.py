"""Prometheus metrics at /metrics: requests and latency per endpoint, events accepted/recorded/rejected,
the recording queue depth and lag.

Counters count in the process that did the work: requests and events accepted in gunicorn's workers, events
recorded and set aside in the Celery workers. With several gunicorn or Celery processes on one host, set
PROMETHEUS_MULTIPROC_DIR to an empty directory shared by them (gunicorn.conf.py clears dead workers' files), so
/metrics adds up every process. The gauges (queue depth, ingest lag, events set aside) are read from the
database at each scrape, so they are right whichever process answers, on any host.
"""

import os
import time

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
QUEUE_DEPTH = Gauge("agentwatch_recording_queue_depth", "Events accepted but not yet recorded.",
                    multiprocess_mode="mostrecent")
INGEST_LAG = Gauge("agentwatch_ingest_lag_seconds", "Age of the oldest unrecorded event.",
                   multiprocess_mode="mostrecent")
# Read from the database at each scrape, so right whichever process answers: the counters above count only in the
# process that did the work (the recorded and quarantined ones in the Celery workers; see the module docstring).
QUARANTINED = Gauge("agentwatch_quarantined_events",
                    "Usage events set aside now because recording them failed (manage.py quarantined_events).",
                    multiprocess_mode="mostrecent")


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


@never_cache
def metrics_view(request):
    from usage.models import UsageEvent
    from usage.selectors import ingest_lag_seconds, quarantined_event_count

    try:
        QUEUE_DEPTH.set(UsageEvent.objects.filter(recorded_at__isnull=True).count())
        INGEST_LAG.set(ingest_lag_seconds())
        QUARANTINED.set(quarantined_event_count())
    except Exception:  # the database being down must not hide the other metrics
        QUEUE_DEPTH.set(-1)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
