"""PostgreSQL drops the server's persistent connections between requests (a restart, an idle timeout,
pg_terminate_backend): the next requests are still answered, none refused. The health check that guarantees it
sends no `SELECT 1` while a connection is healthy (agentwatch_site/postgresql/base.py)."""

import httpx
import psycopg
import pytest
from django.db import connection, connections

from tests.conftest import make_key, subprocess_env
from tests.faults.conftest import ServerProcess
from usage.models import UsageEvent

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def _terminate_other_backends() -> int:
    """Ends every other connection to the test database and waits (up to 5 s each) until its backend has exited:
    pg_terminate_backend alone only signals it, and a request racing a backend that is still exiting is a drop
    *during* the request, which no health check can cover."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def test_requests_after_postgres_dropped_every_connection_are_all_answered(tenant):
    key = make_key(tenant, "telemetry", "agents")
    server = ServerProcess(subprocess_env(DB_CONN_MAX_AGE="600"), workers=2, name="dropped").start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            def post(n: int) -> int:
                return client.post("/v1/ingest", json={"model": "gpt-4o", "prompt_tokens": 10,
                                                       "event_id": f"drop-{n}", "session_id": "s"}).status_code

            assert [post(n) for n in range(20)] == [202] * 20  # both workers now hold a connection
            assert _terminate_other_backends() >= 1
            after = [post(n) for n in range(20, 40)]
            checks = [client.get("/v1/budget-check", params={"session_id": "s", "limit_usd": "1"}).status_code
                      for _ in range(10)]
    finally:
        server.stop()
    assert after == [202] * 20
    assert checks == [200] * 10
    assert UsageEvent.objects.filter(tenant=tenant).count() == 40


def test_a_busy_healthy_connection_is_checked_without_a_round_trip(transactional_db, monkeypatch):
    from agentwatch_site.postgresql import base

    connection.ensure_connection()
    wrapper = connections["default"]
    round_trips = []
    monkeypatch.setattr(type(wrapper), "is_usable", lambda self: round_trips.append(1) or True)

    def check():
        wrapper.health_check_enabled, wrapper.health_check_done = True, False
        wrapper.close_if_health_check_failed()

    check()  # not checked for a while: SELECT 1
    check()  # checked a moment ago and the socket is quiet: no round trip
    check()
    assert round_trips == [1]
    later = base.time.monotonic() + base.QUIET_SKIP_SECONDS + 1
    monkeypatch.setattr(base.time, "monotonic", lambda: later)
    check()  # idle for longer: a peer may have vanished silently, so SELECT 1 again
    assert round_trips == [1, 1]
    assert wrapper.connection is not None

    # Dropped by the server: the socket turns readable, so the real check runs and the connection is replaced.
    pid = wrapper.connection.info.backend_pid
    monkeypatch.undo()
    check()
    with psycopg.connect(wrapper.connection.info.dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    check()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid
