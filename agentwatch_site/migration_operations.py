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
