import threading

import httpx
import pytest

from tests.conftest import requires_production


def test_101st_admin_request_in_a_minute_gets_429_with_retry_after(tenant, admin_api, telemetry_api):
    statuses = [admin_api.get("/v1/me").status_code for _ in range(100)]
    assert statuses == [200] * 100
    response = admin_api.get("/v1/me")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "100" in error["message"]
    # Telemetry has its own bucket.
    ingest = telemetry_api.post("/v1/ingest", {"model": "gpt-4o", "prompt_tokens": 1}, format="json")
    assert ingest.status_code == 202


def test_rate_limit_is_per_tenant(tenant, admin_api, other_admin_api):
    tenant.admin_rate_limit_per_minute = 2
    tenant.save()
    assert [admin_api.get("/v1/me").status_code for _ in range(3)] == [200, 200, 429]
    assert other_admin_api.get("/v1/me").status_code == 200


def test_zero_means_unlimited(tenant, admin_api):
    tenant.admin_rate_limit_per_minute = 0
    tenant.save()
    assert all(admin_api.get("/v1/me").status_code == 200 for _ in range(120))


def test_rate_limited_telemetry_is_counted(tenant, telemetry_api):
    from tenants.models import RejectedTelemetry

    tenant.telemetry_rate_limit_per_minute = 1
    tenant.save()
    body = {"model": "gpt-4o", "prompt_tokens": 1}
    assert telemetry_api.post("/v1/ingest", body, format="json").status_code == 202
    assert telemetry_api.post("/v1/ingest", body, format="json").status_code == 429
    assert telemetry_api.post("/v1/ingest", body, format="json").status_code == 429
    assert RejectedTelemetry.objects.get(tenant=tenant, reason="rate_limited").count == 2


@requires_production
def test_300_concurrent_requests_let_exactly_100_through(live_server, tenant, admin_key):
    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(30)

    def worker():
        session = httpx.Client()
        barrier.wait()
        for _ in range(10):
            status = session.get(f"{live_server.url}/v1/me", headers={"Authorization": f"Bearer {admin_key}"},
                                 timeout=30).status_code
            with lock:
                results.append(status)

    threads = [threading.Thread(target=worker) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 300
    assert results.count(200) == 100
    assert results.count(429) == 200


@pytest.mark.django_db
def test_without_redis_each_process_holds_a_tenant_to_its_limit(settings, tenant, admin_key, other_admin_api):
    """Redis unreachable: a tenant within its limit loses nothing, and a runaway one is still stopped (by this
    process's own count) instead of being let through unlimited."""
    from tenants.selectors import api_key_cache_forget
    from tests.conftest import api_client_for

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}
    tenant.admin_rate_limit_per_minute = 2
    tenant.save()
    client = api_client_for(admin_key)
    assert [client.get("/v1/me").status_code for _ in range(3)] == [200, 200, 429]
    assert other_admin_api.get("/v1/me").status_code == 200
    tenant.admin_rate_limit_per_minute = 5
    tenant.save()
    api_key_cache_forget()  # the key's tenant, remembered for a second, has the old limit
    # /v1/me shows this process's own count: 3 hits so far, and this one makes 4.
    admin = client.get("/v1/me").json()["rate_limits"]["admin"]
    assert (admin["used_this_minute"], admin["remaining_this_minute"]) == (4, 1)


@pytest.mark.django_db
def test_while_redis_is_skipped_after_a_timeout_the_process_counts_on_its_own(tenant, monkeypatch):
    from tenants import ratelimit

    tenant.admin_rate_limit_per_minute = 3
    tenant.save()
    monkeypatch.setattr(ratelimit, "redis_skipped", lambda: True)
    monkeypatch.setattr(ratelimit, "_incr_with_expiry", lambda *args: pytest.fail("asked Redis during the gap"))
    decisions = [ratelimit.rate_limit_hit(tenant=tenant, bucket="admin") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].remaining == 0
    # The next minute starts a fresh count.
    monkeypatch.setattr(ratelimit, "_window", lambda now: (10**9, 60))
    assert ratelimit.rate_limit_hit(tenant=tenant, bucket="admin").allowed


@pytest.mark.django_db
def test_processes_leasing_numbers_share_one_exact_count(tenant, monkeypatch):
    """Three processes (each its own lease table) take turns: every hit gets a distinct number, exactly the limit
    is let through, and the shared counter is touched for a fraction of the hits."""
    from tenants import ratelimit

    tenant.admin_rate_limit_per_minute = 10_000
    tenant.save()
    real_incr = ratelimit._incr_with_expiry
    round_trips = []
    monkeypatch.setattr(ratelimit, "_incr_with_expiry",
                        lambda key, amount=1: round_trips.append(amount) or real_incr(key, amount))
    monkeypatch.setattr(ratelimit, "_window", lambda now: (1, 30))  # one window, whatever the clock does
    processes = [{}, {}, {}]
    decisions = []
    for n in range(10_300):
        monkeypatch.setattr(ratelimit, "_leases", processes[n % 3])
        decisions.append(ratelimit.rate_limit_hit(tenant=tenant, bucket="admin"))
    numbers = [d.count for d in decisions]
    assert len(set(numbers)) == len(numbers)
    assert sum(d.allowed for d in decisions) == 10_000
    assert all(not d.allowed for d in decisions[-300:])
    # Leases shrink to one number as the limit nears (2,000 to go): 4,121 round trips for 10,300 hits.
    assert max(round_trips) == 10 and len(round_trips) < 10_300 / 2


@pytest.mark.django_db
def test_a_small_limit_is_counted_one_hit_at_a_time(tenant, monkeypatch):
    from tenants import ratelimit

    tenant.admin_rate_limit_per_minute = 1_999
    tenant.save()
    amounts = []
    real_incr = ratelimit._incr_with_expiry
    monkeypatch.setattr(ratelimit, "_incr_with_expiry",
                        lambda key, amount=1: amounts.append(amount) or real_incr(key, amount))
    for _ in range(5):
        ratelimit.rate_limit_hit(tenant=tenant, bucket="admin")
    assert amounts == [1] * 5
