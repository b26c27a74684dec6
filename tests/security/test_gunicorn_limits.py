import json
import socket

import pytest

from tenants.models import ApiKey
from tests.conftest import make_key, requires_production, subprocess_env
from tests.faults.conftest import ServerProcess
from usage.models import UsageEvent


@pytest.fixture
def gunicorn_server(transactional_db):
    server = ServerProcess(subprocess_env(), workers=1, name="limits").start()
    yield server
    server.stop()


def raw_request(server, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        return sock.recv(4096)


def raw_exchange(server, request: bytes) -> bytes:
    """Send `request` (with Connection: close) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def chunked_post(server, path: str, key: str, body: bytes, *, chunk_size: int) -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + chunk_size]), body[i:i + chunk_size])
                      for i in range(0, len(body), chunk_size))
    return raw_exchange(server, (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n"
                                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                                "Connection: close\r\n\r\n").encode() + chunks + b"0\r\n\r\n")


@requires_production
@pytest.mark.parametrize("header", [b"Authorization: Bearer aw_live_" + b"A" * 10_240, b"X-Padding: " + b"A" * 10_240])
def test_a_10_kb_header_gets_431_never_a_5xx(gunicorn_server, header):
    reply = raw_request(gunicorn_server, b"GET /v1/me HTTP/1.1\r\nHost: localhost\r\n" + header + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431")


@requires_production
def test_a_normal_request_through_gunicorn_still_works(gunicorn_server):
    reply = raw_request(gunicorn_server, b"GET /v1/me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer aw_live_x"
                                         b"\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 401")


@requires_production
def test_a_chunked_post_is_read_like_any_other(gunicorn_server, tenant):
    key = make_key(tenant, ApiKey.Scope.TELEMETRY)
    body = json.dumps({"event_id": "chunked-1", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 50,
                       "session_id": "chunked run"}).encode()
    reply = chunked_post(gunicorn_server, "/v1/ingest", key, body, chunk_size=16)
    assert reply.startswith(b"HTTP/1.1 202"), reply[:300]
    assert UsageEvent.objects.filter(tenant=tenant, event_id="chunked-1", session_id="chunked run").exists()


@requires_production
def test_a_chunked_body_over_the_limit_gets_413(gunicorn_server, tenant):
    key = make_key(tenant, ApiKey.Scope.TELEMETRY)
    body = json.dumps({"events": [{"model": "gpt-4o", "prompt_tokens": 1, "project": "p" * 200}] * 1000,
                       "pad": "x" * 800_000}).encode()
    assert 1024 * 1024 < len(body) < 1024 * 1024 + 16_384
    reply = chunked_post(gunicorn_server, "/v1/ingest", key, body, chunk_size=65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b'"request_too_large"' in reply
    assert not UsageEvent.objects.filter(tenant=tenant).exists()
