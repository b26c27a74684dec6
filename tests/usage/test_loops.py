"""Runaway-loop detection while recording: four iterations of a session, each > 1.4× the one before."""

from usage.models import Anomaly


def send(api, session_id: str, iterations: list[tuple[int, int]], team: str | None = "agents", **extra):
    events = []
    for index, prompt_tokens in iterations:
        event = {"model": "gpt-4o", "prompt_tokens": prompt_tokens, "completion_tokens": 10,
                 "session_id": session_id, "iteration_index": index, **extra}
        if team:
            event["team"] = team
        events.append(event)
    response = api.post("/v1/ingest", {"events": events}, format="json")
    assert response.status_code == 202, response.content


def loops(tenant):
    return list(Anomaly.objects.filter(tenant=tenant, kind=Anomaly.Kind.RUNAWAY_LOOP).order_by("id"))


def test_four_iterations_each_over_1_4x_open_one_anomaly(tenant, telemetry_api, recording):
    send(telemetry_api, "run-1", [(1, 1000), (2, 1500), (3, 2200), (4, 3200)])
    recording()
    [anomaly] = loops(tenant)
    assert anomaly.session_id == "run-1" and anomaly.status == "open" and anomaly.count == 1
    assert anomaly.team.name == "agents"
    assert anomaly.details["prompt_tokens"] == [1000, 1500, 2200, 3200]
    assert anomaly.details["iterations"] == [1, 2, 3, 4]
    assert anomaly.details["ratios"] == [1.5, 1.4667, 1.4545]
    assert anomaly.first_seen == anomaly.last_seen


def test_one_ratio_of_1_33_opens_nothing(tenant, telemetry_api, recording):
    send(telemetry_api, "run-2", [(1, 1000), (2, 1500), (3, 2000), (4, 3000)])
    recording()
    assert loops(tenant) == []


def test_growth_of_exactly_1_4_is_not_a_loop(tenant, telemetry_api, recording):
    send(telemetry_api, "run-3", [(1, 1000), (2, 1400), (3, 1960), (4, 2744)])
    recording()
    assert loops(tenant) == []


def test_out_of_order_and_duplicated_iterations_open_exactly_one_anomaly(tenant, telemetry_api, recording):
    for index, tokens in [(3, 2200), (1, 1000), (4, 3200), (2, 1500)]:
        send(telemetry_api, "run-4", [(index, tokens)])
    # The SDK may send an iteration twice (no event id): same index, same size.
    send(telemetry_api, "run-4", [(2, 1500), (4, 3200)])
    send(telemetry_api, "run-4", [(3, 2200)])
    recording()
    [anomaly] = loops(tenant)
    assert anomaly.details["prompt_tokens"] == [1000, 1500, 2200, 3200]
    assert anomaly.count == 1


def test_six_growing_iterations_keep_one_anomaly_and_count_the_detections(tenant, telemetry_api, recording):
    tokens = [1000, 1500, 2200, 3200, 4600, 6600]
    for index, prompt_tokens in enumerate(tokens, start=1):
        send(telemetry_api, "run-5", [(index, prompt_tokens)])
        recording()
    [anomaly] = loops(tenant)
    assert anomaly.count == 3  # iterations 4, 5 and 6 each extended the run
    assert anomaly.details["iterations"] == [3, 4, 5, 6]
    assert anomaly.details["prompt_tokens"] == [2200, 3200, 4600, 6600]
    assert anomaly.last_seen > anomaly.first_seen


def test_iterations_without_a_session_are_ignored(tenant, telemetry_api, recording):
    events = [{"model": "gpt-4o", "prompt_tokens": tokens, "iteration_index": index}
              for index, tokens in enumerate([1000, 1500, 2200, 3200, 4600], start=1)]
    assert telemetry_api.post("/v1/ingest", {"events": events}, format="json").status_code == 202
    recording()
    assert loops(tenant) == []


def test_sessions_are_separate_and_so_are_tenants(tenant, other_tenant, telemetry_api, other_admin_api, recording):
    send(telemetry_api, "run-6", [(1, 1000), (2, 1500)])
    send(telemetry_api, "run-7", [(3, 2200), (4, 3200)])
    send(other_admin_api, "run-6", [(3, 2200), (4, 3200)])
    recording()
    assert loops(tenant) == [] and loops(other_tenant) == []


def test_an_acknowledged_loop_is_not_reopened_by_the_same_run(tenant, telemetry_api, admin_api, recording):
    send(telemetry_api, "run-8", [(1, 1000), (2, 1500), (3, 2200), (4, 3200)])
    recording()
    [anomaly] = loops(tenant)
    assert admin_api.post(f"/v1/anomalies/{anomaly.pk}/ack").status_code == 200
    # The agent goes on, but the prompt stops growing: nothing new.
    send(telemetry_api, "run-8", [(5, 3300)])
    recording()
    assert [a.status for a in loops(tenant)] == ["acknowledged"]
    # It starts growing again: a new open anomaly.
    send(telemetry_api, "run-8", [(6, 4700), (7, 6700), (8, 9500)])
    recording()
    assert [a.status for a in loops(tenant)] == ["acknowledged", "open"]
