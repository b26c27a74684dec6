"""Shared fixtures. The configuration under test is the one the environment selects (see README):
embedded (SQLite, eager Celery) by default, or PostgreSQL + Redis with a real Celery worker process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from tenants.models import ApiKey
from tenants.services import api_key_create
from tests.factories import TenantFactory

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_MODE = bool(settings.REDIS_URL)

requires_production = pytest.mark.skipif(not PRODUCTION_MODE, reason="needs PostgreSQL + Redis (REDIS_URL set)")


def clear_cache() -> None:
    """Forget rate-limit counters and flags between tests without flushing the Celery broker's keys."""
    if PRODUCTION_MODE:
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:*", count=1000))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _fresh_cache():
    from agentwatch_site.redis_guard import redis_guard_reset
    from tenants.authentication import _touched_here
    from tenants.ratelimit import rate_limit_leases_forget
    from tenants.selectors import api_key_cache_forget
    from usage.services.ingest import recorder_wake_forget

    clear_cache()
    api_key_cache_forget()
    recorder_wake_forget()
    rate_limit_leases_forget()
    _touched_here.clear()
    redis_guard_reset()
    yield


@pytest.fixture(autouse=True)
def _one_rate_limit_window(monkeypatch):
    """Count a test's requests in the rate-limit window it started in, even if the clock crosses a minute
    mid-test (a CI run that started at hh:mm:58 let 112 of 300 requests through, 12 of them in the next
    minute's fresh count). Retry-After still follows the real clock."""
    from tenants import ratelimit

    real_window = ratelimit._window
    window, _ = real_window(time.time())
    monkeypatch.setattr(ratelimit, "_window", lambda now: (window, real_window(now)[1]))


def ensure_price_catalog() -> None:
    """Transactional tests truncate every table, the seeded price catalogue included: put it back."""
    import importlib

    from django.apps import apps

    from usage.models import ModelPrice

    if not ModelPrice.objects.filter(tenant__isnull=True).exists():
        importlib.import_module("usage.migrations.0002_seed_price_catalog").seed(apps, None)


@pytest.fixture
def tenant(db):
    ensure_price_catalog()
    return TenantFactory(name="Alice Org", slug="alice")


@pytest.fixture
def other_tenant(db):
    return TenantFactory(name="Bob Org", slug="bob")


def make_key(tenant, scope=ApiKey.Scope.ADMIN, name="test key") -> str:
    _, raw = api_key_create(tenant=tenant, name=name, scope=scope)
    return raw


