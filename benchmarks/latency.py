"""The latency group's database: PostgreSQL at the far end of a link with a delay.

Production's PostgreSQL is on another host, where every exchange with it is a network round
trip; on loopback a round trip costs only CPU. This group serves the service on the host and
its database in a network namespace behind a veth pair (tests/postgres_instance.py's
IsolatedLink and PostgresInstance, the partition test's), DELAY_MS later each way: a
same-zone cloud link. The delay is `tc netem` on each end of the pair; on a kernel built
without netem (this project's machines: CONFIG_NET_SCH_NETEM is not set) it is a relay
at the far end (delay_relay.py) that holds what each side sends DELAY_MS before passing it
on, and the results say which. The link's own round trip is measured too (`SELECT 1` from
Python), so that a request's time can be counted in round trips.
"""

import contextlib
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import sqlalchemy as sa
from tests.postgres_instance import IsolatedLink, PostgresInstance, missing_server

HERE = Path(__file__).resolve().parent
DELAY_MS = 1
ROWS = 200
SCENARIOS = ("get", "list", "create")
ROUND_TRIP_SAMPLES = 200
# Reads whose p50 at one connection should approach one round trip plus SQLite's (issue 14).
READS = ("get", "list")


def missing() -> str | None:
    """Why the group cannot run here (it needs root, iproute2 and PostgreSQL's server
    binaries), or None."""
    return IsolatedLink.missing() or missing_server()


@contextlib.contextmanager
def delayed_postgresql(delay_ms: float = DELAY_MS):
    """A private PostgreSQL server across a link delayed `delay_ms` each way; yields
    (its URL, how it is delayed). On leaving, even by an exception, the relay (if any) and
    the server are stopped, the server's files removed and the namespace deleted."""
    with IsolatedLink.create() as link, PostgresInstance.create(link) as server:
        try:
            link.delay(delay_ms)
            refused = None
        except RuntimeError as error:
            refused = error
        if refused is None:
            yield server.url, f"netem delay {delay_ms} ms on each end of the veth pair"
            return
        with relay(link, server, delay_ms) as port:
            url = sa.make_url(server.url).set(port=port).render_as_string(hide_password=False)
            yield url, f"a relay at the far end holding each chunk {delay_ms} ms each way ({refused})"


@contextlib.contextmanager
def relay(link: IsolatedLink, server: PostgresInstance, delay_ms: float):
    """delay_relay.py in the link's namespace, in front of `server`; yields its port."""
    command = [
        *link.command_prefix(),
        sys.executable,
        str(HERE / "delay_relay.py"),
        link.peer_address,
        server.host,
        str(server.port),
        str(delay_ms),
    ]
    # Leaving the Popen block closes its pipes and waits for it: killed by then.
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            # Its first line, once it listens, is its port; nothing (its end) if it failed.
            port = process.stdout.readline().strip()
            if not port.isdigit():
                raise RuntimeError(f"the delay relay did not start: {process.stderr.read().strip()}")
            yield int(port)
        finally:
            process.kill()


def link_round_trip(url: str, samples: int = ROUND_TRIP_SAMPLES) -> dict:
    """`SELECT 1` on one autocommit connection (so one exchange each, no BEGIN), `samples`
    times, after one not counted: what one round trip to the server at `url` costs a client."""
    plain = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True, connect_timeout=5) as connection:
        connection.execute("SELECT 1").fetchone()
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            connection.execute("SELECT 1").fetchone()
            times.append((time.perf_counter() - started) * 1000)
    return summary(times)


def summary(milliseconds: list[float]) -> dict:
    """Median, min and p99 (nearest rank) of some times, in ms."""
    ordered = sorted(milliseconds)
    return {
        "samples": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "min_ms": round(ordered[0], 3),
        "p99_ms": round(ordered[math.ceil(0.99 * len(ordered)) - 1], 3),
    }


def round_trips_beyond(p50_ms: float, reference_p50_ms: float, round_trip_ms: float) -> float:
    """How many of the link's round trips a request's p50 exceeds the reference's (SQLite's,
    the same request with no network) by: about the exchanges the request makes with the
    server, plus PostgreSQL's own extra work, counted in round trips."""
    return round((p50_ms - reference_p50_ms) / round_trip_ms, 2)
