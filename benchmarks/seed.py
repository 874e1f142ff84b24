"""Seeded databases for the benchmark: the same rows on SQLite and PostgreSQL.

Row i (1-based) of n:
- rows 1..200 belong to `alice`, the token user of the `me` scenario, so she owns a full
  page whatever the table size; every tenth of them says "sunrise", the search word, so
  the search matches 20 rows at every size;
- the other rows are spread over 1000 users and never contain a trigram of "sunrise".

The rows are generated inside the database (a recursive CTE on SQLite, generate_series on
PostgreSQL): a million rows take seconds, not minutes.
"""

import uuid

import psycopg
import sqlalchemy as sa

try:
    from thoughts_backend.schema import upgrade_schema
except ImportError:  # a tree from before migrations (compare.py's "before"): its own set-up
    from thoughts_backend.db import create_schema

    def upgrade_schema(engine, revision: str = "head") -> None:
        create_schema(engine)
        if revision != "head":  # its set-up makes everything: the index waits for the rows
            with engine.begin() as connection:
                connection.exec_driver_sql("DROP INDEX IF EXISTS ix_thought_text_trgm")


# PostgreSQL: the revision before the search index, so that the rows go in first and the
# index is built once over all of them.
BEFORE_SEARCH_INDEX = "0002"

BENCH_USER = "alice"
USER_ROWS = 200
SEARCH_WORD = "SunRise"  # mixed case: the search ignores case
SEARCH_MATCHES = USER_ROWS // 10

SQLITE_SEED = """
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :rows)
INSERT INTO thought (username, text, timestamp)
SELECT
    CASE WHEN i <= 200 THEN 'alice' ELSE printf('user%03d', i % 1000) END,
    'thought ' || i || ' on topic ' || (i % 97)
        || CASE WHEN i <= 200 AND i % 10 = 0 THEN ' at sunrise' ELSE '' END,
    strftime('%Y-%m-%d %H:%M:%S', '2024-01-01 00:00:00', '+' || i || ' seconds') || '.000000'
FROM seq
"""

POSTGRESQL_SEED = """
INSERT INTO thought (username, text, timestamp)
SELECT
    CASE WHEN i <= 200 THEN 'alice' ELSE 'user' || lpad((i % 1000)::text, 3, '0') END,
    'thought ' || i || ' on topic ' || (i % 97)
        || CASE WHEN i <= 200 AND i % 10 = 0 THEN ' at sunrise' ELSE '' END,
    timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second'
FROM generate_series(1, :rows) AS i
"""


def seed_sqlite(path, rows: int) -> str:
    """A fresh SQLite file at `path` holding `rows` thoughts; returns its URL."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    try:
        upgrade_schema(engine)
        with engine.begin() as connection:
            connection.execute(sa.text(SQLITE_SEED), {"rows": rows})
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return url


class PostgresqlDatabase:
    """A database of its own on the server at `server_url`, dropped by `drop()`."""

    def __init__(self, server_url: str, name: str | None = None):
        self.server_url = sa.make_url(server_url).set(drivername="postgresql+psycopg")
        self.name = name or f"thoughts_bench_{uuid.uuid4().hex[:10]}"
        self.url = self.server_url.set(database=self.name)

    def _admin(self):
        plain = self.server_url.set(drivername="postgresql")
        return psycopg.connect(
            plain.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        )

    def create(self, rows: int) -> str:
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        engine = sa.create_engine(self.url)
        try:
            # The table first; the search index (and the total) after the rows, by the
            # service's own migrations.
            upgrade_schema(engine, BEFORE_SEARCH_INDEX)
            with engine.begin() as connection:
                connection.execute(sa.text(POSTGRESQL_SEED), {"rows": rows})
            upgrade_schema(engine)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE thought")
        finally:
            engine.dispose()
        return self.url.render_as_string(hide_password=False)

    def drop(self) -> None:
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
