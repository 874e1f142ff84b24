"""PostgreSQL behind PgBouncer in transaction mode (POSTGRES_TRANSACTION_POOLER=true).

Debian's PgBouncer (1.18 here), started by the tests (tests/pgbouncer.py), with fewer
server connections than clients. Each transaction of a client may run on another server
connection, so a client can keep nothing on "its" session: no prepared statement (PgBouncer
1.18 does not carry them), no SET. And it refuses startup parameters it does not know, such
as `options`, which is how the statement timeout is sent to a PostgreSQL reached directly.
The app's own tests on PostgreSQL run through it too (conftest's `database_url`); the
rolling restart of tests/system/test_scale_out.py as well. Here: what the setting changes, and a
PgBouncer restart under load.
    make test-faults        (or: pytest -m pgbouncer -s tests/system/test_pgbouncer.py)
"""

import logging
import time

import psycopg
import pytest
import requests
import sqlalchemy as sa

from thoughts_backend.app import create_app
from thoughts_backend.config import ConfigError, flask_config, gather_settings
from thoughts_backend.db import db
from thoughts_backend.token_validation import encode_token

from ..databases import app_with_schema
from ..pgbouncer import PgBouncer
from ..postgres_instance import PostgresInstance
from .faults import (
    OUTAGE_ANSWER_SECONDS,
    REQUEST_TIMEOUT,
    assert_each_answered_503_within,
    database_fault_under_load,
    served,
)


def plain(url: str) -> str:
    """A SQLAlchemy URL as libpq takes it (psycopg.connect)."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def connect_args(public_pem, url: str = "postgresql://u@bouncer:6432/thoughts", **settings) -> dict:
    values = gather_settings({}, {"DATABASE_URL": url, "PUBLIC_KEY": public_pem, **settings})
    return flask_config(values)["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]


def test_the_setting_sends_no_startup_option_and_prepares_no_statement(public_pem):
    direct = connect_args(public_pem)
    pooled = connect_args(public_pem, POSTGRES_TRANSACTION_POOLER="true")
    assert direct["options"] == "-c statement_timeout=3000" and "prepare_threshold" not in direct
    assert "options" not in pooled and pooled["prepare_threshold"] is None
    # libpq's own timeouts stay.
    assert pooled["connect_timeout"] == 2 and pooled["tcp_user_timeout"] == 2000


def test_a_url_with_options_behind_a_transaction_pooler_stops_the_start(public_pem):
    with pytest.raises(
        ConfigError, match="DATABASE_URL sets `options`, which a pooler in transaction mode refuses"
    ):
        connect_args(
            public_pem,
            "postgresql://u@bouncer/thoughts?options=-c%20search_path%3Dapp",
            POSTGRES_TRANSACTION_POOLER="1",
        )


def test_the_setting_is_true_or_false(public_pem):
    with pytest.raises(ConfigError, match="POSTGRES_TRANSACTION_POOLER must be true or false, not 'maybe'"):
        connect_args(public_pem, POSTGRES_TRANSACTION_POOLER="maybe")


@pytest.mark.postgresql
@pytest.mark.pgbouncer
def test_without_the_setting_pgbouncer_refuses_the_statement_timeouts_startup_option(
    pgbouncer_server_url, public_pem
):
    app = create_app({"DATABASE_URL": pgbouncer_server_url, "PUBLIC_KEY": public_pem})
    with app.app_context():
        with pytest.raises(sa.exc.OperationalError, match="unsupported startup parameter: options"):
            db.engine.connect()
        db.engine.dispose()


@pytest.mark.postgresql
@pytest.mark.pgbouncer
def test_the_statement_timeout_reaches_postgresql_through_pgbouncer(
    pgbouncer_server_url, postgresql_server_url, public_pem, caplog
):
    """Sent per transaction (SET LOCAL): PostgreSQL itself cancels a query that waits for a
    lock, well before the client's own deadline (the timeout plus 0.5 s)."""
    settings = {
        "DATABASE_URL": pgbouncer_server_url,
        "PUBLIC_KEY": public_pem,
        "POSTGRES_TRANSACTION_POOLER": "true",
        "POSTGRES_STATEMENT_TIMEOUT_MS": "500",
    }
    with app_with_schema(settings) as app:
        client = app.test_client()
        assert client.get("/api/thoughts/").status_code == 200
        with app.app_context():
            in_a_transaction = db.session.scalar(sa.text("SHOW statement_timeout"))
            db.session.rollback()
        with psycopg.connect(plain(postgresql_server_url)) as locker:
            locker.execute("LOCK TABLE thought IN ACCESS EXCLUSIVE MODE")
            with caplog.at_level(logging.ERROR, logger="thoughts_backend"):
                started = time.monotonic()
                locked = client.get("/api/thoughts/")
                waited = time.monotonic() - started
            locker.rollback()
        after = client.get("/api/thoughts/")

    assert in_a_transaction == "500ms"
    assert locked.status_code == 503
    assert "canceling statement due to statement timeout" in caplog.text
    assert 0.5 <= waited < 1.0
    assert after.status_code == 200


