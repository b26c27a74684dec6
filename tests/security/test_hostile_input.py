"""Property-based hostile input: random and malicious bodies, fields and headers never produce a 5xx, and the
database holds only valid rows afterwards."""

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usage.models import UsageEvent

NASTY_STRINGS = [
    "'; DROP TABLE usage_usageevent; --", "{{ settings.SECRET_KEY }}", "{% debug %}", "<script>alert(1)</script>",
    "\x00", "a\x00b", "\ud800", "../../etc/passwd", "${jndi:ldap://x}", "%00", "💸" * 50, "x" * 10_000,
    "' OR '1'='1", "\u202e", "NaN", "Infinity", "-1", "1e309",
]
FIELDS = ["model", "prompt_tokens", "completion_tokens", "latency_ms", "identified_risks", "project", "team",
          "session_id", "iteration_index", "event_id", "timestamp", "provider", "customer_id", "user_id",
          "feature_id", "status", "metadata"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=300), st.sampled_from(NASTY_STRINGS),
)
json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=20), children, max_size=5)), max_leaves=20)
events = st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, json_values)) | json_values
bodies = st.one_of(events, st.fixed_dictionaries({"events": st.lists(events, max_size=5)}), json_values)
HYPOTHESIS = settings(max_examples=150, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_only_valid_rows():
    for event in UsageEvent.objects.all():
        assert event.model.strip() and len(event.model) <= 200
        assert event.prompt_tokens >= 0 and event.completion_tokens >= 0 and event.latency_ms >= 0
        assert "\x00" not in event.model + event.team_name + event.project + event.session_id
        assert isinstance(event.identified_risks, list)
        assert event.status in ("ok", "error")


@HYPOTHESIS
@given(body=bodies)
def test_random_json_bodies_never_get_a_5xx(tenant, telemetry_key, body):
    response = Client().post("/v1/ingest", json.dumps(body), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code in (202, 400), response.content[:500]
    assert "error" in response.json() or response.status_code == 202
    assert_only_valid_rows()


@HYPOTHESIS
@given(raw=st.binary(max_size=2000))
def test_random_bytes_never_get_a_5xx(tenant, telemetry_key, raw):
    response = Client().post("/v1/ingest", raw, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code in (202, 400)
    assert_only_valid_rows()


@HYPOTHESIS
@given(header=st.text(max_size=500))
def test_random_authorization_headers_get_401(header):
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        header = header.encode("utf-8").decode("latin-1")
    response = Client().get("/v1/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("value", NASTY_STRINGS[:4])
def test_injection_text_in_a_valid_field_is_stored_verbatim(tenant, telemetry_key, value, recording):
    body = {"model": "gpt-4o", "team": value, "project": value, "session_id": value, "prompt_tokens": 10}
    response = Client().post("/v1/ingest", json.dumps(body), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {telemetry_key}")
    assert response.status_code == 202
    recording()
    event = UsageEvent.objects.get(tenant=tenant)
    assert (event.team.name, event.project, event.session_id) == (value, value, value)
