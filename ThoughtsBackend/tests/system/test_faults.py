"""Faults under load, against the service under uWSGI: the database goes away, a worker is
killed, a request hangs past harakiri, the SQLite disk is read-only or full.

Each test runs a bounded load (a few client threads, a capped number of requests) and
waits for conditions, never for fixed sleeps. The numbers each test measures (requests in
flight when the fault hit, how many failed and how) are printed; run with -s to see them:
    make test-faults        (or: pytest -m faults -s tests/system/test_faults.py)
"""

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
import sqlalchemy as sa

from thoughts_backend import db as thoughts_db
from thoughts_backend.app import create_app
from thoughts_backend.db import db
from thoughts_backend.schema import upgrade_schema
from thoughts_backend.token_validation import encode_token

from ..databases import app_with_schema
from ..postgres_instance import IsolatedLink, PostgresInstance
from ..support import POSTGRES_TEST_URL, wait_for
from ..uwsgi_process import ServedApp, uwsgi_setting
from .faults import (
    OUTAGE_ANSWER_SECONDS,
    REQUEST_TIMEOUT,
    Load,
    assert_every_request_answered_and_no_acknowledged_write_lost,
    busy_worker_pids,
    database_fault_under_load,
    describe,
    reader,
    replaced_workers,
    served,
    stored_texts,
    summary,
    tmpfs,
    worker_pids,
    writes_refused_yet_stored,
)
from .load import send

HARAKIRI_SECONDS = 3
# Across a network partition nothing answers, not even a refusal: what bounds an answer is
# the client's own timeouts (config.py: 2 s for unacknowledged data, then 2 s for a new
# connection), plus the wait behind a worker busy with the same, which must end inside
# harakiri (8 s in uwsgi.ini), or the worker is killed and the client cut off.
PARTITION_ANSWER_SECONDS = 7.0
WORKERS = 3


@pytest.fixture
def user_headers(private_key):
    return {"Authorization": f"Bearer {encode_token('fault-tester', private_key, expires_in=3600)}"}


# --- (a) PostgreSQL goes away under load, and comes back --------------------------------


@pytest.mark.faults
@pytest.mark.postgresql
@pytest.mark.parametrize("shutdown", ["fast", "immediate"])
def test_postgresql_outage_is_503_within_a_second_and_recovers_by_itself(
    public_key_file, user_headers, shutdown
):
    with (
        PostgresInstance.create() as database,
        served(public_key_file, DATABASE_URL=database.url) as service,
    ):
        fault = database_fault_under_load(
            service, user_headers, "outage", lambda: database.stop(mode=shutdown), database.start, answers=20
        )
        readiness_after = requests.get(f"{service.url}/readyz", timeout=REQUEST_TIMEOUT)

    print(describe(fault, f"PostgreSQL {shutdown} stop"))
    assert_every_request_answered_and_no_acknowledged_write_lost(fault)
    slow = [o for o in fault.during if o.seconds > OUTAGE_ANSWER_SECONDS]
    assert not slow, [(o.method, o.status, round(o.seconds, 3)) for o in slow]
    assert fault.readiness.status == 503
    assert fault.readiness.json_body["status"] == "unavailable"
    assert readiness_after.status_code == 200
    assert not writes_refused_yet_stored(fault), "a write answered 503 was stored"


@pytest.mark.faults
@pytest.mark.postgresql
def test_postgresql_cut_off_by_a_partition_is_503_before_harakiri_and_recovers(public_key_file, user_headers):
    """Not stopped but unreachable (a cable cut, a failover that moved the address): no
    refusal and no reset come back, and a worker waiting on its connection would hang until
    harakiri kills it. The client's timeouts must turn that into 503s."""
    with (
        IsolatedLink.create() as link,
        PostgresInstance.create(link) as database,
        served(public_key_file, DATABASE_URL=database.url) as service,
    ):
        fault = database_fault_under_load(service, user_headers, "partition", link.cut, link.heal)

    # A commit sent just before the cut may be stored with its answer lost: counted, not failed.
    print(describe(fault, "PostgreSQL cut off by a partition"))
    print(
        f"writes answered 503 yet stored (committed, then the answer lost): {len(writes_refused_yet_stored(fault))}"
    )
    assert_every_request_answered_and_no_acknowledged_write_lost(fault)
    slow = [o for o in fault.during if o.seconds > PARTITION_ANSWER_SECONDS]
    assert not slow, [(o.method, o.status, round(o.seconds, 2)) for o in slow]
    assert fault.readiness.status == 503
    assert fault.readiness.seconds <= PARTITION_ANSWER_SECONDS


