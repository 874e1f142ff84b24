"""thought_model becomes thought: aware timestamps, required fields, a username index.

(SQLite: ids that are never reused.)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

Every row comes over with its id. The original's timestamps were written by its API as
datetime.utcnow(): naive values in UTC, on both databases (its column's server default,
func.now(), was never used by the API; on SQLite it is CURRENT_TIMESTAMP, UTC too; on
PostgreSQL it is the session's zone, so only a row an operator inserted by hand without a
timestamp could hold another zone). So they are read as UTC:
- PostgreSQL: timestamp without time zone -> timestamptz, `AT TIME ZONE 'UTC'`.
- SQLite has no zone type: the text stays the same instant in UTC, written as this
  service writes it ('YYYY-MM-DD HH:MM:SS.ffffff'; CURRENT_TIMESTAMP's rows had no fraction).
The original let username, text and timestamp be NULL; its API never wrote a NULL. A NULL
username or text becomes '' (the row stays, shown, deletable by an admin), a NULL timestamp
the time of the upgrade.

SQLite cannot change a column's type or NOT NULL, nor add AUTOINCREMENT, in place: the
table is made anew and the rows copied (what Alembic's batch mode does, here by hand
because the table also changes its name). Downgrade reverses all of it, rows included;
the username index and AUTOINCREMENT go.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def thought_table():
    return op.create_table(
        "thought",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(50), nullable=False),
        sa.Column("text", sa.String(250), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        # Without AUTOINCREMENT, SQLite gives a deleted thought's id to the next one.
        sqlite_autoincrement=True,
    )


def upgrade():
    if op.get_bind().dialect.name == "sqlite":
        thought_table()
        op.execute(
            """INSERT INTO thought (id, username, text, timestamp)
            SELECT id, coalesce(username, ''), coalesce(text, ''),
                CASE WHEN length(coalesce(timestamp, CURRENT_TIMESTAMP)) = 19
                    THEN coalesce(timestamp, CURRENT_TIMESTAMP) || '.000000'
                    ELSE timestamp END
            FROM thought_model ORDER BY id"""
        )
        op.drop_table("thought_model")
    else:
        op.rename_table("thought_model", "thought")
        op.execute("ALTER SEQUENCE thought_model_id_seq RENAME TO thought_id_seq")
        op.execute("ALTER INDEX thought_model_pkey RENAME TO thought_pkey")
        op.execute(
            """UPDATE thought SET username = coalesce(username, ''), text = coalesce(text, ''),
                timestamp = coalesce(timestamp, now() AT TIME ZONE 'UTC')
            WHERE username IS NULL OR text IS NULL OR timestamp IS NULL"""
        )
        op.execute(
            """ALTER TABLE thought
                ALTER COLUMN username SET NOT NULL,
                ALTER COLUMN text SET NOT NULL,
                ALTER COLUMN timestamp DROP DEFAULT,
                ALTER COLUMN timestamp TYPE timestamp with time zone USING timestamp AT TIME ZONE 'UTC',
                ALTER COLUMN timestamp SET NOT NULL"""
        )
    op.create_index("ix_thought_username", "thought", ["username"])


def downgrade():
    op.drop_index("ix_thought_username", table_name="thought")
    if op.get_bind().dialect.name == "sqlite":
        op.create_table(
            "thought_model",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("username", sa.String(50)),
            sa.Column("text", sa.String(250)),
            sa.Column("timestamp", sa.DateTime(timezone=False), server_default=sa.func.now()),
        )
        # The same text: naive UTC, as the original wrote it.
        op.execute(
            "INSERT INTO thought_model (id, username, text, timestamp) "
            "SELECT id, username, text, timestamp FROM thought ORDER BY id"
        )
        op.drop_table("thought")
    else:
        op.execute(
            """ALTER TABLE thought
                ALTER COLUMN username DROP NOT NULL,
                ALTER COLUMN text DROP NOT NULL,
                ALTER COLUMN timestamp DROP NOT NULL,
                ALTER COLUMN timestamp TYPE timestamp without time zone USING timestamp AT TIME ZONE 'UTC',
                ALTER COLUMN timestamp SET DEFAULT now()"""
        )
        op.execute("ALTER INDEX thought_pkey RENAME TO thought_model_pkey")
        op.execute("ALTER SEQUENCE thought_id_seq RENAME TO thought_model_id_seq")
        op.rename_table("thought", "thought_model")
