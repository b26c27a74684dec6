"""Migration 0006 on a database migrated by the early 0005 (commits b4485f3 and 8f9c115), which built the
quarantine index itself and, in b4485f3, set no database default on record_error: upgrading such a database to the
current code stopped with `relation "event_quarantined" already exists`."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.conftest import requires_production

BEFORE = [("usage", "0005_event_quarantine")]
AFTER = [("usage", "0006_event_quarantined_index")]


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def quarantine_index_and_default() -> tuple[list[str], str | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'usage_usageevent' "
                       "AND indexname = 'event_quarantined'")
        indexes = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT column_default FROM information_schema.columns WHERE table_name = 'usage_usageevent' "
                       "AND column_name = 'record_error'")
        return indexes, cursor.fetchone()[0]


@requires_production
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("migrations_restored")
def test_a_database_migrated_by_the_early_0005_upgrades_keeping_its_index_and_gaining_the_default():
    migrate(BEFORE)
    with connection.cursor() as cursor:  # what b4485f3's 0005 left behind
        cursor.execute("CREATE INDEX event_quarantined ON usage_usageevent (id) WHERE NOT (record_error = '')")
        cursor.execute("ALTER TABLE usage_usageevent ALTER COLUMN record_error DROP DEFAULT")
    migrate(AFTER)
    indexes, default = quarantine_index_and_default()
    assert indexes == ["event_quarantined"]
    assert default == "''::character varying"


@requires_production
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("migrations_restored")
def test_a_database_migrated_by_the_current_0005_gets_the_index_from_0006():
    migrate(BEFORE)
    assert quarantine_index_and_default() == ([], "''::character varying")
    migrate(AFTER)
    assert quarantine_index_and_default()[0] == ["event_quarantined"]


@requires_production
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("migrations_restored")
def test_an_invalid_index_left_by_an_interrupted_build_is_built_again():
    """CREATE INDEX CONCURRENTLY that is interrupted leaves an INVALID index of that name: taking it as built would
    leave the quarantine without its index for good."""
    migrate(BEFORE)
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX event_quarantined ON usage_usageevent (id) WHERE NOT (record_error = '')")
        cursor.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'event_quarantined'::regclass")
    migrate(AFTER)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'event_quarantined'::regclass")
        assert cursor.fetchone() == (True,)
