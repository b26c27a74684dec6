"""Operations shared by migrations."""

from django.db import migrations


def short_lock_wait(seconds: int = 5) -> migrations.RunPython:
    """First operation of a migration that takes a brief exclusive lock on tables the request path uses (an ALTER
    TABLE): on PostgreSQL the migration fails after `seconds` instead of waiting behind a long transaction while
    every budget check and recording queues behind it. Run `migrate` again once that transaction is gone."""

    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"SET LOCAL lock_timeout = '{int(seconds)}s'")

    return migrations.RunPython(apply, migrations.RunPython.noop, elidable=True)
