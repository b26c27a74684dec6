"""Runaway loops across session lifetimes: a session id reused after 24 h idle starts its iterations again."""

import datetime

import time_machine
from django.utils import timezone

from tests.usage.test_recording import SDK_EVENT, ingest
from usage.models import Anomaly
from usage.services.recording import events_record_pending

GROWING = [(1, 1000), (2, 1500), (3, 2200), (4, 3200)]


def record_loop(tenant, iterations, session_id="nightly-job"):
    ingest(tenant, [dict(SDK_EVENT, session_id=session_id, iteration_index=index, prompt_tokens=tokens)
                    for index, tokens in iterations])
    events_record_pending()


def test_a_loop_in_a_later_lifetime_of_the_session_updates_the_open_anomaly(tenant):
    # A scheduled job reuses its session id every day; after 24 h idle the session starts from zero and its
    # iteration indexes start again at 1. The same runaway loop the next day must show on the open anomaly.
    start = timezone.now() - datetime.timedelta(days=3)
    with time_machine.travel(start, tick=False):
        record_loop(tenant, GROWING)
    next_day = start + datetime.timedelta(hours=30)
    with time_machine.travel(next_day, tick=False):
        record_loop(tenant, GROWING)
    [anomaly] = Anomaly.objects.filter(tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP)
    assert anomaly.status == Anomaly.Status.OPEN
    assert anomaly.count == 2
    assert anomaly.first_seen == start
    assert anomaly.last_seen == next_day


def test_the_same_run_recorded_again_in_the_same_lifetime_is_not_counted_twice(tenant):
    record_loop(tenant, GROWING)
    record_loop(tenant, [(3, 2200), (4, 3200)])  # re-sent iterations of the run already seen
    [anomaly] = Anomaly.objects.filter(tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP)
    assert anomaly.count == 1


def test_a_loop_in_a_later_lifetime_is_notified_again_and_growth_of_the_same_run_is_not(tenant, settings):
    """Whether the next day's loop reached the webhooks depended on whether someone had acknowledged the first: an
    open anomaly took it in silently."""
    from tenants.models import WebhookDelivery
    from tenants.webhooks import webhook_endpoint_create
    from usage.services.anomalies import anomaly_notify

    settings.WEBHOOK_ALLOW_PRIVATE = True
    start = timezone.now() - datetime.timedelta(days=3)

    def notified_event_ids():
        [anomaly] = Anomaly.objects.filter(tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP)
        anomaly_notify(anomaly_id=anomaly.pk)  # what the recording task hands over after its commit
        return sorted(WebhookDelivery.objects.values_list("event_id", flat=True))

    with time_machine.travel(start, tick=False):
        webhook_endpoint_create(tenant=tenant, url="http://127.0.0.1:9/hook", event_types=["anomaly.detected"])
        record_loop(tenant, GROWING)
        first = notified_event_ids()
        assert len(first) == 1
        record_loop(tenant, [(5, 4600)])  # the same run goes on growing: no second message
        assert notified_event_ids() == first
    with time_machine.travel(start + datetime.timedelta(hours=30), tick=False):
        record_loop(tenant, GROWING)  # a new lifetime, the anomaly still open
        again = notified_event_ids()
    assert len(again) == 2 and set(first) < set(again)


def test_a_rerun_under_the_same_session_id_within_a_day_has_its_loop_seen(tenant):
    """A re-run CI job keeps its session id and aw-sdk numbers its calls from 1 again: the first run's higher
    indexes kept the window, so the new run's growth was never looked at."""
    record_loop(tenant, [(index, 1000) for index in range(1, 21)], session_id="ci-run-888")  # 20 normal calls
    assert not Anomaly.objects.exists()
    record_loop(tenant, [(index, int(1000 * 1.5 ** (index - 1))) for index in range(1, 6)], session_id="ci-run-888")
    [anomaly] = Anomaly.objects.filter(tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP)
    assert anomaly.session_id == "ci-run-888" and anomaly.details["iterations"][-1] == 5
