"""The stored thoughts: the one description of a thought.

Everything else the service says about a thought is derived from Thought's columns, in
their order: what the API shows of it (Thought.to_dict), the JSON the database writes for
a page (thoughts.shown_columns) and the API spec's model (thoughts.thought_model), each
field described by its column's `doc`.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .db import db

MAX_TEXT_LENGTH = 250
# A thought stores the user name its writer's token carries: as long as the tokens' rules
# let one be (token_validation.MAX_USERNAME_LENGTH; test_token_validation.py checks both agree).
USERNAME_LENGTH = 50


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite has no timezone type and hands back naive values; PostgreSQL's timestamptz
    comes back in the session's zone. Both are normalised here so the API always says
    "+00:00".
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Thought(db.Model):
    __tablename__ = "thought"
    # Ids are never reused: without AUTOINCREMENT, SQLite gives a deleted thought's id to the
    # next one, so an old link would show someone else's thought. (PostgreSQL's sequence
    # never reuses.)
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (read once, by SQLAlchemy)

    id: Mapped[int] = mapped_column(primary_key=True, doc="The thought's id")
    username: Mapped[str] = mapped_column(sa.String(USERNAME_LENGTH), index=True, doc="Who wrote it")
    text: Mapped[str] = mapped_column(sa.String(MAX_TEXT_LENGTH), doc="What they thought")
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, doc="When, ISO-8601 in UTC")

    def to_dict(self) -> dict:
        """What the API shows of the thought: every column, a timestamp in ISO-8601."""
        return {column.key: shown_value(getattr(self, column.key)) for column in self.__table__.columns}


def shown_value(value):
    return value.isoformat() if isinstance(value, datetime) else value
