"""The schema's versions: bringing a database to the migrations' head, once, at start.

The schema is made and changed only by the revisions in migrations/versions/ (Alembic,
through Flask-Migrate for `flask db ...`). This module is what the service's start runs
(init_db.py, in uWSGI's master before the workers fork), and what env.py asks for the
lock, the take-over of a database made before migrations, and autogenerate's options.

A start on a database already at head costs two small reads (is there an alembic_version,
and what it holds; on SQLite also its version and FTS5 check): Alembic is not even imported
(importing it costs more than the rest of the start's Python imports together would
allow). Only a database behind head pays for Alembic and for the schema lock.
"""

import logging
import re
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from .db import db
from .models import Thought
from .search import SEARCH_INDEX_NAME, SQLITE_SEARCH_INDEX, SQLITE_SEARCH_TRIGGERS, require_trigram_support

MIGRATIONS_DIRECTORY = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"
logger = logging.getLogger(__name__)

# The revisions a database made before migrations is taken over at (see
# take_over_earlier_release): the original ThoughtsBackend's, then this service's releases.
ORIGINAL_REVISION = "0001"
THOUGHT_TABLE_REVISION = "0002"
SEARCH_INDEX_REVISION = "0003"
THOUGHT_TOTAL_REVISION = "0004"
TOTAL_TABLE = "thought_total"
TOTAL_TRIGGERS = ("thought_total_insert", "thought_total_delete", "thought_total_truncate")
# Tables and indexes that the migrations make and no model describes: autogenerate
# (`flask db check`, `flask db migrate`) leaves them alone.
NOT_IN_THE_MODELS = re.compile(rf"^({SQLITE_SEARCH_INDEX}(_\w+)?|{TOTAL_TABLE}|{SEARCH_INDEX_NAME})$")

# Any fixed number: the key of the PostgreSQL advisory lock that a migration holds.
SCHEMA_LOCK_KEY = 0x7468_6F75  # "thou"
# How long a start waits on SQLite for another one that holds the write lock to migrate.
# The app's busy timeout (5 s) is too short for building the search index: 0.4 s at 100 000
# rows here, 50 s for a million rows of 110 random characters.
SQLITE_SCHEMA_WAIT_MS = 600_000


def init_app(app: Flask) -> None:
    """`flask db ...` (Flask-Migrate) on this app's database and migrations/ folder.

    Not in the served app: importing Flask-Migrate (and so Alembic) would cost every start
    about half again of the app's own imports, and uWSGI needs neither on a database already
    at head (upgrade_schema imports Alembic only when there is something to do).
    """
    if under_uwsgi():
        return
    from flask_migrate import Migrate

    Migrate(app, db, directory=str(MIGRATIONS_DIRECTORY))


def under_uwsgi() -> bool:
    """Whether this process is uWSGI's (its `uwsgi` module exists only there)."""
    try:
        import uwsgi  # noqa: F401
    except ImportError:
        return False
    return True


class DatabaseIsNewer(Exception):
    """The database is at a revision this code does not have: a newer release migrated it."""


def upgrade_schema(engine: sa.Engine, revision: str = "head") -> bool:
    """Bring the database to `revision` (the head by default); False when it was there already.

    Raises sqlalchemy's OperationalError when the database cannot be used, and
    DatabaseIsNewer when it is at a revision this code does not know.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            require_trigram_support(connection)
        stored = stored_revision(connection)
        connection.rollback()
        if revision == "head" and stored is not None and stored == head_revision():
            return False
        from alembic import command

        config = alembic_config(connection)
        if stored is not None and not known_revision(config, stored):
            raise DatabaseIsNewer(
                f"the database is at revision {stored}, which this code does not have (its head is "
                f"{head_revision() or 'unknown'}): a newer release migrated it"
            )
        command.upgrade(config, revision)
    return True


def downgrade_schema(engine: sa.Engine, revision: str) -> None:
    """Take the database back to `revision` ("base": nothing the migrations made is left)."""
    from alembic import command

    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), revision)


def alembic_config(connection: sa.Connection | None = None):
    """Alembic's settings for this service's migrations; env.py runs on `connection`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY))
    config.attributes["connection"] = connection
    return config