def api_client_for(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.fixture
def admin_key(tenant):
    return make_key(tenant, ApiKey.Scope.ADMIN, "admin key")


@pytest.fixture
def telemetry_key(tenant):
    return make_key(tenant, ApiKey.Scope.TELEMETRY, "telemetry key")


@pytest.fixture
def admin_api(admin_key):
    return api_client_for(admin_key)


@pytest.fixture
def telemetry_api(telemetry_key):
    return api_client_for(telemetry_key)


@pytest.fixture
def other_admin_api(other_tenant):
    return api_client_for(make_key(other_tenant, ApiKey.Scope.ADMIN, "other admin key"))


# --- A real Celery worker process (production configuration) ----------------------------------------------

def database_url_for_subprocess() -> str:
    """The URL of the database the tests use right now (the test database), for child processes."""
    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    host = cfg.get("HOST") or "127.0.0.1"
    port = cfg.get("PORT") or 5432
    auth = cfg.get("USER") or "postgres"
    if cfg.get("PASSWORD"):
        auth += f":{cfg['PASSWORD']}"
    return f"postgres://{auth}@{host}:{port}/{cfg['NAME']}"


def psycopg_params() -> dict:
    """What psycopg.connect() needs to open a second connection to the test database (PostgreSQL)."""
    return {k: v for k, v in connection.get_connection_params().items() if k != "cursor_factory"}


def terminate_backend(db) -> None:
    """Have PostgreSQL end the server process of Django connection `db`, as a restart or failover would."""
    import psycopg

    with psycopg.connect(**psycopg_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [db.connection.info.backend_pid])


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_SETTINGS_MODULE": "agentwatch_site.settings",
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "*",
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "PYTHONUNBUFFERED": "1",
        # Workers are ready once they log "ready." (INFO), whatever LOG_LEVEL the shell running the tests has.
        "LOG_LEVEL": "INFO",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


class WorkerProcess:
    def __init__(self, *, concurrency: int = 2, name: str = "test", env: dict | None = None,
                 queues: str = "celery,webhooks"):
        self.concurrency = concurrency
        self.queues = queues
        self.name = name
        self.env = env or subprocess_env()
        self.proc: subprocess.Popen | None = None
        self.log_path = ROOT / "var" / f"celery-worker-{name}-{os.getpid()}.log"

    def start(self) -> "WorkerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "agentwatch_site", "worker",
             f"--concurrency={self.concurrency}", "--pool=prefork", "-n", f"{self.name}-{os.getpid()}@%h",
             "-Q", self.queues,
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.log_path.read_bytes().find(b"ready.") >= 0:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        self.stop()  # a worker that never became ready must not outlive the test that started it
        raise RuntimeError(f"celery worker did not start: {self.log_path.read_text()[-2000:]}")

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture
def celery_worker_process(transactional_db):
    """A real `celery worker` against the test database and Redis (production configuration only)."""
    if not PRODUCTION_MODE:
        pytest.skip("the embedded configuration runs tasks eagerly in-process")
    worker = WorkerProcess().start()
    yield worker
    worker.stop()


@pytest.fixture
def recording(request):
    """Events get recorded the way the configuration does it: eagerly in-process (embedded), or by a real
    worker process (production), so the test then waits for `wait_until_recorded()`."""
    if PRODUCTION_MODE:
        request.getfixturevalue("celery_worker_process")
    else:
        request.getfixturevalue("db")
    return wait_until_recorded


def wait_until_recorded(timeout: float = 30.0) -> None:
    from usage.models import UsageEvent

    deadline = time.monotonic() + timeout
    while UsageEvent.objects.filter(recorded_at__isnull=True).exists():
        if time.monotonic() > deadline:
            pending = UsageEvent.objects.filter(recorded_at__isnull=True).count()
            raise AssertionError(f"{pending} events still unrecorded after {timeout}s")
        time.sleep(0.05)


SLOW_MARKERS = ("faults", "browser", "schemathesis")


@pytest.fixture
def migrations_restored(transactional_db):
    """For a test that migrates an app backwards: every app is migrated forward to its latest migration afterwards,
    so the tests after it run on the current schema."""
    yield
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def wait_for_sdk_events(client, count: int, timeout: float = 20.0) -> None:
    """aw-sdk posts from a background thread: wait until the server has stored `count` events and answered every
    post `client` queued. (In the embedded configuration the server records the events inside that request, on
    the database connection the test shares with the live server: the test must not use it before then.)"""
    from usage.models import UsageEvent

    posts = client._logger._queue  # aw-sdk 1.0.1's queue of posts; each is done once it has had its answer
    deadline = time.monotonic() + timeout
    while posts.unfinished_tasks or UsageEvent.objects.count() < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{UsageEvent.objects.count()} of {count} events arrived after {timeout}s "
                                 f"({posts.unfinished_tasks} posts unanswered)")
        time.sleep(0.05)


def pytest_collection_modifyitems(config, items):
    """The slow suites run once, on the production configuration (PostgreSQL + Redis), not twice.
    In production mode, a test that waits for a worker process must commit what it writes, so it runs
    as a transactional test."""
    if PRODUCTION_MODE:
        for item in items:
            if "recording" in getattr(item, "fixturenames", ()) or "celery_worker_process" in getattr(
                item, "fixturenames", ()
            ):
                item.add_marker(pytest.mark.django_db(transaction=True))
        return
    skip = pytest.mark.skip(reason="runs on the production configuration only (set DATABASE_URL and REDIS_URL)")
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_MARKERS):
            item.add_marker(skip)
