"""The original ThoughtsBackend's table, thought_model, as its init_db.py made it.

Revision ID: 0001
Revises:
Create Date: 2026-12-04

The first schema of this service's history: the "Hands-On Docker for Microservices with
Python" book's ThoughtsBackend (Chapter 3 on), whose init_db.py ran Flask-SQLAlchemy's
create_all() for

    class ThoughtModel(db.Model):  # table "thought_model"
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(50))
        text = db.Column(db.String(250))
        timestamp = db.Column(db.DateTime, server_default=func.now())

A database that the original made is taken over at this revision (schema.py), and 0002
brings its rows over. On an empty database this table lives only until 0002 renames it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "thought_model",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(50)),
        sa.Column("text", sa.String(250)),
        # Naive: the original wrote datetime.utcnow() here, UTC without a zone.
        sa.Column("timestamp", sa.DateTime(timezone=False), server_default=sa.func.now()),
    )


def downgrade():
    op.drop_table("thought_model")
