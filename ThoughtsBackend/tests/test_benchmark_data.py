"""What the benchmark's figures rely on: its seeded data (benchmarks/seed.py) has the shape its
scenarios and targets expect, its floors (benchmarks/floor/) answer what the ceiling does, and
its latency group (benchmarks/latency.py) counts round trips right. Its delayed link, started
for real, is tested in system/test_benchmark_latency.py."""

import importlib
import importlib.util
import json
import struct

import pytest
import sqlalchemy as sa

from thoughts_backend.app import create_app

from .support import BENCHMARKS, benchmark_module

# The repository's benchmarks/, which the image does not hold.
pytestmark = pytest.mark.host


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


def tcp_frame(source_port: int, destination_port: int, flags: int, payload: bytes = b"") -> bytes:
    """An Ethernet frame holding an IPv4 TCP segment between two loopback ports."""
    tcp = struct.pack(">HHIIBBHHH", source_port, destination_port, 0, 0, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    )
    return bytes(12) + b"\x08\x00" + ip + tcp


def pcap(frames: list[tuple[float, bytes]]) -> bytes:
    """A microsecond pcap file of Ethernet frames, as tcpdump -w writes one."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for seconds, frame in frames:
        whole = int(seconds)
        out += struct.pack("<IIII", whole, round((seconds - whole) * 1e6), len(frame), len(frame)) + frame
    return out


def test_pauses_times_each_connection_from_its_request_to_its_answer(tmp_path):
    """benchmarks/pauses.py: request to answer per connection, a reused client port counted again."""
    pauses = benchmark_module("pauses")
    server, syn, syn_ack, ack, push = 8000, 0x02, 0x12, 0x10, 0x18
    frames = [
        (100.000, tcp_frame(40000, server, syn)),
        (100.0001, tcp_frame(server, 40000, syn_ack)),
        (100.001, tcp_frame(40000, server, push, b"GET / HTTP/1.1\r\n\r\n")),
        (100.0015, tcp_frame(server, 40000, ack)),
        (100.003, tcp_frame(server, 40000, push, b"HTTP/1.1 200 OK\r\n\r\n")),
        (100.500, tcp_frame(40001, server, syn)),
        (100.501, tcp_frame(40001, server, push, b"GET / HTTP/1.1\r\n\r\n")),
        (101.000, tcp_frame(40000, server, syn)),
        (101.0005, tcp_frame(40000, server, push, b"GET / HTTP/1.1\r\n\r\n")),
        (101.0015, tcp_frame(server, 40000, push, b"HTTP/1.1 200 OK\r\n\r\n")),
        (101.256, tcp_frame(server, 40001, push, b"HTTP/1.1 200 OK\r\n\r\n")),
        (101.300, tcp_frame(40002, server, syn)),  # never answered: not counted
        (101.301, tcp_frame(40002, server, push, b"GET / HTTP/1.1\r\n\r\n")),
    ]
    capture = tmp_path / "capture.pcap"
    capture.write_bytes(pcap(frames))

    found = pauses.exchanges(pauses.segments(capture), server)

    assert [(round(e.sent_at, 4), round(e.seconds * 1000, 1)) for e in found] == [
        (100.001, 2.0),
        (100.501, 755.0),
        (101.0005, 1.0),
    ]
    text = pauses.report(found, slower_than=0.1)
    assert "3 requests: p50 2.00 ms, p99 755.00 ms, max 755.00 ms" in text
    assert "1 slower than 100 ms" in text
    assert "sent 0.5 s into the capture: 1" in text


def test_pauses_refuses_a_file_that_is_no_capture(tmp_path):
    pauses = benchmark_module("pauses")
    not_a_capture = tmp_path / "notes.txt"
    not_a_capture.write_bytes(b"this is text, not a packet capture")
    with pytest.raises(ValueError, match="not a little-endian pcap"):
        list(pauses.segments(not_a_capture))
