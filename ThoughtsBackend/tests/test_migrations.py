"""The migrations (migrations/, Alembic through Flask-Migrate): every supported database is
brought to head with its rows, on SQLite and PostgreSQL; downgrades; the drift check.

Upgrades are tested from: an empty database; one made by the release before migrations
(no alembic_version: taken over, its rows untouched); one made by the original
ThoughtsBackend (table thought_model, naive UTC timestamps); one at each revision.
"""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from thoughts_backend.app import create_app
from thoughts_backend.db import db
from thoughts_backend.models import Thought
from thoughts_backend.schema import (
    MIGRATIONS_DIRECTORY,
    SCHEMA_LOCK_KEY,
    TOTAL_TRIGGERS,
    alembic_config,
    compare_options,
    downgrade_schema,
    head_revision,
    stored_revision,
    upgrade_schema,
)
from thoughts_backend.search import SEARCH_INDEX_NAME, SQLITE_SEARCH_TRIGGERS

from .databases import drop_schema
from .support import wait_for

CODE_DIR = Path(__file__).resolve().parents[1]
RELEASE_BEFORE_MIGRATIONS = Path(__file__).parent / "data" / "release_before_migrations.{}.sql"
REVISIONS = ["0001", "0002", "0003", "0004"]

# The original's rows: its API wrote datetime.utcnow(), naive UTC; ids with gaps (deleted
# thoughts) must be kept.
ORIGINAL_ROWS = [
    {
        "id": 1,
        "username": "bruce",
        "text": "first thought",
        "timestamp": datetime(2019, 5, 1, 12, 0, 0, 123456),
    },
    {"id": 2, "username": "stephen", "text": "x" * 250, "timestamp": datetime(2019, 5, 1, 23, 30, 0)},
    {"id": 7, "username": "u" * 50, "text": "Caf\u00e9 needle \U0001f600", "timestamp": datetime(2020, 1, 1)},
]
EXPECTED_FROM_ORIGINAL = [
    {"id": 1, "username": "bruce", "text": "first thought", "timestamp": "2019-05-01T12:00:00.123456+00:00"},
    {"id": 2, "username": "stephen", "text": "x" * 250, "timestamp": "2019-05-01T23:30:00+00:00"},
    {
        "id": 7,
        "username": "u" * 50,
        "text": "Caf\u00e9 needle \U0001f600",
        "timestamp": "2020-01-01T00:00:00+00:00",
    },
]


# Migrations run against each database directly: these tests shape their own sessions
# (a New York session zone, sent as a startup option PgBouncer refuses). The start-up
# upgrade through PgBouncer is run by the scale-out test's pgbouncer route.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite3'}"
    return request.getfixturevalue("postgresql_server_url")


@pytest.fixture
def engine(database_url):
    # On PostgreSQL a session zone other than UTC: the original's naive timestamps must be
    # read as UTC whatever the migrating session's zone.
    connect_args = (
        {"options": "-c timezone=America/New_York"} if database_url.startswith("postgresql") else {}
    )
    engine = sa.create_engine(database_url, connect_args=connect_args)
    drop_schema(engine)
    yield engine
    drop_schema(engine)
    engine.dispose()


def original_table() -> sa.Table:
    """The original ThoughtsBackend's model, as its init_db.py's create_all() made it."""
    return sa.Table(
        "thought_model",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(50)),
        sa.Column("text", sa.String(250)),
        sa.Column("timestamp", sa.DateTime, server_default=sa.func.now()),
    )


def make_original_database(engine) -> None:
    table = original_table()
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(sa.insert(table), ORIGINAL_ROWS)
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT setval('thought_model_id_seq', 7)")


def replay(engine, path: Path) -> None:
    script = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("--"))
    with engine.begin() as connection:
        for statement in script.split(";\n\n"):
            if statement.strip():
                connection.exec_driver_sql(statement.strip().rstrip(";"))


def shown(database_url, public_pem, path="/api/thoughts/") -> list[dict]:
    app = create_app({"DATABASE_URL": database_url, "PUBLIC_KEY": public_pem})
    try:
        response = app.test_client().get(path)
        assert response.status_code == 200, response.json
        return response.json
    finally:
        with app.app_context():
            db.engine.dispose()


