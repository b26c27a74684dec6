"""Multi-row statements for the two hot paths (ingest inserts, recording updates).

On PostgreSQL each column travels as ONE array parameter and `unnest` turns the arrays back into rows, so a
1,000-row statement has ~20 parameters instead of ~20,000: with one placeholder per value, psycopg spent more
time splitting the query and adapting parameters than PostgreSQL spent running it (bench/RESULTS.md).
Elsewhere (SQLite) they are plain multi-row INSERTs and executemany UPDATEs.

Table, column and type names always come from the model, never from input; values are parameters.
"""

import functools
import json

from django.db import connection, models

from agentwatch_site import db

CHUNK_ROWS = 1000


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _pg_array_type(field: models.Field) -> tuple[str, str]:
    """(array type of the parameter, cast back in the SELECT/SET): JSON travels as text[] and is cast per row."""
    if isinstance(field, models.JSONField):
        return "text[]", "::jsonb"
    db_type = field.rel_db_type(connection) if field.primary_key else field.db_type(connection)
    return f"{db_type}[]", ""


def _pg_values(field: models.Field, values: list) -> list:
    if isinstance(field, models.JSONField):
        return [None if v is None else json.dumps(v) for v in values]
    return values


@functools.cache
def _insert_statement(model, vendor: str, ignore_conflicts: bool, *,
                      single_row: bool = False) -> tuple[list[models.Field], str]:
    """The model's columns and the INSERT for them, built once per model (on the ingest path, building it —
    db_type per field, quoting — cost more than running it). On PostgreSQL: one array per column, or for a
    single row one scalar per column (psycopg adapts scalars far faster than 20 one-element arrays); elsewhere
    the statement's head, the VALUES rows being added per call."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    table = _quote(model._meta.db_table)
    columns = ", ".join(_quote(f.column) for f in fields)
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    if vendor != "postgresql":
        return fields, f"INSERT INTO {table} ({columns}) VALUES {{rows}}{conflict}"  # noqa: S608
    if single_row:
        casts = []
        for field in fields:
            array_type, cast = _pg_array_type(field)
            casts.append(f"%s::{array_type[:-2]}{cast}")
        return fields, f"INSERT INTO {table} ({columns}) VALUES ({', '.join(casts)}){conflict}"  # noqa: S608
    types, selects = [], []
    for i, field in enumerate(fields):
        array_type, cast = _pg_array_type(field)
        types.append(f"%b::{array_type}")
        selects.append(f"c{i}{cast}")
    aliases = ", ".join(f"c{i}" for i in range(len(fields)))
    return fields, (f"INSERT INTO {table} ({columns}) SELECT {', '.join(selects)} "  # noqa: S608
                    f"FROM unnest({', '.join(types)}) AS u({aliases}){conflict}")


def _column(field: models.Field, chunk: list[dict]) -> list:
    """The chunk's values for one field; rows without it take the field's default (evaluated once)."""
    name = field.attname
    try:
        return [row[name] for row in chunk]
    except KeyError:
        default = field.get_default()
        return [row.get(name, default) for row in chunk]


def insert_rows(model, rows: list[dict], *, ignore_conflicts: bool = True) -> None:
    """INSERT rows given as {attname: value} (missing columns take the field default), in one statement per
    CHUNK_ROWS rows; with ignore_conflicts a row violating a unique constraint is skipped (ON CONFLICT DO NOTHING).
    One statement needs no explicit transaction: in autocommit it is atomic and committed when it returns.
    On PostgreSQL the statement is prepared once per connection (agentwatch_site/db.py)."""
    if not rows:
        return
    if connection.vendor == "postgresql" and len(rows) == 1:
        fields, sql = _insert_statement(model, connection.vendor, ignore_conflicts, single_row=True)
        db.execute(sql, [_pg_values(field, _column(field, rows))[0] for field in fields])
        return
    fields, sql = _insert_statement(model, connection.vendor, ignore_conflicts)
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        if connection.vendor == "postgresql":
            db.execute(sql, [_pg_values(field, _column(field, chunk)) for field in fields])
        else:
            columns = [_column(field, chunk) for field in fields]
            params = [field.get_db_prep_save(value, connection)
                      for values in zip(*columns, strict=True) for field, value in zip(fields, values, strict=True)]
            placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
            with connection.cursor() as cursor:
                cursor.execute(sql.format(rows=", ".join([placeholder] * len(chunk))), params)


@functools.cache
def _update_statement(model, field_names: tuple[str, ...]) -> str:
    """UPDATE … FROM unnest(one array per column) for these fields, by primary key (PostgreSQL), built once."""
    meta = model._meta
    types, assignments = [f"%b::{_pg_array_type(meta.pk)[0]}"], []
    for i, name in enumerate(field_names):
        field = meta.get_field(name)
        array_type, cast = _pg_array_type(field)
        types.append(f"%b::{array_type}")
        assignments.append(f"{_quote(field.column)} = v.c{i}{cast}")
    aliases = ", ".join(f"c{i}" for i in range(len(field_names)))
    return (f"UPDATE {_quote(meta.db_table)} AS t SET {', '.join(assignments)} "  # noqa: S608
            f"FROM unnest({', '.join(types)}) AS v(pk, {aliases}) WHERE t.{_quote(meta.pk.column)} = v.pk")


def update_rows(model, field_names: list[str], objs: list) -> None:
    """Write these fields of many model instances by primary key: UPDATE … FROM unnest(…) on PostgreSQL (built
    once and prepared: arrays travel with server-side binding instead of being quoted element by element into
    the query text), executemany elsewhere. (Django's bulk_update builds a CASE per field and row: slow to build
    and to plan.) Rows are written in primary-key order, so concurrent writers lock them in the same order."""
    if not objs:
        return
    meta = model._meta
    fields = [meta.get_field(name) for name in field_names]
    objs = sorted(objs, key=lambda o: o.pk)
    for start in range(0, len(objs), CHUNK_ROWS):
        chunk = objs[start:start + CHUNK_ROWS]
        if connection.vendor == "postgresql":
            params = [[o.pk for o in chunk]]
            params += [_pg_values(field, [getattr(o, field.attname) for o in chunk]) for field in fields]
            db.execute(_update_statement(model, tuple(field_names)), params)
        else:
            table, pk_column = _quote(meta.db_table), _quote(meta.pk.column)
            sets = ", ".join(f"{_quote(f.column)} = %s" for f in fields)
            sql = f"UPDATE {table} SET {sets} WHERE {pk_column} = %s"  # noqa: S608
            with connection.cursor() as cursor:
                cursor.executemany(sql, [
                    [f.get_db_prep_save(getattr(o, f.attname), connection) for f in fields]
                    + [meta.pk.get_db_prep_value(o.pk, connection)]
                    for o in chunk
                ])
