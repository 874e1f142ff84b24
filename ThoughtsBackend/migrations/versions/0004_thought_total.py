"""PostgreSQL: the number of thoughts, kept by triggers in thought_total (nothing on SQLite).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

The X-Total-Count of the unfiltered list reads it (thoughts.ALL_THOUGHTS): COUNT(*) there
reads a whole index, 0.1 s at a million rows. SQLite's COUNT(*) of a table counts b-tree
pages and stays cheap, so SQLite needs none of this. The table is locked against writes
while the rows already there are counted, so that the first count and the triggers that
take over from it agree. Downgrade drops the triggers, their function and the table.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = (
    "LOCK TABLE thought IN SHARE ROW EXCLUSIVE MODE",
    """CREATE TABLE thought_total (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        thoughts bigint NOT NULL
    )""",
    """CREATE FUNCTION thought_total_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE thought_total SET thoughts = thoughts + (SELECT count(*) FROM changed);
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE thought_total SET thoughts = thoughts - (SELECT count(*) FROM changed);
        ELSE
            UPDATE thought_total SET thoughts = 0;
        END IF;
        RETURN NULL;
    END $$""",
    # Statement triggers with the changed rows as a table: one UPDATE per statement.
    """CREATE TRIGGER thought_total_insert AFTER INSERT ON thought
        REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update()""",
    """CREATE TRIGGER thought_total_delete AFTER DELETE ON thought
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update()""",
    """CREATE TRIGGER thought_total_truncate AFTER TRUNCATE ON thought
        FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update()""",
    "INSERT INTO thought_total (thoughts) SELECT count(*) FROM thought",
)


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        for statement in UPGRADE:
            op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for trigger in ("insert", "delete", "truncate"):
            op.execute(f"DROP TRIGGER thought_total_{trigger} ON thought")
        op.execute("DROP FUNCTION thought_total_update()")
        op.execute("DROP TABLE thought_total")