# The service's default POSTGRES_STATEMENT_TIMEOUT_MS (config.py). Each request holds its
# worker that long; with the load's 4 clients on 2 workers, it also waits for the request
# ahead of it: two timeouts, and a second of margin for the rest of the request.
STATEMENT_TIMEOUT_SECONDS = 3.0
LOCKED_ANSWER_SECONDS = 2 * STATEMENT_TIMEOUT_SECONDS + 1.0


@pytest.mark.faults
@pytest.mark.postgresql
def test_table_locked_by_another_transaction_is_503_after_the_statement_timeout(
    public_key_file, user_headers
):
    """PostgreSQL up but the table locked (a migration, a long transaction that took a
    table lock): each query waits for the lock. The statement timeout cancels the wait, so
    requests get a 503 instead of holding their workers until harakiri kills them."""
    with (
        PostgresInstance.create() as database,
        served(public_key_file, DATABASE_URL=database.url) as service,
        psycopg.connect(database.url.replace("+psycopg", "")) as locker,
    ):
        fault = database_fault_under_load(
            service,
            user_headers,
            "table lock",
            lambda: locker.execute("LOCK TABLE thought IN ACCESS EXCLUSIVE MODE"),
            locker.rollback,
            answers=6,
        )

    print(describe(fault, "Table locked by another transaction"))
    assert_every_request_answered_and_no_acknowledged_write_lost(fault)
    slow = [o for o in fault.during if o.seconds > LOCKED_ANSWER_SECONDS]
    assert not slow, [(o.method, o.status, round(o.seconds, 2)) for o in slow]
    assert fault.readiness.status == 200  # the server itself answers
    assert not writes_refused_yet_stored(fault), "a write answered 503 was stored"


# --- The database dies between two steps of one request (in-process, deterministic) -----


@pytest.fixture
def postgresql_app(postgresql_server_url, public_pem):
    """An app of our own on the test PostgreSQL (not the `app` fixture: pytest-flask would
    keep one app context open around the whole test, and teardown would never run)."""
    with app_with_schema({"DATABASE_URL": postgresql_server_url, "PUBLIC_KEY": public_pem}) as app:
        yield app


