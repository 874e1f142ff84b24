"""Alembic's entry point for every migration command, on SQLite and PostgreSQL.

Two callers: `flask db ...` (Flask-Migrate, FLASK_APP=wsgi), which gives the app's engine,
and the service's start-up upgrade (thoughts_backend.schema.upgrade_schema), which gives
a connection in config.attributes["connection"]. For both, a command that changes the
schema (upgrade, downgrade, stamp) holds the schema lock for its whole run, so that
instances starting together migrate once, and first takes over a database made before
migrations (see schema.take_over_earlier_release). Reading commands (current, history,
check) take no lock and write nothing.
"""

import logging
from contextlib import nullcontext
from logging.config import fileConfig

from alembic import context
from alembic.script import ScriptDirectory

from thoughts_backend import schema

config = context.config
logger = logging.getLogger("alembic.env")


def run_migrations_offline() -> None:
    """`flask db upgrade --sql`: the SQL, printed for a DBA to run."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **schema.compare_options()
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    from flask import current_app  # flask db ...: the app Flask-Migrate was given

    with current_app.extensions["migrate"].db.engine.connect() as connection:
        run_on(connection)


def skip_empty_autogenerate(_context, _revision, directives) -> None:
    """`flask db migrate` with nothing to change writes no empty revision."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        logger.info("No changes in schema detected.")


def names_a_destination() -> bool:
    """Whether the command goes to a revision: upgrade, downgrade and stamp do; current,
    history and check do not (Alembic has no revision argument for them)."""
    try:
        context.get_revision_argument()
    except KeyError:
        return False
    return True


def run_on(connection) -> None:
    changes_schema = names_a_destination()
    if connection.dialect.name == "sqlite":
        schema.require_trigram_support(connection)
        connection.rollback()
    with schema.schema_lock(connection) if changes_schema else nullcontext():
        context.configure(
            connection=connection,
            process_revision_directives=skip_empty_autogenerate,
            **schema.compare_options(),
        )
        if changes_schema:
            schema.take_over_earlier_release(context.get_context(), ScriptDirectory.from_config(config))
        # Inside the lock's transaction, Alembic's own is a no-op: the lock's commit ends it.
        with context.begin_transaction():
            context.run_migrations()


if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)
if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
