"""The benchmark's latency group (benchmarks/latency.py, delay_relay.py): its link is delayed,
passes bytes both ways in order, and is removed at the end, even after a failure."""

import socket
import subprocess
import sys
import threading
import time

import psycopg
import pytest
import sqlalchemy as sa

from ..support import BENCHMARKS, benchmark_module, cannot_run, postgresql_required

# The repository's benchmarks/, which the image does not hold.
pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def latency():
    return benchmark_module("latency")


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