def terminate_backend(backend_pid: int) -> None:
    """End a server process and wait until it has exited (PostgreSQL 14's timeout argument,
    in ms): a request sent sooner could still find its connection open, and lose a race the
    test is not about (it did, once, against docker-compose's db on a busy machine)."""
    with psycopg.connect(POSTGRES_TEST_URL, autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(%s, 10000)", [backend_pid]).fetchone()[0]
    assert ended, f"PostgreSQL backend {backend_pid} still running 10 s after pg_terminate_backend"


@pytest.mark.postgresql
def test_connection_lost_after_the_view_ran_still_sends_the_whole_answer(postgresql_app):
    """Under uWSGI a failure here cut the answer off after its headers (IncompleteRead)."""

    @postgresql_app.after_request
    def lose_the_connection(response):
        terminate_backend(db.session.scalar(sa.text("SELECT pg_backend_pid()")))
        return response

    client = postgresql_app.test_client()
    for _ in range(2):  # and the next request gets a new connection by itself
        response = client.get("/api/thoughts/")
        assert response.status_code == 200
        assert response.json == []
        assert response.headers["X-Total-Count"] == "0"


def connections_made(engine: sa.Engine) -> list:
    """Grows by one each time the engine opens a new connection to the database."""
    made = []
    sa.event.listen(engine, "connect", lambda dbapi_connection, _record: made.append(dbapi_connection))
    return made


@pytest.mark.postgresql
def test_a_healthy_pooled_connection_is_reused_without_a_round_trip(postgresql_app, monkeypatch):
    """No ping per request (pool_pre_ping costs a round trip each), and no new connection."""
    with postgresql_app.app_context():
        engine = db.engine
    pings = []
    monkeypatch.setattr(engine.dialect, "do_ping", lambda dbapi_connection: pings.append(1) or True)
    # Back in use at once, as under load, however slow this machine is.
    monkeypatch.setattr(thoughts_db, "PING_AFTER_IDLE_SECONDS", 60)
    client = postgresql_app.test_client()
    assert client.get("/api/thoughts/").status_code == 200
    made = connections_made(engine)
    for _ in range(5):
        assert client.get("/api/thoughts/").status_code == 200
        assert client.get("/api/thoughts/1/").status_code == 404
    assert (made, pings) == ([], [])


@pytest.mark.postgresql
@pytest.mark.parametrize(("idle_seconds_before_a_ping", "status"), [(0, 200), (60, 503)])
def test_a_silently_dead_pooled_connection_is_found_by_a_ping_once_idle(
    postgresql_app, monkeypatch, idle_seconds_before_a_ping, status
):
    """A server that vanished sends nothing: the socket shows nothing to read (made so
    here), and only a ping finds the connection dead. An idle connection gets one; a busy
    one does not, and its request fails (503), the price of no ping per request."""
    with postgresql_app.app_context():
        engine = db.engine
    engine.dispose()
    with engine.connect() as connection:  # the pool's only connection, the next request's
        backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    terminate_backend(backend)
    monkeypatch.setattr(thoughts_db, "has_something_to_read", lambda dbapi_connection: False)
    monkeypatch.setattr(thoughts_db, "PING_AFTER_IDLE_SECONDS", idle_seconds_before_a_ping)
    made = connections_made(engine)
    assert postgresql_app.test_client().get("/api/thoughts/").status_code == status
    assert len(made) == (1 if status == 200 else 0)


@pytest.mark.faults
@pytest.mark.postgresql
@pytest.mark.parametrize("shutdown", ["fast", "immediate"])
def test_pooled_connections_closed_by_a_postgresql_restart_are_replaced_before_use(public_pem, shutdown):
    """After a restart, the first requests find every pooled connection dead: each is
    replaced before use, so none of them fails."""
    pooled = 3
    with (
        PostgresInstance.create() as database,
        app_with_schema({"DATABASE_URL": database.url, "PUBLIC_KEY": public_pem}) as app,
    ):
        with app.app_context():
            engine = db.engine
        held = [engine.connect() for _ in range(pooled)]
        for connection in held:
            connection.close()  # back into the pool, idle
        database.stop(mode=shutdown)
        database.start()
        made = connections_made(engine)
        client = app.test_client()
        statuses = [client.get("/api/thoughts/").status_code for _ in range(pooled + 2)]
    assert statuses == [200] * (pooled + 2)
    assert made, "no connection was replaced: the restart did not reach the pool"


@pytest.mark.faults
@pytest.mark.postgresql
def test_write_committed_just_before_the_database_stops_is_201(public_pem, make_token):
    """The answer must not need the database after the commit, or a stored thought is answered 503."""
    with PostgresInstance.create() as database:
        app = create_app({"DATABASE_URL": database.url, "PUBLIC_KEY": public_pem})
        with app.app_context():
            upgrade_schema(db.engine)

        def stop_the_database(_session):
            database.stop(mode="immediate")

        sa.event.listen(db.session, "after_commit", stop_the_database)
        try:
            created = app.test_client().post(
                "/api/me/thoughts/",
                json={"text": "committed, then the database stopped"},
                headers={"Authorization": f"Bearer {make_token('alice')}"},
            )
        finally:
            sa.event.remove(db.session, "after_commit", stop_the_database)
        database.start()
        stored = app.test_client().get(f"/api/thoughts/{created.json.get('id')}/")
        with app.app_context():
            db.engine.dispose()
    assert created.status_code == 201, created.json
    assert stored.json == created.json


# --- (b) and (c): a worker dies with a request on it ------------------------------------


@contextlib.contextmanager
def sqlite_write_lock(path: Path):
    """Hold SQLite's write lock from another connection: writers in the service wait on it
    (up to their busy timeout) while readers go on, as WAL allows."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def hang_one_write(pool: ThreadPoolExecutor, service: ServedApp, headers: dict):
    """Send a POST that blocks on the held write lock; return its future and its worker's pid."""
    text = f"hung-{uuid.uuid4().hex}"
    busy_before = busy_worker_pids(service)
    future = pool.submit(
        send,
        service.url,
        "POST",
        "/api/me/thoughts/",
        json={"text": text},
        headers=headers,
    )
    busy = wait_for(lambda: busy_worker_pids(service) - busy_before, 10, "a worker busy with the write")
    assert len(busy) == 1
    return future, text, busy.pop()


def replaced_then_reads(service: ServedApp, load: Load, workers_before: set[int]) -> tuple[set[int], float]:
    """Wait until the master has replaced a worker of `workers_before`, then until 20 reads
    made after that were answered 200: (the worker pids then, when the replacement was seen)."""
    replaced = wait_for(
        lambda: replaced_workers(service, workers_before), 20, "the master replacing the worker that died"
    )
    replaced_at = time.monotonic()
    wait_for(
        lambda: load.count(lambda o: o.started > replaced_at and o.status == 200) >= 20,
        20,
        "reads after the worker was replaced",
        details=lambda: (
            f"{load.count(lambda o: o.started > replaced_at)} requests after it, of {len(load.snapshot())}; "
            f"load threads alive: {sum(thread.is_alive() for thread in load.threads)}"
        ),
    )
    return replaced, replaced_at


def sqlite_settings(tmp_path: Path, **extra) -> dict:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", **extra}


@pytest.mark.faults
def test_killed_worker_is_respawned_and_only_its_request_fails(tmp_path, public_key_file, user_headers):
    settings = sqlite_settings(tmp_path, SQLITE_BUSY_TIMEOUT_MS=60_000, UWSGI_HARAKIRI=60)
    with (
        served(public_key_file, processes=WORKERS, **settings) as service,
        ThreadPoolExecutor(1) as pool,
    ):
        workers_before = worker_pids(service)
        assert len(workers_before) == WORKERS
        load = Load(service.url, [reader, reader])
        with sqlite_write_lock(tmp_path / "db.sqlite3"):
            hung, hung_text, victim = hang_one_write(pool, service, user_headers)
            with load:
                wait_for(
                    lambda: load.count(lambda o: o.status == 200) >= 20, 20, "reads beside the hung write"
                )
                in_flight_at_kill = load.in_flight + 1
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                respawned, respawned_at = replaced_then_reads(service, load, workers_before)
            killed = hung.result(REQUEST_TIMEOUT)
        stored = stored_texts(service)

    reads = load.snapshot()
    print(
        f"\nworker SIGKILL under load: {in_flight_at_kill} requests in flight at the kill "
        f"(1 on the killed worker); {len(reads)} reads on the others, {sum(o.failed for o in reads)} failed; "
        f"the killed worker's request: {killed.status or killed.error} after {killed.seconds:.2f}s; "
        f"respawned in {respawned_at - killed_at:.2f}s"
    )
    assert killed.failed
    assert killed.status is None or killed.status >= 500
    assert summary(reads) == Counter({200: len(reads)})
    assert victim not in respawned
    assert len(respawned & workers_before) == WORKERS - 1
    assert hung_text not in stored, "the killed request's write was stored"


@pytest.mark.faults
def test_request_past_harakiri_is_ended_and_the_worker_recycled(tmp_path, public_key_file, user_headers):
    settings = sqlite_settings(tmp_path, SQLITE_BUSY_TIMEOUT_MS=60_000, UWSGI_HARAKIRI=HARAKIRI_SECONDS)
    with (
        served(public_key_file, processes=WORKERS, **settings) as service,
        ThreadPoolExecutor(1) as pool,
    ):
        workers_before = worker_pids(service)
        load = Load(service.url, [reader, reader])
        with sqlite_write_lock(tmp_path / "db.sqlite3"):
            hung, hung_text, victim = hang_one_write(pool, service, user_headers)
            with load:
                ended = hung.result(HARAKIRI_SECONDS + REQUEST_TIMEOUT)
                recycled, _replaced_at = replaced_then_reads(service, load, workers_before)
        stored = stored_texts(service)
        log = service.output

    reads = load.snapshot()
    print(
        f"\nharakiri ({HARAKIRI_SECONDS}s): the hung request ended with {ended.status or ended.error} "
        f"after {ended.seconds:.2f}s; {len(reads)} reads on the other workers meanwhile, "
        f"{sum(o.failed for o in reads)} failed"
    )
    assert ended.failed
    # uWSGI keeps harakiri in whole seconds: a request begun late in a second is due at the
    # start of the Nth second after it (so after N-1 s and a fraction), and the master looks
    # once a second. A run here ended one after 2.06 s with harakiri 3.
    assert HARAKIRI_SECONDS - 1 < ended.seconds <= HARAKIRI_SECONDS + 3
    assert "HARAKIRI" in log
    assert victim not in recycled
    assert summary(reads) == Counter({200: len(reads)})
    assert hung_text not in stored


@pytest.mark.faults
def test_a_request_without_a_body_is_ended_by_the_router_when_harakiri_is_off(
    tmp_path, public_key_file, user_headers
):
    """A request without a body goes from the HTTP router straight to a worker, past the
    fastrouter and its timeout (uwsgi.ini, http-to-bodyless). With harakiri off, the HTTP
    router's own timeout (http-timeout) still ends one that a worker holds."""
    router_timeout = uwsgi_setting("http-timeout")
    settings = sqlite_settings(tmp_path, SQLITE_BUSY_TIMEOUT_MS=60_000, UWSGI_HARAKIRI=0)
    with served(public_key_file, processes=WORKERS, **settings) as service:
        created = send(
            service.url, "POST", "/api/me/thoughts/", json={"text": "to delete"}, headers=user_headers
        )
        assert created.status == 201, created
        thought_id = created.json_body["id"]
        # The DELETE has no body; it waits for the write lock, up to the busy timeout (60 s).
        with sqlite_write_lock(tmp_path / "db.sqlite3"):
            ended = send(
                service.url,
                "DELETE",
                f"/api/me/thoughts/{thought_id}/",
                headers=user_headers,
                timeout=router_timeout + 20,
            )
    assert ended.kind == "closed", ended
    # uWSGI's router counts its timeouts in whole seconds.
    assert router_timeout - 1 < ended.seconds <= router_timeout + 2, ended


# --- (d) the SQLite file is not writable, or the disk is full ---------------------------


@contextlib.contextmanager
def read_only_view(directory: Path, view: Path):
    """`directory` again at `view`, read-only: as a volume mounted :ro."""
    view.mkdir()
    subprocess.run(["mount", "--bind", str(directory), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=False)


def refused_start(public_key_file, database_path: Path) -> str:
    service = served(public_key_file, DATABASE_URL=f"sqlite:///{database_path}")
    with pytest.raises(RuntimeError) as failed:
        service.start()
    service.close()
    return str(failed.value)


@pytest.mark.faults
def test_read_only_database_directory_fails_at_start_up_with_a_clear_message(tmp_path, public_key_file):
    with tmpfs(tmp_path / "data", "1m", read_only=True) as data:
        message = refused_start(public_key_file, data / "db.sqlite3")
    assert "init_db: cannot use the database" in message
    assert str(data / "db.sqlite3") in message


@pytest.mark.faults
def test_existing_database_on_a_read_only_mount_refuses_writes_with_503(
    tmp_path, public_key_file, user_headers
):
    """Left as a stopped service leaves it (WAL and shared-memory files beside it), then mounted
    read-only: SQLite opens it for reading, so the service starts; every write must fail."""
    with tmpfs(tmp_path / "data", "4m") as data:
        with served(public_key_file, DATABASE_URL=f"sqlite:///{data / 'db.sqlite3'}") as service:
            url = f"{service.url}/api/me/thoughts/"
            assert (
                requests.post(url, json={"text": "stored"}, headers=user_headers, timeout=10).status_code
                == 201
            )
        with (
            read_only_view(data, tmp_path / "read-only") as view,
            served(public_key_file, DATABASE_URL=f"sqlite:///{view / 'db.sqlite3'}") as service,
        ):
            url = f"{service.url}/api/me/thoughts/"
            refused = [
                requests.post(url, json={"text": f"read-only-{n}"}, headers=user_headers, timeout=10)
                for n in range(5)
            ]
            reads = requests.get(f"{service.url}/api/thoughts/", timeout=10)
        with contextlib.closing(sqlite3.connect(data / "db.sqlite3")) as check:
            on_disk = [row[0] for row in check.execute("SELECT text FROM thought")]

    print(
        f"\nread-only mount: {len(refused)} writes, answers {dict(Counter(r.status_code for r in refused))}"
    )
    assert [r.status_code for r in refused] == [503] * len(refused)
    assert all(r.headers["Retry-After"] == "1" and r.json()["message"] for r in refused)
    assert reads.status_code == 200
    assert [thought["text"] for thought in reads.json()] == ["stored"]
    assert on_disk == ["stored"]


@pytest.mark.faults
def test_full_disk_is_503_never_a_silent_success_and_recovers(tmp_path, public_key_file, user_headers):
    with tmpfs(tmp_path / "data", "2m") as data:
        database_path = data / "db.sqlite3"
        with served(public_key_file, DATABASE_URL=f"sqlite:///{database_path}") as service:
            url = f"{service.url}/api/me/thoughts/"
            assert (
                requests.post(url, json={"text": "warm-up"}, headers=user_headers, timeout=10).status_code
                == 201
            )
            # Leave a few pages free, then write until the disk refuses.
            free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
            (data / "filler").write_bytes(b"\0" * max(free - 64 * 1024, 0))
            answers = []
            for n in range(400):
                response = requests.post(
                    url, json={"text": f"full-{n:04d}-" + "x" * 200}, headers=user_headers, timeout=10
                )
                answers.append((f"full-{n:04d}-" + "x" * 200, response))
                if response.status_code == 503 and sum(r.status_code == 503 for _, r in answers) >= 5:
                    break
            reads = requests.get(f"{service.url}/api/thoughts/?limit=1", timeout=10)
            (data / "filler").unlink()
            after = requests.post(url, json={"text": "after-space-freed"}, headers=user_headers, timeout=10)
        acknowledged = {text for text, response in answers if response.status_code == 201}
        refused = {text for text, response in answers if response.status_code != 201}
        with contextlib.closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as check:
            on_disk = {row[0] for row in check.execute("SELECT text FROM thought")}
            integrity = check.execute("PRAGMA integrity_check").fetchone()[0]

    statuses = Counter(response.status_code for _, response in answers)
    print(
        f"\nfull disk: {len(answers)} writes, {len(acknowledged)} acknowledged then {dict(statuses)}; "
        f"acknowledged found on disk: {len(acknowledged & on_disk)}/{len(acknowledged)}; "
        f"refused found: {len(refused & on_disk)}"
    )
    assert statuses[503] >= 5, statuses
    assert set(statuses) <= {201, 503}, statuses
    first_refusal = next(i for i, (_, response) in enumerate(answers) if response.status_code == 503)
    assert all(response.status_code == 503 for _, response in answers[first_refusal:])
    for _, response in answers[first_refusal:]:
        assert response.headers["Retry-After"] == "1"
        assert response.json()["message"]
    assert acknowledged <= on_disk
    assert not refused & on_disk
    assert integrity == "ok"
    assert reads.status_code == 200
    assert after.status_code == 201
    assert "after-space-freed" in on_disk


# --- A graceful reload while PostgreSQL is away ------------------------------------------


def reloaded_workers(service: ServedApp, before: set[int]) -> set[int] | None:
    """The worker pids once the reload has replaced every worker of `before`; None until then."""
    assert service.returncode is None, f"the service exited during the reload:\n{service.output}"
    try:
        pids = worker_pids(service)
    except OSError:  # the re-executed master has not made its stats socket yet
        return None
    return pids if len(pids) == len(before) and not pids & before else None


@pytest.mark.faults
@pytest.mark.postgresql
def test_reload_while_postgresql_is_down_keeps_serving_503s_and_recovers(public_key_file):
    """`r` on the master FIFO (uwsgi.ini) re-executes the master, which imports wsgi.py again:
    a schema step that cannot reach the database must not stop the service, as it does a
    first start."""
    with (
        PostgresInstance.create() as database,
        served(public_key_file, DATABASE_URL=database.url) as service,
    ):
        assert service.get("/api/thoughts/")[0] == 200
        workers_before = worker_pids(service)
        database.stop(mode="fast")
        service.fifo.write_text("r")
        wait_for(lambda: reloaded_workers(service, workers_before), 60, "new workers after the reload")
        during = requests.get(f"{service.url}/api/thoughts/", timeout=REQUEST_TIMEOUT)
        database.start()
        after = wait_for(
            lambda: (
                (response := requests.get(f"{service.url}/api/thoughts/", timeout=REQUEST_TIMEOUT))
                and response.status_code == 200
                and response
            ),
            20,
            "200 once PostgreSQL is back",
        )
        log = service.output

    assert during.status_code == 503, during.text
    assert during.headers["Retry-After"] == "1"
    assert "database" in during.json()["message"]
    assert after.json() == []
    assert "wsgi: reloaded without the database" in log, log
    # The import at the reload raised nothing (the 503s' JSON log records carry their own).
    assert not [line for line in log.splitlines() if line.startswith("Traceback")], log
