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
