"""Shared benchmark helpers (bench/ingest.py, bench/budget_check.py): start gunicorn and a Celery worker with a
given environment and wait until they are ready, drive load (wrk for closed-loop throughput, a paced asyncio
client for open-loop latency), percentile maths, and appending a section to bench/RESULTS.md.

Typical use:
    env = bench_env(DATABASE_URL=..., REDIS_URL=..., ROOT_URLCONF="bench.urls")
    with start_gunicorn(env, workers=3) as web, start_worker(env) as worker:
        result = run_wrk(f"{web.url}/v1/bench/bare", body=b"{}", duration=10)
"""

import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOG_DIR = ROOT / "var" / "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_env(**overrides) -> dict:
    """The environment for server and worker processes: production settings unless overridden."""
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", "bench-secret-key")
    env.update({"DJANGO_SETTINGS_MODULE": "agentwatch_site.settings", "DEBUG": "0", "ALLOWED_HOSTS": "*",
                "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"})
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log_path: Path
    url: str = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _spawn(name: str, argv: list[str], env: dict) -> Service:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}-{os.getpid()}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child process owns it
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Service(name=name, proc=proc, log_path=log_path)


def wait_http(url: str, *, timeout: float = 30, expect: int = 200, service: Service | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if service is not None and service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local URL
                if response.status == expect:
                    return
                last = str(response.status)
        except OSError as exc:
            last = getattr(exc, "code", None) or repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s (last: {last})")


def start_gunicorn(env: dict, *, workers: int = 3, port: int | None = None, name: str = "gunicorn",
                   ready_path: str = "/livez") -> Service:
    """gunicorn with sync workers on 127.0.0.1, ready once `ready_path` answers 200 (liveness: a backlog left
    by an earlier run makes /healthz 503 until the worker drains it)."""
    port = port or free_port()
    service = _spawn(name, [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "agentwatch_site.wsgi",
                            "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--worker-class", "sync",
                            "--timeout", "60"], env)
    service.url = f"http://127.0.0.1:{port}"
    wait_http(service.url + ready_path, service=service)
    return service


def start_worker(env: dict, *, concurrency: int = 1, name: str = "celery",
                 queues: str = "celery,webhooks") -> Service:
    """One `celery worker` (prefork) on both queues, ready once it logs "ready."."""
    argv = [str(VENV_BIN / "celery"), "-A", "agentwatch_site", "worker", "--pool=prefork",
            f"--concurrency={concurrency}", "-n", f"{name}-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-Q", queues]
    # INFO (the bench's other processes log at WARNING): "ready." and the task lines are INFO.
    service = _spawn(name, argv, dict(env, LOG_LEVEL="INFO"))
    deadline = time.monotonic() + 30
    while b"ready." not in service.log_path.read_bytes():
        if service.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"celery worker did not start:\n{service.log_tail()}")
        time.sleep(0.2)
    return service


def start_beat(env: dict, *, name: str = "beat") -> Service:
    schedule = LOG_DIR / f"celerybeat-{os.getpid()}"
    return _spawn(name, [str(VENV_BIN / "celery"), "-A", "agentwatch_site", "beat",
                         "--schedule", str(schedule)], env)


# --- Percentiles ----------------------------------------------------------------------------------------------

def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of an unsorted list; nan for an empty one."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else math.nan}


# --- wrk (closed loop: as many requests as the server takes) ----------------------------------------------------

@dataclass
class WrkResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: int = 0
    raw: str = field(default="", repr=False)


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNIT_MS[unit]


def run_wrk(url: str, *, body: bytes, headers: dict | None = None, duration: float = 10, connections: int = 16,
            threads: int = 2) -> WrkResult:
    """POST `body` to `url` as fast as the server answers. Needs `wrk` (apt-get install wrk)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    lua = "wrk.method = 'POST'\n" f"wrk.body = {json.dumps(body.decode())}\n"
    lua += "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in all_headers.items())
    return run_wrk_script(url, lua=lua, duration=duration, connections=connections, threads=threads)


def run_wrk_script(url: str, *, lua: str, duration: float = 10, connections: int = 16,
                   threads: int = 2) -> WrkResult:
    """Run wrk with the given Lua script against `url` and parse its report."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency",
                "-s", script.name, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True,
                             timeout=duration + 60).stdout
    finally:
        os.unlink(script.name)
    distribution = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=_ms(distribution["50"]), p99_ms=_ms(distribution["99"]),
        non_2xx=int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        raw=out,
    )


@dataclass
class Sent:
    index: int
    started: float  # time.monotonic()
    finished: float
    status: int
    body: bytes


async def _post_once(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await reader.read()  # gunicorn's sync workers close the connection after each response
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


def build_post(host: str, port: int, path: str, body: bytes, headers: dict | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def paced_posts(url: str, *, rate: float, duration: float, body_for, headers: dict | None = None,
                on_sent=None, max_in_flight: int = 256) -> list[Sent]:
    """POST body_for(i) at `rate` per second for `duration` seconds (open loop); returns every request's timing.
    `on_sent(i, started)` is called as each request starts (e.g. to note what to look for in the database)."""
    parsed = urllib.request.urlparse(url)
    host, port, path = parsed.hostname, parsed.port, parsed.path

    async def main() -> list[Sent]:
        results: list[Sent] = []
        limit = asyncio.Semaphore(max_in_flight)
        tasks = []
        begin = time.monotonic()
        total = int(rate * duration)

        async def one(i: int):
            async with limit:
                started = time.monotonic()
                if on_sent:
                    on_sent(i, started)
                try:
                    status, body = await _post_once(host, port, build_post(host, port, path, body_for(i), headers))
                except OSError:
                    status, body = 0, b""
                results.append(Sent(i, started, time.monotonic(), status, body))

        for i in range(total):
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return results

    return asyncio.run(main())


# --- RESULTS.md -------------------------------------------------------------------------------------------------

def ensure_database(database_url: str, *, fresh: bool = False) -> None:
    """Create the benchmark's PostgreSQL database if it does not exist yet; with `fresh`, drop it first (each run
    then starts from empty tables: no earlier run's rows, dead tuples or pending autovacuum)."""
    import psycopg

    parts = urllib.parse.urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if fresh:
            if not name.endswith("_bench"):
                raise SystemExit(f"refusing to drop {name!r}: benchmark databases are named *_bench")
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(*, database_url: str, redis_url: str, fresh: bool = False) -> None:
    """Point this process at the benchmark's database and Redis, create (with `fresh`: re-create) and migrate
    the database."""
    os.environ.update(bench_env(DATABASE_URL=database_url, REDIS_URL=redis_url))
    ensure_database(database_url, fresh=fresh)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def write_results_section(heading: str, text: str, path: Path = ROOT / "bench" / "RESULTS.md") -> None:
    """Replace the `## heading` section of bench/RESULTS.md (or append it), leaving other benches' sections."""
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"## {heading}\n\n{text.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: section + "\n", current).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + section
    path.write_text(updated)