@pytest.mark.postgresql
@pytest.mark.pgbouncer
@pytest.mark.parametrize("transaction_pooler", [True, False])
def test_statements_run_again_and_again_on_shared_server_connections(
    pgbouncer_server_url, public_pem, transaction_pooler
):
    """Three clients, two server connections: each client's transactions land on either.
    psycopg prepares a statement on its fifth run, on the server connection of that
    transaction; the next transaction of that client may be on the other one, which does
    not know it. POSTGRES_STATEMENT_TIMEOUT_MS=0, the advice before the setting existed,
    gets past PgBouncer's refusal of `options`, and then fails like this."""
    settings = {"DATABASE_URL": pgbouncer_server_url, "PUBLIC_KEY": public_pem}
    if transaction_pooler:
        settings["POSTGRES_TRANSACTION_POOLER"] = "true"
    else:
        settings["POSTGRES_STATEMENT_TIMEOUT_MS"] = "0"
    failures = []
    with app_with_schema(settings) as app, app.app_context():
        clients = [db.engine.connect() for _ in range(3)]
        try:
            for run in range(10):
                for number, connection in enumerate(clients):
                    try:
                        connection.execute(
                            sa.text("SELECT count(*) FROM thought WHERE id > :id"), {"id": run}
                        )
                        connection.commit()
                    except sa.exc.DBAPIError as error:
                        failures.append(f"client {number}, run {run}: {error.orig}")
                        connection.rollback()
        finally:
            for connection in clients:
                connection.close()
    if transaction_pooler:
        assert failures == []
    else:
        assert any("prepared statement" in failure for failure in failures), failures


@pytest.fixture
def user_headers(private_key):
    return {"Authorization": f"Bearer {encode_token('bouncer-tester', private_key, expires_in=3600)}"}


@pytest.mark.faults
@pytest.mark.postgresql
@pytest.mark.pgbouncer
def test_pgbouncer_restart_under_load_is_503_then_recovers(public_key_file, user_headers):
    """PgBouncer stopped (every client connection closed) and started again, under load, with
    3 workers sharing 2 server connections: 503s with Retry-After while it is away, within a
    second, and the service serves again by itself once it is back."""
    with (
        PostgresInstance.create() as database,
        PgBouncer.create("127.0.0.1", database.port, pool_size=2) as bouncer,
        served(
            public_key_file,
            processes=3,
            DATABASE_URL=bouncer.url_for(database.url),
            POSTGRES_TRANSACTION_POOLER="true",
        ) as service,
    ):
        fault = database_fault_under_load(
            service, user_headers, "PgBouncer restart", bouncer.stop, bouncer.start, answers=20
        )
        readiness_after = requests.get(f"{service.url}/readyz", timeout=REQUEST_TIMEOUT)

    # A COMMIT that PgBouncer had passed on when it stopped is stored, its answer lost.
    assert_each_answered_503_within(
        fault, "PgBouncer stopped and started again, 4 clients on 3 workers, pool of 2", OUTAGE_ANSWER_SECONDS
    )
    assert readiness_after.status_code == 200
