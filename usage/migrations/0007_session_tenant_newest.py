"""The index behind GET /v1/sessions' pages (newest first), built CONCURRENTLY on PostgreSQL: recording goes on
writing session states while the table is scanned."""

from django.db import migrations, models

from agentwatch_site.migration_operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('usage', '0006_event_quarantined_index'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name='sessionstate',
            index=models.Index(fields=['tenant', '-id'], name='session_tenant_newest'),
        ),
    ]
