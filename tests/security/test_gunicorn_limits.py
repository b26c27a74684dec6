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


def envelope(reply: bytes) -> dict:
    """The JSON error of a raw HTTP answer (gunicorn closes the connection after its own errors)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head, head
    return json.loads(body)["error"]


@requires_production
@pytest.mark.parametrize("header", [b"Authorization: Bearer aw_live_" + b"A" * 10_240, b"X-Padding: " + b"A" * 10_240])
def test_a_10_kb_header_gets_431_never_a_5xx(gunicorn_server, header):
    reply = raw_request(gunicorn_server, b"GET /v1/me HTTP/1.1\r\nHost: localhost\r\n" + header + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431")
    error = envelope(reply)
    assert (error["type"], error["code"]) == ("invalid_request_error", "headers_too_large")
    assert "Too many request headers, or one too large" in error["message"]
    assert b"AAAA" not in reply  # the header's value is not echoed back


@requires_production
def test_a_request_line_over_the_limit_gets_a_json_414(gunicorn_server):
    reply = raw_request(gunicorn_server, b"GET /v1/usage/events?team=" + b"t" * 9_000 + b" HTTP/1.1\r\n"
                                         b"Host: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414")
    error = envelope(reply)
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_line_too_long")
    assert "query string" in error["message"] and "> 8190)" in error["message"]


@requires_production
@pytest.mark.parametrize("request_line", [b"GET /v1/me\r\n", b"G\x01T /v1/me HTTP/1.1\r\n", b"GET /v1/me HTTP/9.9\r\n"])
def test_a_malformed_request_line_gets_a_json_400(gunicorn_server, request_line):
    reply = raw_request(gunicorn_server, request_line + b"Host: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    error = envelope(reply)
    assert (error["type"], error["code"]) == ("invalid_request_error", "malformed_request")


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


@requires_production
@pytest.mark.parametrize(("proxy_header", "header", "secure"), [
    ("1", "X-Forwarded-Proto: https", True),   # the proxy's header, trusted
    ("1", "X-Forwarded-Ssl: on", False),       # passed on from the client by a proxy setting only the one above
    ("1", "X-Forwarded-Protocol: ssl", False),
    ("0", "X-Forwarded-Proto: https", False),  # SECURE_PROXY_SSL_HEADER=0: no header makes a request HTTPS
    ("0", "X-Forwarded-Ssl: on", False),
])
def test_only_the_proxys_x_forwarded_proto_makes_a_request_https(transactional_db, proxy_header, header, secure):
    """With HTTPS on, a plain-HTTP request is redirected to HTTPS unless a trusted proxy says it came over HTTPS.
    gunicorn also trusted X-Forwarded-Ssl and X-Forwarded-Protocol by default, and did with the setting off."""
    env = subprocess_env(HTTPS="1", SECURE_PROXY_SSL_HEADER=proxy_header, ALLOWED_HOSTS="localhost,127.0.0.1")
    server = ServerProcess(env, workers=1, name="scheme").start()
    try:
        reply = raw_exchange(server, f"GET /login/ HTTP/1.1\r\nHost: localhost\r\n{header}\r\n"
                                     "Connection: close\r\n\r\n".encode())
    finally:
        server.stop()
    status = reply.split(b"\r\n", 1)[0]
    assert (b" 200 " in status) if secure else (b" 301 " in status), reply[:300]
