"""A frozen PostgreSQL: every server process stopped (SIGSTOP), as a paused VM or a thrashing
host leaves it. Its kernel still accepts connections and acknowledges what is sent, so no
refusal, no reset and no TCP timeout comes back; and a stopped server cancels nothing, so
the statement timeout does not fire either. Without a deadline of the client's own, every
request waited until harakiri killed its worker. With it (thoughts_backend/
postgresql_timeouts.py), each is answered 503 within POSTGRES_STATEMENT_TIMEOUT_MS + 1 s,
and the service serves again once the server runs (SIGCONT), without a restart.
    make test-faults        (or: pytest -m faults -s tests/system/test_frozen_database.py)
"""

import time

import pytest
import sqlalchemy as sa

from thoughts_backend import postgresql_timeouts
from thoughts_backend.db import db
from thoughts_backend.token_validation import encode_token

from ..databases import app_with_schema
from ..postgres_instance import PostgresInstance
from ..support import wait_for
from .faults import (
    assert_each_answered_503_within,
    database_fault_under_load,
    served,
)

# The service's default POSTGRES_STATEMENT_TIMEOUT_MS (config.py), and the bound.
STATEMENT_TIMEOUT_SECONDS = 3.0
FROZEN_ANSWER_SECONDS = STATEMENT_TIMEOUT_SECONDS + 1.0


@pytest.fixture
def user_headers(private_key):
    return {"Authorization": f"Bearer {encode_token('freeze-tester', private_key, expires_in=3600)}"}


@pytest.mark.faults
@pytest.mark.postgresql
def test_frozen_postgresql_is_503_within_the_statement_timeout_and_recovers_on_sigcont(
    public_key_file, user_headers
):
    with (
        PostgresInstance.create() as database,
        served(public_key_file, DATABASE_URL=database.url) as service,
    ):
        fault = database_fault_under_load(
            service, user_headers, "freeze", database.freeze, database.thaw, answers=12
        )

    # A COMMIT sent just before the freeze is read by the server when it runs again, after
    # the client gave up on it: stored, though answered 503. Counted, as for a partition.
    assert_each_answered_503_within(
        fault, "PostgreSQL frozen (SIGSTOP), 4 clients on 2 workers", FROZEN_ANSWER_SECONDS
    )
    assert fault.readiness.seconds <= FROZEN_ANSWER_SECONDS


def connections_handed_out(engine: sa.Engine) -> list:
    """Grows by the DBAPI connection each time the pool hands one out."""
    handed_out = []
    sa.event.listen(
        engine, "checkout", lambda dbapi_connection, _record, _proxy: handed_out.append(dbapi_connection)
    )
    return handed_out


@pytest.mark.faults
@pytest.mark.postgresql
def test_a_connection_abandoned_mid_query_is_closed_and_never_reused(public_pem):
    """In-process, step by step: the request that waited gets 503 at its deadline and its
    connection is closed; the next ones get 503 at once, without a connection attempt,
    during the hold-off; once the server runs again, a new connection serves."""
    with (
        PostgresInstance.create() as database,
        app_with_schema({"DATABASE_URL": database.url, "PUBLIC_KEY": public_pem}) as app,
    ):
        with app.app_context():
            engine = db.engine
        client = app.test_client()
        assert client.get("/api/thoughts/").status_code == 200
        with engine.connect() as connection:  # the pool's connection, the next request's
            pooled = connection.connection.dbapi_connection
        database.freeze()
        try:
            started = time.monotonic()
            waited = client.get("/api/thoughts/")
            waited_seconds = time.monotonic() - started
            handed_out = connections_handed_out(engine)
            started = time.monotonic()
            held_off = client.get("/api/thoughts/")
            held_off_seconds = time.monotonic() - started
        finally:
            database.thaw()
        recovered = wait_for(
            lambda: (response := client.get("/api/thoughts/")).status_code == 200 and response,
            10,
            "a 200 once PostgreSQL runs again",
        )

    print(
        f"\nfrozen PostgreSQL, in-process: 503 after {waited_seconds:.2f}s, then {held_off_seconds:.3f}s "
        f"during the hold-off"
    )
    assert waited.status_code == 503
    assert waited.headers["Retry-After"] == "1"
    budget = STATEMENT_TIMEOUT_SECONDS + postgresql_timeouts.DEADLINE_MARGIN_SECONDS
    assert budget <= waited_seconds < FROZEN_ANSWER_SECONDS
    assert pooled.closed, "the connection abandoned mid-query is still open"
    assert held_off.status_code == 503
    # No connection attempt: one to the frozen server would have waited connect_timeout (2 s).
    assert held_off_seconds < 1.0
    assert recovered.json == []
    # The abandoned connection was never handed out again: the requests after it got new ones.
    assert handed_out and pooled not in handed_out
