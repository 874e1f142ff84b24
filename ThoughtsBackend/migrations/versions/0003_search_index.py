"""The search's index: FTS5 trigram table and triggers (SQLite), pg_trgm GIN index (PostgreSQL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

What each database's search reads is in thoughts_backend/search.py; this makes it.
- SQLite: an external-content FTS5 table with the trigram tokenizer (it keeps the
  trigrams only, and reads the text from thought), kept in step by triggers with every
  write, the service's and an operator's, and built from the rows already there. The
  build holds the write lock: 0.4 s at 100 000 rows here, about 50 s at a million rows of
  110 random characters.
- PostgreSQL: the pg_trgm extension and a GIN index on thought.text, which ILIKE reads.
  Only a role with the CREATE privilege on the database (or a superuser) may install the
  extension: without it, this warns and makes no index, and the search reads the whole
  table. The warning says the two statements that add the index later.

Downgrade drops what this made (the extension stays: other tables may use it).
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

logger = logging.getLogger("thoughts_backend.schema")

SQLITE_UPGRADE = (
    """CREATE VIRTUAL TABLE thought_text_trigram USING fts5(
        text, content='thought', content_rowid='id', tokenize='trigram case_sensitive 0'
    )""",
    """CREATE TRIGGER thought_text_trigram_insert AFTER INSERT ON thought BEGIN
        INSERT INTO thought_text_trigram (rowid, text) VALUES (new.id, new.text);
    END""",
    # An external-content index forgets a row only when told the text it indexed.
    """CREATE TRIGGER thought_text_trigram_delete AFTER DELETE ON thought BEGIN
        INSERT INTO thought_text_trigram (thought_text_trigram, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    # The service never changes a text, but an operator's UPDATE must not leave the index stale.
    """CREATE TRIGGER thought_text_trigram_update AFTER UPDATE OF id, text ON thought BEGIN
        INSERT INTO thought_text_trigram (thought_text_trigram, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO thought_text_trigram (rowid, text) VALUES (new.id, new.text);
    END""",
    # Indexes the rows already there.
    "INSERT INTO thought_text_trigram (thought_text_trigram) VALUES ('rebuild')",
)
POSTGRESQL_INDEX = "CREATE INDEX ix_thought_text_trgm ON thought USING gin (text gin_trgm_ops)"


def upgrade():
    connection = op.get_bind()
    if connection.dialect.name == "sqlite":
        for statement in SQLITE_UPGRADE:
            op.execute(statement)
        return
    if not connection.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")):
        try:
            with connection.begin_nested():  # a failure undoes the attempt, not the migration
                op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except sa.exc.DBAPIError as error:
            database = connection.engine.url.database
            logger.warning(
                "The search has no index: the pg_trgm extension is not installed in database %s "
                "and this user may not install it (%s). Search still works, reading the whole "
                "table; to index it, have a superuser run CREATE EXTENSION pg_trgm; in %s, "
                "then run %s;",
                database,
                str(error.orig).strip().splitlines()[0],
                database,
                POSTGRESQL_INDEX,
            )
            return
    op.execute(POSTGRESQL_INDEX)


def downgrade():
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER thought_text_trigram_{trigger}")
        op.execute("DROP TABLE thought_text_trigram")
    else:
        op.execute("DROP INDEX IF EXISTS ix_thought_text_trgm")
