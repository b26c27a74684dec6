"""Hot-path SQL helpers.

Django's psycopg 3 backend binds parameters on the client (the default, and right for the ORM), so PostgreSQL
parses and plans every statement it receives. The few statements run on every telemetry request — the budget
check's reads and the ingest INSERT — are instead sent with server-side binding and prepared once per
connection (`prepare=True`; settings.py enables it with `prepare_threshold`): later executions skip parsing and
planning (the budget check's read: 0.58 → 0.31 ms). Each statement keeps its cursor for the connection's life,
so psycopg also keeps what it looked up to send the parameters and read the columns (the check: 0.51 → 0.48 ms
in-process). They still go through Django's connection handling, error wrapping, execute wrappers and query log.
On SQLite they run as usual.

A `%b` placeholder sends that parameter in binary (arrays of many values: no quoting element by element);
elsewhere it is read as `%s`.
"""

import functools
import time

import psycopg
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections


def _run(sql: str, params: list | tuple, *, fetch: str | None):
    # One lookup of this thread's connection: through the `connection` proxy every attribute costs one.
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        with db.cursor() as cursor:
            cursor.execute(sql.replace("%b", "%s"), params)
            return _result(cursor, fetch)
    # What Django's cursor() does first (health check, connection set-up, no statement in a failed transaction),
    # then a server-binding cursor on the raw connection: same session, adapters and transaction.
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_no_broken_transaction()
    raw = _statement_cursor(db, sql)

    def execute(sql, params, many, context):
        with db.wrap_database_errors:
            raw.execute(sql, params, prepare=True)

    for wrapper in reversed(db.execute_wrappers):
        execute = functools.partial(wrapper, execute)
    started = time.monotonic()
    try:
        execute(sql, params, False, {"connection": db, "cursor": raw})
    finally:
        if db.queries_logged:
            db.queries_log.append({"sql": db.ops.compose_sql(sql, params),
                                   "time": f"{time.monotonic() - started:.3f}"})
    with db.wrap_database_errors:
        return _result(raw, fetch)


_MAX_STATEMENT_CURSORS = 64


def _statement_cursor(db, sql: str) -> psycopg.Cursor:
    """One server-binding cursor per statement and connection, kept while the connection lives. psycopg keeps a
    cursor's parameter dumpers and column loaders while it runs the same query object again, so a reused cursor
    skips looking them up on every execution (about a tenth of the budget check's CPU). A kept cursor holds its
    statement's last parameters and result until the statement runs again (an ingest batch's arrays: a few hundred
    kB per connection at most)."""
    held = getattr(db, "_statement_cursors", None)
    if held is None or held[0] is not db.connection:
        held = db._statement_cursors = (db.connection, {})
    cursors = held[1]
    cursor = cursors.get(sql)
    if cursor is None or cursor.closed:
        if len(cursors) >= _MAX_STATEMENT_CURSORS:
            cursors.clear()
        cursor = cursors[sql] = psycopg.Cursor(db.connection)
    return cursor


def _result(cursor, fetch: str | None):
    if fetch == "one":
        return cursor.fetchone()
    if fetch == "all":
        return cursor.fetchall()
    return cursor.rowcount


def fetch_one(sql: str, params: list | tuple) -> tuple | None:
    """Run one read and return its first row. `sql` must be a constant (it names a prepared statement)."""
    return _run(sql, params, fetch="one")


def fetch_all(sql: str, params: list | tuple) -> list[tuple]:
    """Run one read and return all its rows. `sql` must be a constant per shape (it names a prepared
    statement)."""
    return _run(sql, params, fetch="all")


def execute(sql: str, params: list | tuple) -> int:
    """Run one write and return its row count. `sql` must be a constant per shape (it names a prepared
    statement)."""
    return _run(sql, params, fetch=None)


def connection_lost(exc: Exception, *, opened=None) -> bool:
    """Whether `exc` is a database error that ended this thread's connection — a server restart or failover, a
    pooler recycling it, a terminated backend — rather than a statement's own failure or a failed connect (an
    unreachable database is not worth asking twice: it would only be waited for twice).

    After such an error the raw connection is closed (a failed connect never leaves one behind). Inside
    transaction.atomic, Django drops the connection when the rollback fails, and its exit may already have opened
    the next one: that counts only when `opened`, the raw connection open when the work began, is given and is no
    longer the one in use."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    raw = connections[DEFAULT_DB_ALIAS].connection
    if opened is not None and raw is not opened:
        return True
    return raw is not None and bool(getattr(raw, "closed", False))
