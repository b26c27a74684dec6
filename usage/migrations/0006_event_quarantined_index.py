"""The (normally empty) index of quarantined events, built CONCURRENTLY on PostgreSQL: ingestion and recording go
on writing to usage_usageevent while the table is scanned.

Databases migrated by an early version of 0005 (commits b4485f3 and 8f9c115) already have the index, built by that
0005, and (b4485f3) a column without its database default: the index is then kept and the default set. This
migration was changed after it shipped for them alone: a database that has applied it is not touched again."""

from django.db import migrations, models, transaction

from agentwatch_site.migration_operations import AddIndexConcurrentlyIfMissingOnPostgres


def set_record_error_default(apps, schema_editor):
    """The database default 0005 now declares (raw inserts leave record_error out), where it is missing. The ALTER
    takes a brief exclusive lock on the events table: it gives up after 5 s rather than queue ingestion behind a
    long transaction (run `migrate` again)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("usage", "UsageEvent")._meta.db_table
    with transaction.atomic(using=schema_editor.connection.alias):
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT column_default FROM information_schema.columns WHERE table_schema = "
                           "current_schema() AND table_name = %s AND column_name = 'record_error'", [table])
            row = cursor.fetchone()
        if row is not None and row[0] is not None:
            return
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} ALTER COLUMN record_error "
                              "SET DEFAULT ''")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('usage', '0005_event_quarantine'),
    ]

    operations = [
        migrations.RunPython(set_record_error_default, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrentlyIfMissingOnPostgres(
            model_name='usageevent',
            index=models.Index(condition=models.Q(('record_error', ''), _negated=True), fields=['id'],
                               name='event_quarantined'),
        ),
    ]
