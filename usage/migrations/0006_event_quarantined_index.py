"""The (normally empty) index of quarantined events, built CONCURRENTLY on PostgreSQL: ingestion and recording go
on writing to usage_usageevent while the table is scanned.

Databases migrated by an early version of 0005 (commits b4485f3 and 8f9c115) already have the index, built by that
0005, and a column without its database default: the index is then kept and the default set."""

from django.db import migrations, models

from agentwatch_site.migration_operations import AddIndexConcurrentlyIfMissingOnPostgres


def set_record_error_default(apps, schema_editor):
    """The database default 0005 now declares (raw inserts leave record_error out); a no-op where it is set."""
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(apps.get_model("usage", "UsageEvent")._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN record_error SET DEFAULT ''")


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
