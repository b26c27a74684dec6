"""PostgreSQL backend: Django's, with a health check that costs no round trip while the connection is healthy.

CONN_HEALTH_CHECKS makes Django send `SELECT 1` before the first query of every request, so a connection that
PostgreSQL dropped between requests (a restart, an idle timeout, pg_terminate_backend, a proxy cut) is replaced
instead of failing the request — for /v1/ingest that would be a refused event. A server that drops a connection
closes its socket, usually after a FATAL message, so the round trip is skipped for a connection that is idle,
whose socket has nothing to read, and whose last real check is less than QUIET_SKIP_SECONDS old (a busy
connection gets one `SELECT 1` every QUIET_SKIP_SECONDS instead of one per request).
A peer that vanished without closing anything (failover behind the same address, a middlebox's idle timeout)
only shows on the next packet: a connection not really checked for longer gets Django's `SELECT 1`, and TCP
keepalives (settings.py) close such a socket within about a minute. When the socket is readable, or the
connection is not idle, Django's check decides as before.
"""

import select
import time

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus

QUIET_SKIP_SECONDS = 5.0


class DatabaseWrapper(base.DatabaseWrapper):
    _last_health_check = 0.0

    def close_if_health_check_failed(self):
        if self.connection is not None and self.health_check_enabled and not self.health_check_done:
            now = time.monotonic()
            if now - self._last_health_check < QUIET_SKIP_SECONDS and not self.pool and self._idle_socket_is_quiet():
                self.health_check_done = True
                return
            # A real check at least every QUIET_SKIP_SECONDS, however busy the connection.
            self._last_health_check = now
        super().close_if_health_check_failed()

    def _idle_socket_is_quiet(self) -> bool:
        connection = self.connection
        if connection.closed or connection.broken or connection.info.transaction_status != TransactionStatus.IDLE:
            return False
        try:
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable
