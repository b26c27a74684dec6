"""Index operations for migrations on large tables: CONCURRENTLY on PostgreSQL (the migration must be
`atomic = False`), so ingestion and recording go on writing while an index is built or dropped; the plain
operation elsewhere (SQLite has no CONCURRENTLY and no concurrent writers to spare)."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


class ConcurrentlyOnPostgres:
    """The CONCURRENTLY operation on PostgreSQL, its plain counterpart (`plain`) elsewhere."""

    plain = None

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        operation = super() if schema_editor.connection.vendor == "postgresql" else self.plain
        operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        operation = super() if schema_editor.connection.vendor == "postgresql" else self.plain
        operation.database_backwards(app_label, schema_editor, from_state, to_state)


class RemoveIndexConcurrentlyOnPostgres(ConcurrentlyOnPostgres, RemoveIndexConcurrently):
    @property
    def plain(self):
        return migrations.RemoveIndex(self.model_name, self.name)


class AddIndexConcurrentlyOnPostgres(ConcurrentlyOnPostgres, AddIndexConcurrently):
    @property
    def plain(self):
        return migrations.AddIndex(self.model_name, self.index)


class AddIndexConcurrentlyIfMissingOnPostgres(AddIndexConcurrentlyOnPostgres):
    """The same, except that a valid index of that name already on the table is taken as this one: for an index
    that an earlier version of a migration already created on some databases (a migration edited after it shipped).
    An invalid one — what an interrupted CREATE INDEX CONCURRENTLY leaves behind — is dropped and built again."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            table = to_state.apps.get_model(app_label, self.model_name)._meta.db_table
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND t.relname = %s AND c.relname = %s",
                    [table, self.index.name])
                row = cursor.fetchone()
            if row is not None and row[0]:
                return
            if row is not None:
                schema_editor.execute(f"DROP INDEX CONCURRENTLY {schema_editor.quote_name(self.index.name)}")
        super().database_forwards(app_label, schema_editor, from_state, to_state)
