"""The stored thoughts."""

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .db import db

MAX_TEXT_LENGTH = 250
MAX_USERNAME_LENGTH = 50


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

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(MAX_USERNAME_LENGTH), index=True)
    text: Mapped[str] = mapped_column(sa.String(MAX_TEXT_LENGTH))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "username": self.username,
            "text": self.text,
            "timestamp": self.timestamp.isoformat(),
        }
