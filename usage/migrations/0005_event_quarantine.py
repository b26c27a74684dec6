"""The column for quarantined events. With a constant default PostgreSQL (11+) adds it without rewriting or
scanning the table, so the exclusive lock is brief; its index is built CONCURRENTLY in 0006."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0001_initial'),
        ('usage', '0004_monthly_team_spend'),
    ]

    operations = [
        migrations.AddField(
            model_name='usageevent',
            name='record_error',
            field=models.CharField(blank=True, db_default='', default='', max_length=500),
        ),
    ]
