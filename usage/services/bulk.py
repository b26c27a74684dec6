"""Multi-row statements for the two hot paths (ingest inserts, recording updates).

On PostgreSQL each column travels as ONE array parameter and `unnest` turns the arrays back into rows, so a
1,000-row statement has ~20 parameters instead of ~20,000: with one placeholder per value, psycopg spent more
time splitting the query and adapting parameters than PostgreSQL spent running it (bench/RESULTS.md).
Elsewhere (SQLite) they are plain multi-row INSERTs and executemany UPDATEs.

Table, column and type names always come from the model, never from input; values are parameters.
"""

import json

from django.db import connection, models

CHUNK_ROWS = 1000


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _pg_column(field: models.Field, values: list) -> tuple[str, list, str]:
    """(array type for the parameter, the values as psycopg adapts them, cast back in the SELECT/SET)."""
    if isinstance(field, models.JSONField):
        return "text[]", [None if v is None else json.dumps(v) for v in values], "::jsonb"
    db_type = field.rel_db_type(connection) if field.primary_key else field.db_type(connection)
    return f"{db_type}[]", values, ""


def insert_rows(model, rows: list[dict], *, ignore_conflicts: bool = True) -> None:
    """INSERT rows given as {attname: value} (missing columns take the field default), in one statement per
    CHUNK_ROWS rows; with ignore_conflicts a row violating a unique constraint is skipped (ON CONFLICT DO NOTHING).
    One statement needs no explicit transaction: in autocommit it is atomic and committed when it returns."""
    if not rows:
        return
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    table = _quote(model._meta.db_table)
    columns = ", ".join(_quote(f.column) for f in fields)
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        if connection.vendor == "postgresql":
            types, params, selects = [], [], []
            for i, field in enumerate(fields):
                default = field.get_default() if any(field.attname not in row for row in chunk) else None
                array_type, values, cast = _pg_column(field, [row.get(field.attname, default) for row in chunk])
                types.append(f"%s::{array_type}")
                params.append(values)
                selects.append(f"c{i}{cast}")
            aliases = ", ".join(f"c{i}" for i in range(len(fields)))
            sql = (f"INSERT INTO {table} ({columns}) SELECT {', '.join(selects)} "  # noqa: S608
                   f"FROM unnest({', '.join(types)}) AS u({aliases}){conflict}")
        else:
            defaults = {f.attname: f.get_default() for f in fields}
            placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
            params = [f.get_db_prep_save(row.get(f.attname, defaults[f.attname]), connection)
                      for row in chunk for f in fields]
            sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholder] * len(chunk))}{conflict}"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def update_rows(model, field_names: list[str], objs: list) -> None:
    """Write these fields of many model instances by primary key: UPDATE … FROM unnest(…) on PostgreSQL,
    executemany elsewhere. (Django's bulk_update builds a CASE per field and row: slow to build and to plan.)
    Rows are written in primary-key order, so concurrent writers lock them in the same order."""
    if not objs:
        return
    meta = model._meta
    fields = [meta.get_field(name) for name in field_names]
    table = _quote(meta.db_table)
    pk_column = _quote(meta.pk.column)
    objs = sorted(objs, key=lambda o: o.pk)
    for start in range(0, len(objs), CHUNK_ROWS):
        chunk = objs[start:start + CHUNK_ROWS]
        if connection.vendor == "postgresql":
            types, params, assignments = [], [], []
            pk_type, pk_values, _ = _pg_column(meta.pk, [o.pk for o in chunk])
            types.append(f"%s::{pk_type}")
            params.append(pk_values)
            for i, field in enumerate(fields):
                array_type, values, cast = _pg_column(field, [getattr(o, field.attname) for o in chunk])
                types.append(f"%s::{array_type}")
                params.append(values)
                assignments.append(f"{_quote(field.column)} = v.c{i}{cast}")
            aliases = ", ".join(f"c{i}" for i in range(len(fields)))
            sql = (f"UPDATE {table} AS t SET {', '.join(assignments)} "  # noqa: S608
                   f"FROM unnest({', '.join(types)}) AS v(pk, {aliases}) WHERE t.{pk_column} = v.pk")
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
        else:
            sets = ", ".join(f"{_quote(f.column)} = %s" for f in fields)
            sql = f"UPDATE {table} SET {sets} WHERE {pk_column} = %s"  # noqa: S608
            with connection.cursor() as cursor:
                cursor.executemany(sql, [
                    [f.get_db_prep_save(getattr(o, f.attname), connection) for f in fields]
                    + [meta.pk.get_db_prep_value(o.pk, connection)]
                    for o in chunk
                ])
