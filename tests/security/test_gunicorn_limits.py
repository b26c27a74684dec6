import socket

import pytest

from tests.conftest import requires_production, subprocess_env
from tests.faults.conftest import ServerProcess


@pytest.fixture
def gunicorn_server(transactional_db):
    server = ServerProcess(subprocess_env(), workers=1, name="limits").start()
    yield server
    server.stop()


def raw_request(server, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        return sock.recv(4096)


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