def known_revision(config, revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except CommandError:
        return False


def stored_revision(connection: sa.Connection) -> str | None:
    """The revision alembic_version holds; None for a database that has none."""
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.scalar(sa.text("SELECT version_num FROM alembic_version"))


REVISION_LINE = re.compile(r"""^(down_revision|revision)\s*=\s*(?:["'](\w+)["']|None)\s*$""", re.MULTILINE)


def head_revision() -> str | None:
    """The revision that no other revises, read from the revision files' own lines,
    without importing Alembic; None when there is not exactly one (Alembic then decides).
    tests/test_migrations.py checks that it agrees with Alembic's head."""
    revisions, revised = set(), set()
    for path in (MIGRATIONS_DIRECTORY / "versions").glob("*.py"):
        for name, value in REVISION_LINE.findall(path.read_text()):
            (revisions if name == "revision" else revised).add(value)
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


@contextmanager
def schema_lock(connection: sa.Connection):
    """Hold the schema lock for a migration, in one transaction, committed at the end.

    PostgreSQL: a transaction-scoped advisory lock, waited for without a statement timeout;
    its DDL is transactional, so a failed migration leaves nothing half made. SQLite: the database's write lock from the start
    of the transaction (BEGIN IMMEDIATE), waited for up to SQLITE_SCHEMA_WAIT_MS. Either
    way an instance that waited finds the migration done, and does nothing.
    """
    if connection.in_transaction():
        connection.rollback()
    if connection.dialect.name == "sqlite":
        waited_before_ms = connection.scalar(sa.text("PRAGMA busy_timeout"))
        connection.rollback()
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_SCHEMA_WAIT_MS}")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield
            connection.commit()
        finally:
            connection.rollback()  # after a failure; nothing to undo after the commit
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(waited_before_ms)}")
            connection.commit()
        return
    # No statement timeout for this transaction: `flask db` runs on the app's engine, whose
    # POSTGRES_STATEMENT_TIMEOUT_MS (3 s) would cancel the wait for another instance's
    # migration, or an index build on a big table, half way. Nor the client's deadline
    # (postgresql_timeouts), which is that timeout plus a margin.
    from .postgresql_timeouts import lift_deadline  # PostgreSQL's driver: not loaded on SQLite

    lift_deadline(connection)
    # The app's engine runs in autocommit (config.py): this connection, until the pool takes
    # it back, runs in transactions, so that the lock and the DDL are in the one below.
    connection.execution_options(isolation_level="READ COMMITTED")
    connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    try:
        yield
        connection.commit()
    finally:
        connection.rollback()


def take_over_earlier_release(migration_context, script) -> None:
    """A database made before migrations (no revision stored) gets the revision its
    objects show, so that the upgrade runs only what it lacks and touches none of its rows.

    - the original ThoughtsBackend's: table thought_model -> ORIGINAL_REVISION;
    - this service's releases before migrations: table thought, then on SQLite its FTS5
      table and triggers, on PostgreSQL its pg_trgm index (optional: a role that may not
      install pg_trgm never had it) and its trigger-kept total.
    An empty database gets nothing, and the upgrade starts from the first revision.
    """
    if migration_context.get_current_revision() is not None:
        return
    connection = migration_context.connection
    revision = earlier_release_revision(connection)
    if revision is None:
        return
    logger.info("A database made before migrations, taken over at revision %s", revision)
    migration_context.stamp(script, revision)


def earlier_release_revision(connection: sa.Connection) -> str | None:
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    if "thought" not in tables:
        return ORIGINAL_REVISION if "thought_model" in tables else None
    if connection.dialect.name == "sqlite":
        triggers = set(connection.scalars(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")))
        if SQLITE_SEARCH_INDEX in tables and set(SQLITE_SEARCH_TRIGGERS) <= triggers:
            return THOUGHT_TOTAL_REVISION  # 0004 makes nothing on SQLite
        return THOUGHT_TABLE_REVISION
    triggers = set(
        connection.scalars(sa.text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'thought'::regclass"))
    )
    if TOTAL_TABLE in tables and set(TOTAL_TRIGGERS) <= triggers:
        return THOUGHT_TOTAL_REVISION
    if SEARCH_INDEX_NAME in {index["name"] for index in inspector.get_indexes("thought")}:
        return SEARCH_INDEX_REVISION
    return THOUGHT_TABLE_REVISION


def include_name(name, type_, _parent_names) -> bool:
    """Autogenerate compares the models' tables and indexes only."""
    if type_ in ("table", "index") and name is not None:
        return name != VERSION_TABLE and not NOT_IN_THE_MODELS.match(name)
    return True


def compare_options() -> dict:
    """env.py's context.configure() options: the models to compare with, and how."""
    return {
        "target_metadata": Thought.metadata,
        "include_name": include_name,
        "compare_type": True,
        # SQLite changes most columns only by copying the table: autogenerate writes
        # `with op.batch_alter_table(...)` for it, which PostgreSQL runs as plain ALTERs.
        "render_as_batch": True,
    }
