"""What the benchmark's figures rely on: its seeded data (benchmarks/seed.py) has the shape its
scenarios and targets expect, its floors (benchmarks/floor/) answer what the ceiling does, and
its latency group's link (benchmarks/latency.py, delay_relay.py) is delayed, counted right and
removed at the end."""

import importlib
import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from thoughts_backend.app import create_app

from .support import cannot_run, postgresql_required

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

# The repository's benchmarks/, which the image does not hold.
pytestmark = pytest.mark.host


def benchmark_module(name: str):
    """benchmarks/<name>.py, imported from the checkout."""
    assert BENCHMARKS.is_dir(), f"{BENCHMARKS} is not here: these tests need the repository's benchmarks/"
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def seed():
    return benchmark_module("seed")


@pytest.fixture(scope="module")
def latency():
    return benchmark_module("latency")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def seeded(request, tmp_path, seed):
    """(database URL, rows) for a seeded database of each kind; dropped afterwards."""
    rows = 1000
    if request.param == "sqlite":
        yield seed.seed_sqlite(tmp_path / "bench.sqlite3", rows), rows
        return
    database = seed.PostgresqlDatabase(request.getfixturevalue("postgresql_server_url"))
    try:
        yield database.create(rows), rows
    finally:
        database.drop()


def test_seeded_rows_serve_every_scenario_the_same_at_any_size(seeded, seed, public_pem, make_token):
    url, rows = seeded
    client = create_app({"DATABASE_URL": url, "PUBLIC_KEY": public_pem}).test_client()
    everything = client.get("/api/thoughts/?limit=200")
    assert everything.headers["X-Total-Count"] == str(rows)
    assert len(everything.json) == 200
    search = client.get(f"/api/thoughts/?search={seed.SEARCH_WORD}")
    assert search.headers["X-Total-Count"] == str(seed.SEARCH_MATCHES) == "20"
    mine = client.get("/api/me/thoughts/", headers={"Authorization": f"Bearer {make_token(seed.BENCH_USER)}"})
    assert mine.headers["X-Total-Count"] == str(seed.USER_ROWS)
    assert client.get("/api/thoughts/42/").json["username"] == seed.BENCH_USER
    # The seeded timestamps read back like the service's own: ISO 8601 in UTC.
    assert everything.json[0]["timestamp"] == "2024-01-01T00:00:01+00:00"


@pytest.mark.postgresql
def test_seeded_postgresql_database_is_dropped(postgresql_server_url, seed):
    database = seed.PostgresqlDatabase(postgresql_server_url)
    database.create(10)
    database.drop()
    engine = sa.create_engine(sa.make_url(postgresql_server_url))
    with engine.connect() as connection:
        found = connection.scalar(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database.name}
        )
    engine.dispose()
    assert found is None


def load_benchmark_app(directory: str, name: str):
    """benchmarks/<directory>/wsgi.py as a module of its own (ThoughtsBackend has a wsgi.py too)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / directory / "wsgi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_floor_answers_the_ceilings_bytes(capsys):
    ceiling = load_benchmark_app("ceiling", "bench_ceiling")
    floors = load_benchmark_app("floor", "bench_floor")
    for floor in floors.FLOORS:
        response = floors.create_floor(floor).test_client().get(floors.PATH)
        assert response.status_code == 200, floor
        assert response.data == ceiling.BODY, floor
        assert response.content_type == "application/json", floor
    # The last one has the service's hooks: a request id and one JSON access record.
    assert floor == "observability"
    assert len(response.headers["X-Request-ID"]) == 32
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (record["logger"], record["path"], record["status"]) == ("thoughts_backend.access", "/floor", 200)


def test_an_unknown_floor_is_refused():
    floors = load_benchmark_app("floor", "bench_floor")
    with pytest.raises(ValueError, match="FLOOR must be one of flask, flask-restx, observability"):
        floors.create_floor("django")


def test_round_trip_summary_is_the_median_min_and_nearest_rank_p99(latency):
    times = [float(n) for n in range(200, 0, -1)]
    assert latency.summary(times) == {"samples": 200, "median_ms": 100.5, "min_ms": 1.0, "p99_ms": 198.0}


def test_a_requests_extra_wait_over_sqlite_is_counted_in_round_trips(latency):
    # 11 ms over the link where SQLite takes 1 ms, with 2.5 ms round trips: four of them.
    assert latency.round_trips_beyond(11.0, 1.0, 2.5) == 4.0
    assert latency.round_trips_beyond(1.0, 1.0, 2.5) == 0.0


@pytest.fixture
def echo_server():
    """A loopback TCP server that sends back whatever it gets; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener:
            connection, _ = listener.accept()
            with connection:
                while data := connection.recv(4096):
                    connection.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(timeout=10)


def test_the_delay_relay_passes_bytes_both_ways_in_order_each_way_late(echo_server):
    delay_ms = 50
    command = [sys.executable, str(BENCHMARKS / "delay_relay.py"), "127.0.0.1", "127.0.0.1", str(echo_server)]
    with subprocess.Popen([*command, str(delay_ms)], stdout=subprocess.PIPE, text=True) as relay:
        try:
            port = int(relay.stdout.readline())  # printed once it listens
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                messages = b"".join(f"message {n};".encode() for n in range(20))
                started = time.monotonic()
                for n in range(20):
                    client.sendall(f"message {n};".encode())
                received = b""
                while len(received) < len(messages):
                    received += client.recv(4096)
                round_trip = time.monotonic() - started
                assert received == messages
                # Held on the way there and on the way back: the delay is the relay's behaviour.
                assert round_trip >= 2 * delay_ms / 1000
                client.shutdown(socket.SHUT_WR)
                assert client.recv(4096) == b"", "the echo server's close came through"
        finally:
            relay.kill()


def network_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


@pytest.mark.faults
@pytest.mark.postgresql
def test_the_latency_groups_database_answers_across_the_delayed_link_and_is_removed_on_failure(latency):
    reason = latency.missing()
    if reason:
        cannot_run(reason, required=postgresql_required())
    before = network_namespaces()
    with (
        pytest.raises(RuntimeError, match="a failure in the middle of the group"),
        latency.delayed_postgresql() as (url, delayed_by),
    ):
        assert "netem" in delayed_by or "relay" in delayed_by
        plain = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, connect_timeout=5) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
        assert len(network_namespaces() - before) == 1
        round_trip = latency.link_round_trip(url, samples=5)
        assert round_trip["min_ms"] >= 2 * latency.DELAY_MS, round_trip
        raise RuntimeError("a failure in the middle of the group")
    assert network_namespaces() == before
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(plain, connect_timeout=2)
