"""The (normally empty) index of quarantined events, built CONCURRENTLY on PostgreSQL: ingestion and recording go
on writing to usage_usageevent while the table is scanned."""

from django.db import migrations, models

from agentwatch_site.migration_operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('usage', '0005_event_quarantine'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name='usageevent',
            index=models.Index(condition=models.Q(('record_error', ''), _negated=True), fields=['id'],
                               name='event_quarantined'),
        ),
    ]