def post(database_url, public_pem, private_key, text: str) -> dict:
    from thoughts_backend.token_validation import encode_token

    app = create_app({"DATABASE_URL": database_url, "PUBLIC_KEY": public_pem})
    try:
        response = app.test_client().post(
            "/api/me/thoughts/",
            json={"text": text},
            headers={"Authorization": f"Bearer {encode_token('bruce', private_key)}"},
        )
        assert response.status_code == 201, response.json
        return response.json
    finally:
        with app.app_context():
            db.engine.dispose()


def schema_differences(engine) -> list:
    """What autogenerate (`flask db check`) finds between the models and the database."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=compare_options())
        return compare_metadata(context, compare_options()["target_metadata"])


def assert_objects_outside_the_models(engine) -> None:
    """What the drift check cannot see (it compares the models' tables and indexes only) is
    at head: on SQLite, AUTOINCREMENT and the search index's triggers, which a revision
    that copies the table (Alembic's batch mode) would silently drop; on PostgreSQL, the
    search index and the total's triggers."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            table_sql = connection.scalar(sa.text("SELECT sql FROM sqlite_master WHERE name = 'thought'"))
            assert "AUTOINCREMENT" in table_sql
            triggers = connection.scalars(
                sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'thought'")
            )
            assert set(triggers) == set(SQLITE_SEARCH_TRIGGERS)
        else:
            triggers = connection.scalars(
                sa.text(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'thought'::regclass AND NOT tgisinternal"
                )
            )
            assert set(triggers) == set(TOTAL_TRIGGERS)
            indexes = {index["name"] for index in sa.inspect(connection).get_indexes("thought")}
            assert SEARCH_INDEX_NAME in indexes


def test_head_revision_read_without_alembic_is_alembic_head():
    script = ScriptDirectory.from_config(alembic_config())
    assert head_revision() == script.get_current_head() == REVISIONS[-1]
    assert [revision.revision for revision in reversed(list(script.walk_revisions()))] == REVISIONS


def test_empty_database_is_brought_to_head(engine, database_url, public_pem, private_key):
    assert upgrade_schema(engine) is True
    with engine.connect() as connection:
        assert stored_revision(connection) == head_revision()
    assert schema_differences(engine) == []
    assert_objects_outside_the_models(engine)
    created = post(database_url, public_pem, private_key, "a needle in a new database")
    assert shown(database_url, public_pem, "/api/thoughts/?search=NEEDLE") == [created]
    assert upgrade_schema(engine) is False  # at head: nothing to do


def test_release_before_migrations_is_taken_over_without_touching_a_row(
    engine, database_url, public_pem, private_key
):
    replay(engine, Path(str(RELEASE_BEFORE_MIGRATIONS).format(engine.dialect.name)))
    created = [post(database_url, public_pem, private_key, f"needle {n}") for n in range(3)]
    with engine.connect() as connection:
        rows_before = connection.execute(sa.text("SELECT * FROM thought ORDER BY id")).all()
    statements = []

    def record(_connection, _cursor, statement, *_args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    assert upgrade_schema(engine) is True
    sa.event.remove(engine, "before_cursor_execute", record)
    # Stamped at head: no revision ran, so no write to thought, no index rebuilt; only
    # Alembic's own table is made and written.
    statements = [s for s in statements if "alembic_version" not in s]
    assert not [
        s for s in statements if s.lstrip().upper().startswith(("UPDATE", "DELETE", "ALTER", "CREATE"))
    ]
    assert not [s for s in statements if "INSERT" in s.upper()]
    with engine.connect() as connection:
        assert stored_revision(connection) == head_revision()
        assert connection.execute(sa.text("SELECT * FROM thought ORDER BY id")).all() == rows_before
    assert schema_differences(engine) == []
    assert_objects_outside_the_models(engine)
    assert shown(database_url, public_pem, "/api/thoughts/?search=needle") == created
    assert post(database_url, public_pem, private_key, "after")["id"] == created[-1]["id"] + 1


def test_original_thoughtsbackend_database_is_brought_over_with_every_row(
    engine, database_url, public_pem, private_key
):
    make_original_database(engine)
    assert upgrade_schema(engine) is True
    with engine.connect() as connection:
        assert stored_revision(connection) == head_revision()
        assert not sa.inspect(connection).has_table("thought_model")
    assert schema_differences(engine) == []
    assert_objects_outside_the_models(engine)
    assert shown(database_url, public_pem) == EXPECTED_FROM_ORIGINAL
    assert shown(database_url, public_pem, "/api/thoughts/?search=NEEDLE") == [EXPECTED_FROM_ORIGINAL[2]]
    # The ORM reads them as the service's own rows, and new ids follow the largest.
    app = create_app({"DATABASE_URL": database_url, "PUBLIC_KEY": public_pem})
    with app.app_context():
        assert db.session.get(Thought, 1).timestamp == datetime(2019, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    with app.app_context():  # the session gave its connection back when the context ended
        db.engine.dispose()
    assert post(database_url, public_pem, private_key, "new")["id"] == 8
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT thoughts FROM thought_total")) == 4


def test_original_rows_with_nulls_and_the_columns_default_are_kept(engine, database_url, public_pem):
    """The original allowed NULLs, and its column default (CURRENT_TIMESTAMP on SQLite, UTC)
    filled a timestamp left out."""
    table = original_table()
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(sa.insert(table), [{"id": 3, "username": None, "text": None}])
        default_written = connection.scalar(sa.select(table.c.timestamp))
    upgrade_schema(engine)
    (row,) = shown(database_url, public_pem)
    assert (row["id"], row["username"], row["text"]) == (3, "", "")
    if engine.dialect.name == "sqlite":  # UTC there; PostgreSQL's now() is the session's zone
        assert row["timestamp"] == default_written.replace(tzinfo=UTC).isoformat()


@pytest.mark.parametrize("revision", REVISIONS)
def test_database_at_each_revision_is_brought_to_head_with_its_rows(
    engine, database_url, public_pem, private_key, revision
):
    upgrade_schema(engine, revision)
    with engine.begin() as connection:
        if revision == "0001":
            connection.execute(sa.insert(original_table()), ORIGINAL_ROWS)
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT setval('thought_model_id_seq', 7)")
        else:
            rows = [{**row, "timestamp": row["timestamp"].replace(tzinfo=UTC)} for row in ORIGINAL_ROWS]
            connection.execute(sa.insert(Thought.__table__), rows)
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT setval('thought_id_seq', 7)")
    assert upgrade_schema(engine) is (revision != REVISIONS[-1])
    with engine.connect() as connection:
        assert stored_revision(connection) == head_revision()
    assert schema_differences(engine) == []
    assert_objects_outside_the_models(engine)
    assert shown(database_url, public_pem) == EXPECTED_FROM_ORIGINAL
    assert shown(database_url, public_pem, "/api/thoughts/?search=needle") == [EXPECTED_FROM_ORIGINAL[2]]
    assert post(database_url, public_pem, private_key, "next")["id"] == 8
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT thoughts FROM thought_total")) == 4


def test_every_revision_downgrades_with_its_rows_and_upgrades_again(engine, database_url, public_pem):
    make_original_database(engine)
    upgrade_schema(engine)
    for revision in reversed(REVISIONS[:-1]):
        downgrade_schema(engine, revision)
        with engine.connect() as connection:
            assert stored_revision(connection) == revision
            table = "thought_model" if revision == "0001" else "thought"
            assert connection.scalar(sa.text(f"SELECT count(*) FROM {table}")) == len(ORIGINAL_ROWS)  # noqa: S608
    with engine.connect() as connection:  # back in the original's shape: naive UTC
        stamps = connection.execute(sa.select(original_table().c.timestamp).order_by("id")).scalars().all()
    assert stamps == [row["timestamp"] for row in ORIGINAL_ROWS]
    upgrade_schema(engine)
    assert shown(database_url, public_pem) == EXPECTED_FROM_ORIGINAL
    downgrade_schema(engine, "base")
    with engine.connect() as connection:
        assert set(sa.inspect(connection).get_table_names()) == {"alembic_version"}
        assert stored_revision(connection) is None


def test_a_model_change_without_its_migration_is_found(engine):
    """What the drift check catches: a column in the models that no migration makes."""
    upgrade_schema(engine)
    options = compare_options()
    changed = sa.MetaData()
    table = options["target_metadata"].tables["thought"].to_metadata(changed)
    table.append_column(sa.Column("edited_at", sa.DateTime(timezone=True)))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={**options, "target_metadata": changed})
        differences = compare_metadata(context, changed)
    assert [difference[0] for difference in differences] == ["add_column"]


def flask_db(database_url, public_key_file, *arguments) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "db", *arguments],
        cwd=CODE_DIR,
        env={
            **os.environ,
            "FLASK_APP": "wsgi",
            "DATABASE_URL": database_url,
            "PUBLIC_KEY_FILE": str(public_key_file),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_flask_db_commands(engine, database_url, public_key_file, public_pem):
    """`flask db upgrade/current/history/check` as the README gives them; check is the
    drift check: it fails while the database is behind, passes at head."""
    make_original_database(engine)
    behind = flask_db(database_url, public_key_file, "check")
    assert behind.returncode != 0
    assert "Target database is not up to date" in behind.stderr
    upgraded = flask_db(database_url, public_key_file, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade 0001 -> 0002" in upgraded.stderr
    assert "taken over at revision 0001" in upgraded.stderr
    current = flask_db(database_url, public_key_file, "current")
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == f"{head_revision()} (head)"
    history = flask_db(database_url, public_key_file, "history")
    assert history.returncode == 0, history.stderr
    assert [line.split(",")[0] for line in history.stdout.splitlines()] == [
        "0003 -> 0004 (head)",
        "0002 -> 0003",
        "0001 -> 0002",
        "<base> -> 0001",
    ]
    check = flask_db(database_url, public_key_file, "check")
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    assert shown(database_url, public_pem) == EXPECTED_FROM_ORIGINAL


@pytest.mark.postgresql
def test_flask_db_upgrade_waits_for_another_migration_beyond_the_statement_timeout(
    postgresql_server_url, public_key_file
):
    """`flask db upgrade` runs on the app's engine, whose POSTGRES_STATEMENT_TIMEOUT_MS
    would cancel its wait for the schema lock (another instance migrating) or a long index
    build: the migration's transaction has no statement timeout."""
    engine = sa.create_engine(postgresql_server_url)
    drop_schema(engine)
    environment = {
        **os.environ,
        "FLASK_APP": "wsgi",
        "DATABASE_URL": postgresql_server_url,
        "PUBLIC_KEY_FILE": str(public_key_file),
        "POSTGRES_STATEMENT_TIMEOUT_MS": "50",
    }
    # Waiting for the lock for 20 times the statement timeout: it would have been cancelled.
    waited_long = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        " AND clock_timestamp() - query_start > interval '1 second'"
    )
    try:
        with engine.connect() as lock_holder, engine.connect() as observer:
            # Each poll in a transaction of its own: pg_stat_activity is read once per transaction.
            observer.execution_options(isolation_level="AUTOCOMMIT")
            lock_holder.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            upgrade = subprocess.Popen(
                [sys.executable, "-m", "flask", "db", "upgrade"],
                cwd=CODE_DIR,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                wait_for(
                    lambda: upgrade.poll() is not None or observer.scalar(waited_long) > 0,
                    60,
                    "flask db upgrade to wait for the schema lock for a second",
                )
            finally:
                lock_holder.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
                lock_holder.commit()
            output, _ = upgrade.communicate(timeout=120)
        assert upgrade.returncode == 0, output
        with engine.connect() as connection:
            assert stored_revision(connection) == head_revision()
    finally:
        drop_schema(engine)
        engine.dispose()


def test_a_database_newer_than_the_code_is_served_without_migrating(engine, database_url):
    """A rollback to this release after a newer one migrated: the start goes on."""
    upgrade_schema(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    result = subprocess.run(
        [sys.executable, "init_db.py"],
        cwd=CODE_DIR,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "the database is at revision 9999, which this code does not have (its head is 0004)" in result.stderr
    )
    assert "serving it without migrating" in result.stderr


def test_migrations_folder_is_complete():
    for name in ("env.py", "alembic.ini", "script.py.mako"):
        assert (MIGRATIONS_DIRECTORY / name).is_file()


def test_migrate_on_start_must_be_true_or_false(public_pem):
    from thoughts_backend.config import ConfigError

    with pytest.raises(ConfigError, match=r"^MIGRATE_ON_START must be true or false, not 'later'$"):
        create_app({"DATABASE_URL": "sqlite://", "PUBLIC_KEY": public_pem, "MIGRATE_ON_START": "later"})
