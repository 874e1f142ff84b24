"""How long a request waits for PostgreSQL, even for a PostgreSQL that never answers.

The statement timeout (POSTGRES_STATEMENT_TIMEOUT_MS) is the server's own: it cancels a
statement that runs, or waits for a lock, too long, and says so. A server whose processes
are stopped (SIGSTOP, a paused VM, a host thrashing) says nothing, cancels nothing, while
its kernel still acknowledges every packet, so none of libpq's TCP timeouts fire either:
each request would wait until harakiri kills its worker. So the client keeps a deadline of
its own, and gives up on the server just after the server would have given up itself:

- Each use of a pooled connection (from checkout to checkin: a request's transaction, and
  the rollback that returns it) must be done within the statement timeout plus
  DEADLINE_MARGIN_SECONDS. psycopg waits for the server's answers in a poll loop of its
  own, with a timeout that DeadlineConnection fills in; no signal and no thread is needed,
  so it works the same in uWSGI's prefork workers (where a Python thread only runs while a
  request does) and with threads enabled.
- A connection whose deadline passed is closed on the spot: it may still be in the middle
  of a query, and reused it would read that query's late answer as the next one's. psycopg
  then reports it closed, so SQLAlchemy discards it and drops the rest of the pool too.
- Then, for HOLD_OFF_SECONDS, that process makes no new connection and answers 503 at
  once: requests queued behind the one that waited do not wait in turn (a new connection
  to a stopped server would take connect_timeout, 2 s, to fail). After it, the next request
  tries again; once the server runs again (SIGCONT), it is served, with no restart.

Behind a pooler in transaction mode (POSTGRES_TRANSACTION_POOLER, e.g. PgBouncer), the
statement timeout cannot be a startup option: PgBouncer refuses unknown ones, and a
session's SET would reach whichever client is given that server connection next. So each
transaction sets it for itself (SET LOCAL), at the cost of one round trip per transaction.
"""

import time

import psycopg
import sqlalchemy as sa

# A server that is alive cancels a statement at its statement timeout and answers at once;
# one that has not answered this long after is taken for one that cannot.
DEADLINE_MARGIN_SECONDS = 0.5
# How long a process answers 503 without trying the server, after the server failed to
# answer in time: the Retry-After the clients are given (errors.py).
HOLD_OFF_SECONDS = 1.0


class DatabaseDidNotAnswer(psycopg.OperationalError):
    """PostgreSQL did not answer by the client's deadline, or was not tried (hold-off)."""


class HoldOff:
    """Per engine and process: until when no new connection is tried."""

    def __init__(self):
        self.until = 0.0

    def start(self) -> None:
        self.until = time.monotonic() + HOLD_OFF_SECONDS

    def check(self) -> None:
        if time.monotonic() < self.until:
            raise DatabaseDidNotAnswer(
                "PostgreSQL did not answer in time a moment ago; not tried again for "
                f"{HOLD_OFF_SECONDS:g} s after that"
            )


class DeadlineConnection(psycopg.Connection):
    """A psycopg connection whose waits for the server end at `deadline` (time.monotonic()),
    when one is set; None waits as long as the server takes."""

    deadline: float | None = None
    hold_off: HoldOff | None = None

    def wait(self, gen, *args, **kwargs):
        # Every wait for the server goes through here: queries, commits, rollbacks, pings.
        # A caller that sets a timeout of its own (psycopg's notifies) keeps it.
        if self.deadline is None or len(args) > 1 or kwargs.get("timeout") is not None:
            return super().wait(gen, *args, **kwargs)
        kwargs["timeout"] = max(self.deadline - time.monotonic(), 0.0)
        try:
            return super().wait(gen, *args, **kwargs)
        except psycopg.errors._WaitTimeout:  # psycopg's own timeout: the server said nothing
            self.pgconn.finish()  # abandoned mid-query: never to be used again
            if self.hold_off is not None:
                self.hold_off.start()
            raise DatabaseDidNotAnswer(
                "PostgreSQL did not answer within the client's deadline "
                "(POSTGRES_STATEMENT_TIMEOUT_MS plus a margin); the connection was closed"
            ) from None


def lift_deadline(connection: sa.Connection) -> None:
    """No client-side deadline on this connection until the pool takes it back (its next
    checkout sets one again): for a migration, whose wait for the schema lock or index
    build may rightly take longer than any request."""
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, DeadlineConnection):
        dbapi_connection.deadline = None


def configure_postgresql_timeouts(
    engine: sa.Engine, statement_timeout_ms: int, transaction_pooler: bool = False
) -> None:
    """The client-side deadline and hold-off; SET LOCAL of the statement timeout behind a
    transaction pooler. A statement timeout of 0 (the server's own setting) sets no deadline."""
    if engine.dialect.name != "postgresql":
        return
    budget = statement_timeout_ms / 1000 + DEADLINE_MARGIN_SECONDS if statement_timeout_ms else None
    hold_off = HoldOff()

    def deadline_from_now() -> float | None:
        return time.monotonic() + budget if budget is not None else None

    @sa.event.listens_for(engine, "do_connect")
    def connect(_dialect, _record, cargs, cparams):
        hold_off.check()
        try:
            connection = DeadlineConnection.connect(*cargs, **cparams)
        except psycopg.errors.ConnectionTimeout:
            hold_off.start()
            raise
        connection.hold_off = hold_off
        # SQLAlchemy's first queries on a new connection come before any checkout.
        connection.deadline = deadline_from_now()
        return connection

    # First among the checkout listeners: db.configure_postgresql's may ping the server.
    @sa.event.listens_for(engine, "checkout", insert=True)
    def start_deadline(dbapi_connection, _record, _proxy):
        dbapi_connection.deadline = deadline_from_now()

    # After the pool's rollback of the returned connection, which the deadline covers too.
    @sa.event.listens_for(engine, "checkin")
    def end_deadline(dbapi_connection, _record):
        if dbapi_connection is not None:
            dbapi_connection.deadline = None

    if transaction_pooler and statement_timeout_ms:

        @sa.event.listens_for(engine, "begin")
        def set_statement_timeout(connection):
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
