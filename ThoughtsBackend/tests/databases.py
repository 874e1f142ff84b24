"""An app with its database migrated to head, and a database emptied again: what tests that
use a real schema share (apart from support.py, which stays light: uwsgi_process.py, and so
benchmarks/servers.py, import it).

    from .databases import app_with_schema, drop_schema    # in a module of tests/
    from ..databases import app_with_schema, drop_schema   # in a module of tests/system/
"""

import contextlib

import sqlalchemy as sa

from thoughts_backend.app import create_app
from thoughts_backend.db import db
from thoughts_backend.schema import upgrade_schema


@contextlib.contextmanager
def app_with_schema(overrides: dict):
    """An app with its database migrated to head; emptied, and its connections closed, afterwards."""
    app = create_app(overrides)
    with app.app_context():
        upgrade_schema(db.engine)
    try:
        yield app
    finally:
        with app.app_context():
            drop_schema(db.engine)
            db.engine.dispose()


# Everything the migrations (or a test's own earlier database) may have made.
SCHEMA_TABLES = ("thought_text_trigram", "thought", "thought_model", "thought_total", "alembic_version")


def drop_schema(engine: sa.Engine) -> None:
    """Leave the database empty, as the next test expects the shared PostgreSQL one, whatever
    state a test left it in (a plain DROP: quicker than a downgrade, and it cannot fail on a
    half-made schema; downgrades have tests of their own in test_migrations.py)."""
    with engine.begin() as connection:
        cascade = " CASCADE" if connection.dialect.name == "postgresql" else ""
        for table in SCHEMA_TABLES:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}{cascade}")
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("DROP FUNCTION IF EXISTS thought_total_update()")
