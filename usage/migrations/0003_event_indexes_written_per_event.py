"""Fewer index entries written per event: no separate tenant index (every other index starts with tenant_id), and
the customer/feature indexes hold only events that carry those ids.

On PostgreSQL the indexes are dropped and built CONCURRENTLY (the migration is not atomic), so ingestion and
recording go on writing to usage_usageevent while it runs; elsewhere the plain operations run."""

import django.db.models.deletion
from django.db import migrations, models

from agentwatch_site.migration_operations import (
    AddIndexConcurrentlyOnPostgres,
    RemoveIndexConcurrentlyOnPostgres,
)


TENANT_FIELD = models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                 to="tenants.tenant")
TENANT_INDEX = "usage_usageevent_tenant_id_ef6ed7b0"  # the name Django gave the foreign key's index


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def drop_tenant_index(apps, schema_editor):
    table = apps.get_model("usage", "UsageEvent")._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, table)
    for name, info in constraints.items():
        if info["index"] and not info["unique"] and not info["primary_key"] and info["columns"] == ["tenant_id"]:
            schema_editor.execute(f"DROP INDEX{_concurrently(schema_editor)} IF EXISTS {schema_editor.quote_name(name)}")


def restore_tenant_index(apps, schema_editor):
    table = apps.get_model("usage", "UsageEvent")._meta.db_table
    schema_editor.execute(f"CREATE INDEX{_concurrently(schema_editor)} IF NOT EXISTS "
                          f"{schema_editor.quote_name(TENANT_INDEX)} ON {schema_editor.quote_name(table)} (tenant_id)")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('tenants', '0001_initial'),
        ('usage', '0002_seed_price_catalog'),
    ]

    operations = [
        RemoveIndexConcurrentlyOnPostgres(
            model_name='usageevent',
            name='event_tenant_customer_ts',
        ),
        RemoveIndexConcurrentlyOnPostgres(
            model_name='usageevent',
            name='event_tenant_feature_ts',
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name='usageevent', name='tenant', field=TENANT_FIELD),
            ],
            database_operations=[
                migrations.RunPython(drop_tenant_index, restore_tenant_index, atomic=False),
            ],
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name='usageevent',
            index=models.Index(condition=models.Q(('customer_id', ''), _negated=True), fields=['tenant', 'customer_id', 'timestamp'], name='event_tenant_customer_ts'),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name='usageevent',
            index=models.Index(condition=models.Q(('feature_id', ''), _negated=True), fields=['tenant', 'feature_id', 'timestamp'], name='event_tenant_feature_ts'),
        ),
    ]
