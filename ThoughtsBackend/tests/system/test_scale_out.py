"""Several uWSGI instances behind a load balancer survive a rolling restart under load and lose nothing.

The shape of every scaled-out deployment of this service: stateless instances, one shared
PostgreSQL, a load balancer in front. Here it is built on loopback from real parts: three
`start_server.sh` instances (real uWSGI) on their own ports, one database made for this
run, and Debian's HAProxy as the load balancer. While eight client threads read and write
through it, each instance in turn goes through the steps a Kubernetes rolling update
takes a pod through:

1. out of rotation: HAProxy stops sending it requests (Kubernetes removes the pod from
   the Service's endpoints; the Deployment's preStop sleep covers the time that takes).
   Requests already on their way to the instance carry on.
2. SIGTERM to start_server.sh, and wait for it to exit: it answers what is in flight.
3. start it again, on a new port (a new pod has a new address), with the next release's
   code, and wait until /readyz answers 200. That release adds a migration (a column and
   an index, the expand half of expand-then-contract): the first instance restarted runs
   it in its master, under the advisory lock, while the old instances serve; the next
   find the database at head. Old and new code serve the one database side by side.
4. into rotation at its new address (a Ready pod joins the endpoints); then the next.

It asserts that no client request failed, that every acknowledged write (201) is
readable, exactly once, from every instance directly, and that the database ends at the
new release's revision, with what it added. The figures (requests served, each
instance's share, latency percentiles before and during the roll, restart timings, how
many requests HAProxy passed to another instance) go to test-artifacts/scale_out.json and
to stdout.

It runs twice: with the instances connected to PostgreSQL directly, and through one
PgBouncer in transaction mode (tests/pgbouncer.py) with 3 server connections for the 6
workers (POSTGRES_TRANSACTION_POOLER=true; figures in test-artifacts/scale_out_pgbouncer.json).

Step 1 is not optional. start_server.sh answers every request it has received when the
SIGTERM comes, but it closes unanswered the connections that arrive after it, and a load
balancer may not resend a POST that reached an instance (it cannot know whether the write
happened): with the instance left in rotation until it exited, 3 to 10 POSTs per roll came
back 502 (measured behind nginx, this test's load balancer before HAProxy).

Run it with `python -m pytest -m scaleout -s`; it needs HAProxy (`apt-get install haproxy`).
"""

import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import requests
import sqlalchemy as sa

from ..pgbouncer import PgBouncer
from ..support import POSTGRES_TEST_URL, cannot_run, postgresql_required, wait_for
from ..uwsgi_process import CODE_DIR, ServedApp, free_port
from .load import Load, Outcome

pytestmark = [pytest.mark.scaleout, pytest.mark.postgresql]

REPOSITORY = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACT_DIR", REPOSITORY / "test-artifacts"))

INSTANCES = 3
# Through PgBouncer: server connections for the 3 instances' 6 workers.
PGBOUNCER_POOL_SIZE = 3
CLIENT_THREADS = 8
# Load runs until each instance has served this many requests through HAProxy, first before
# the roll (all are in rotation) and again after its restart (at its new address).
REQUESTS_PER_INSTANCE_BEFORE_AND_AFTER = 100
# Bounds: the whole test stops by itself, whatever happens.
TEST_DEADLINE_SECONDS = 300
CLIENT_TIMEOUT_SECONDS = 15
READY_TIMEOUT_SECONDS = 60
EXIT_TIMEOUT_SECONDS = 60
# The API's largest page (thoughts.MAX_PAGE_SIZE).
PAGE_SIZE = 1000


def unavailable(reason: str):
    cannot_run(reason, required=postgresql_required())


# --- the load balancer ---------------------------------------------------------------------

# HAProxy in front of the instances, changed at run time through its admin socket, never
# reloaded: as Kubernetes changes a Service's endpoints (kube-proxy rewrites rules that only
# new connections follow), a change of rotation never touches a request under way.
# (nginx, this test's load balancer before, changes its upstreams only by a reload, and
# Debian's nginx 1.22 now and then closed a request in flight when a worker retired at a
# reload: "open socket left in connection" in its log, and a response cut after its first
# 4 KiB at the client, which nginx never logged. That is the load balancer's failure, not
# the service's; the test measured it instead of the service.)
HAPROXY_CONFIG = """\
global
    # The admin socket: rotation changes (server state, address) and the servers' counters.
    stats socket {directory}/admin.sock mode 600 level admin
    # One JSON line per request on stdout, which goes to haproxy.log.
    log stdout format raw local0

defaults
    mode http
    log global
    # When the request was accepted (epoch seconds and milliseconds), how long it took (ms),
    # the instance that answered, and how many times the request was sent elsewhere first.
    log-format '{{"accepted": %Ts, "accepted_ms": "%ms", "total_ms": %Ta, "status": %ST, "method": "%HM", "uri": "%HP", "upstream": "%si:%sp", "retries": "%rc", "termination": "%tsc"}}'
    # No keep-alive to the instances (they close each connection after its response).
    option http-server-close
    timeout connect 1s
    timeout client {timeout}s
    timeout server {timeout}s
    # The safety net for an instance that fails without being taken out first (a crash, a
    # kill): a connection that cannot be made is tried again on another instance, up to
    # `retries` times. A request that reached an instance is never sent again: a write is
    # never done twice; the client gets the 50x and this test fails.
    retries {retries}
    option redispatch 1

frontend clients
    bind 127.0.0.1:{port}
    default_backend thoughts

backend thoughts
    balance roundrobin
{servers}
"""


class LoadBalancer:
    """HAProxy as a foreground child with its config, admin socket and log in `directory`.

    One server slot per instance; `rotate` takes a slot out (state maint: no new request,
    those under way carry on) or puts it back at an instance's new address.
    """

    def __init__(self, binary: str, directory: Path, upstream_ports: list[int]):
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.log = directory / "haproxy.log"
        self.slots = {f"instance{number}": port for number, port in enumerate(upstream_ports)}
        self.in_rotation = set(self.slots)
        self.process: subprocess.Popen | None = None
        servers = "\n".join(f"    server {slot} 127.0.0.1:{port}" for slot, port in self.slots.items())
        self.config = directory / "haproxy.cfg"
        self.config.write_text(
            HAPROXY_CONFIG.format(
                directory=directory,
                port=self.port,
                servers=servers,
                retries=len(upstream_ports),
                timeout=CLIENT_TIMEOUT_SECONDS,
            )
        )
        check = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, f"HAProxy rejects its config:\n{check.stdout}{check.stderr}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.output = self.log.open("w")
        # -db: in the foreground, no daemon.
        self.process = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.config)], stdout=self.output, stderr=subprocess.STDOUT
        )
        wait_for(self._answers, READY_TIMEOUT_SECONDS, "HAProxy did not answer /healthz")

    def _answers(self) -> bool:
        assert self.process.poll() is None, f"HAProxy exited: {self.log.read_text()}"
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def command(self, line: str) -> str:
        """One command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.settimeout(5)
            admin.connect(str(self.directory / "admin.sock"))
            admin.sendall(line.encode() + b"\n")
            answer = b"".join(iter(lambda: admin.recv(65536), b"")).decode()
        assert "Unknown command" not in answer and "No such" not in answer, f"{line!r}: {answer}"
        return answer

    def sessions(self, slot: str) -> int:
        """Requests under way on `slot` now (connected or queued), from HAProxy's counters."""
        rows = csv.DictReader(self.command("show stat").lstrip("# ").splitlines())
        (row,) = [row for row in rows if row["pxname"] == "thoughts" and row["svname"] == slot]
        return int(row["scur"]) + int(row["qcur"])

    def rotate(self, upstream_ports: list[int]) -> None:
        """Serve these instances only; return once a slot taken out has no request left."""
        wanted = set(upstream_ports)
        leaving = [slot for slot in self.in_rotation if self.slots[slot] not in wanted]
        for slot in leaving:
            self.command(f"set server thoughts/{slot} state maint")
            self.in_rotation.discard(slot)
        for port in sorted(wanted - {self.slots[slot] for slot in self.in_rotation}):
            slot = next(slot for slot in self.slots if slot not in self.in_rotation and slot not in leaving)
            self.command(f"set server thoughts/{slot} addr 127.0.0.1 port {port}")
            self.command(f"set server thoughts/{slot} state ready")
            self.slots[slot] = port
            self.in_rotation.add(slot)
        # What a Kubernetes preStop sleep stands for: the instance is out of every path.
        for slot in leaving:
            wait_for(
                lambda slot=slot: self.sessions(slot) == 0,
                READY_TIMEOUT_SECONDS,
                f"the requests under way on {slot} did not end",
            )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)  # soft stop: finish open requests, then exit
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()

    def log_entries(self) -> list[dict]:
        """One dict per request answered: msec (epoch seconds at the end), status, method,
        uri, upstream (host:port that answered), retries."""
        entries = []
        for line in self.log.read_text().splitlines():
            if not (line.startswith("{") and line.endswith("}")):  # HAProxy's own messages
                continue
            entry = json.loads(line)
            entry["msec"] = entry["accepted"] + (int(entry["accepted_ms"]) + max(entry["total_ms"], 0)) / 1000
            # "+N": sent to another instance (redispatched) after N failed connections.
            entry["retries"] = int(entry["retries"].lstrip("+")) + entry["retries"].startswith("+")
            entries.append(entry)
        return entries


def served_by(entry: dict) -> str:
    """The instance that answered."""
    return entry["upstream"]


# --- the load ------------------------------------------------------------------------------


# What each operation must be answered.
EXPECTED_STATUS = {"write": 201, "read own": 200, "list": 200, "list mine": 200}


class ScaleOutClient:
    """One client thread's requests (load.Load): writes, reads its own last write back, lists,
    pages its own. What it saw is read from its outcomes afterwards (acknowledged, failures)."""

    def __init__(self, number: int, token: str):
        self.number = number
        self.token = token
        self.last_id: int | None = None
        self.outcomes: list[Outcome] = []  # filled in once the load has stopped

    @property
    def username(self) -> str:
        return f"scale-out-{self.number}"

    def __call__(self, iteration: int, previous: Outcome | None):
        if previous is not None and previous.label == "write" and previous.status == 201:
            self.last_id = previous.json_body["id"]
        headers = {"Authorization": f"Bearer {self.token}"}
        step = iteration % 4
        if step == 0 or self.last_id is None:
            text = f"thought {iteration} of {self.username}"
            return "POST", "/api/me/thoughts/", {"json": {"text": text}, "headers": headers, "label": "write"}
        if step == 1:
            # Read your own write back, through whichever instance HAProxy picks.
            return "GET", f"/api/thoughts/{self.last_id}/", {"label": "read own"}
        if step == 2:
            return "GET", "/api/thoughts/", {"params": {"limit": 20}, "label": "list"}
        return "GET", "/api/me/thoughts/", {"headers": headers, "label": "list mine"}

    @property
    def acknowledged(self) -> dict[int, str]:
        """id -> text, from the 201 answers."""
        return {
            o.json_body["id"]: o.sent_text for o in self.outcomes if o.label == "write" and o.status == 201
        }

    @property
    def failures(self) -> list[str]:
        failures = []
        for o in self.outcomes:
            if o.status is None:
                failures.append(f"{o.method} {o.path}: {o.error or o.kind}")
            elif o.status != EXPECTED_STATUS[o.label]:
                failures.append(f"{o.method} {o.path}: {o.status} {o.body[:200].decode(errors='replace')}")
            elif o.label == "write" and o.json_body["text"] != o.sent_text:
                failures.append(f"POST answered {o.json_body!r} for the text {o.sent_text!r}")
        return failures


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with `fraction` of all at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


def latency_summary(samples: list[Outcome]) -> dict:
    seconds = [sample.seconds for sample in samples]
    if not seconds:
        return {"requests": 0}
    return {
        "requests": len(seconds),
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 1),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def haproxy_binary() -> str:
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if binary is None:
        unavailable("HAProxy is not installed (Debian: apt-get install haproxy); the scale-out test needs it")
    return binary


@pytest.fixture
def shared_database_url():
    """A database made for this test alone, dropped afterwards: the instances' shared state."""
    name = f"thoughts_scale_out_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_TEST_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_TEST_URL} ({error})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = sa.make_url(POSTGRES_TEST_URL).set(drivername="postgresql+psycopg", database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
def database_route(request) -> str:
    """How the instances reach PostgreSQL: directly, or through one PgBouncer in transaction
    mode with fewer server connections than the instances have workers, as many pods share one."""
    return request.param


@pytest.fixture
def instance_environment(database_route, shared_database_url, public_key_file):
    environment = {"DATABASE_URL": shared_database_url, "PUBLIC_KEY_FILE": str(public_key_file)}
    if database_route == "direct":
        yield environment
        return
    server = sa.make_url(shared_database_url)
    with PgBouncer.create(server.host, server.port, pool_size=PGBOUNCER_POOL_SIZE) as bouncer:
        yield {
            **environment,
            "DATABASE_URL": bouncer.url_for(shared_database_url),
            "POSTGRES_TRANSACTION_POOLER": "true",
        }


@pytest.fixture
def instances(tmp_path, instance_environment):
    """Three service instances on their own loopback ports, one database; stopped after."""
    environment = instance_environment
    servers = [
        ServedApp(environment, processes=2, ready_path="/readyz", start_timeout=READY_TIMEOUT_SECONDS)
        for _ in range(INSTANCES)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for number, server in enumerate(servers):
            # Kept for a look after a failure: the helper removes its own copy.
            (tmp_path / f"instance-{number}.log").write_text(server.output)
            server.close()


@pytest.fixture
def load_balancer(tmp_path, haproxy_binary, instances):
    directory = tmp_path / "haproxy"
    directory.mkdir()
    balancer = LoadBalancer(haproxy_binary, directory, [server.port for server in instances])
    balancer.start()
    yield balancer
    balancer.stop()


# --- the next release ----------------------------------------------------------------------

# The revision the next release adds: a nullable column and an index, which the running
# release's statements (explicit columns, ORM inserts naming theirs) never notice.
NEXT_REVISION = "9001"
NEXT_MIGRATION = f"""\"\"\"The scale-out test's next release: expand (a column, an index).\"\"\"

import sqlalchemy as sa
from alembic import op

revision = "{NEXT_REVISION}"
down_revision = "{{head}}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("thought", sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_thought_edited_at", "thought", ["edited_at"])


def downgrade():
    op.drop_index("ix_thought_edited_at", table_name="thought")
    op.drop_column("thought", "edited_at")
"""


@pytest.fixture
def next_release(tmp_path) -> Path:
    """This code, plus one migration: what a rolling update brings in."""
    from thoughts_backend.schema import head_revision

    code = tmp_path / "next-release"
    shutil.copytree(
        CODE_DIR,
        code,
        ignore=shutil.ignore_patterns("__pycache__", "tests", "keys", "*.sqlite3*", "test-artifacts"),
    )
    migration = NEXT_MIGRATION.replace("{head}", head_revision())
    (code / "migrations" / "versions" / f"{NEXT_REVISION}_expand.py").write_text(migration)
    return code


# --- the test ------------------------------------------------------------------------------


def test_rolling_restart_under_load_fails_no_request_and_loses_no_write(
    instances, load_balancer, make_token, next_release, shared_database_url, database_route
):
    test_deadline = time.monotonic() + TEST_DEADLINE_SECONDS
    first_addresses = [address_of(server) for server in instances]

    def served_since(since_epoch: float) -> Counter:
        return Counter(served_by(e) for e in load_balancer.log_entries() if e["msec"] >= since_epoch)

    clients = [ScaleOutClient(number, make_token(f"scale-out-{number}")) for number in range(CLIENT_THREADS)]
    load = Load(load_balancer.url, clients, cap=None, timeout=CLIENT_TIMEOUT_SECONDS)
    restarts = []
    load_started_epoch = time.time()
    load.start()
    try:
        wait_for(
            lambda: all(
                served_since(load_started_epoch)[address] >= REQUESTS_PER_INSTANCE_BEFORE_AND_AFTER
                for address in first_addresses
            ),
            test_deadline - time.monotonic(),
            "the load did not reach every instance before the roll",
        )
        roll_started, roll_started_epoch = time.monotonic(), time.time()
        in_rotation = [server.port for server in instances]
        for server in instances:
            server.code_dir = next_release
            restarts.append(roll_one(server, load_balancer, in_rotation, test_deadline))
        roll_ended, roll_ended_epoch = time.monotonic(), time.time()
        # Each restarted instance is serving again: HAProxy sends it its share of requests.
        wait_for(
            lambda: all(
                served_since(step["in_rotation_epoch"])[step["new_address"]]
                >= REQUESTS_PER_INSTANCE_BEFORE_AND_AFTER
                for step in restarts
            ),
            test_deadline - time.monotonic(),
            "a restarted instance got no traffic",
        )
    finally:
        load.stop()
    assert load.all_stopped, "a client thread did not stop"

    samples = load.snapshot()
    for client in clients:
        client.outcomes = [o for o in samples if o.client == client.number]
    failures = [failure for client in clients for failure in client.failures]
    entries = load_balancer.log_entries()
    figures = {
        "database_route": database_route
        if database_route == "direct"
        else f"PgBouncer, pool of {PGBOUNCER_POOL_SIZE}",
        "instances": INSTANCES,
        "client_threads": CLIENT_THREADS,
        "client_requests": len(samples),
        "failed_client_requests": len(failures),
        "writes_acknowledged": sum(len(client.acknowledged) for client in clients),
        "requests_by_operation": dict(Counter(sample.label for sample in samples)),
        "roll_seconds": round(roll_ended - roll_started, 2),
        "latency_before_roll": latency_summary([s for s in samples if s.started < roll_started]),
        "latency_during_roll": latency_summary(
            [s for s in samples if roll_started <= s.started <= roll_ended]
        ),
        "latency_after_roll": latency_summary([s for s in samples if s.started > roll_ended]),
        "served_by_instance": share(entries, restarts),
        "served_by_instance_during_roll": share(
            [e for e in entries if roll_started_epoch <= e["msec"] <= roll_ended_epoch], restarts
        ),
        # Requests HAProxy sent to another instance because it could not connect to the first.
        "passed_to_another_instance": sum(e["retries"] > 0 for e in entries),
        "restarts": [
            {
                **{key: value for key, value in step.items() if not key.endswith("_epoch")},
                # Requests that were on their way when HAProxy took the instance out, and
                # that it answered after its SIGTERM: start_server.sh's drain at work.
                "answered_after_sigterm": sum(
                    served_by(e) == step["old_address"] and e["msec"] >= step["sigterm_epoch"]
                    for e in entries
                ),
            }
            for step in restarts
        ],
    }
    artifact = ARTIFACTS / (
        "scale_out.json" if database_route == "direct" else f"scale_out_{database_route}.json"
    )
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nscale-out figures ({artifact}):\n{json.dumps(figures, indent=2)}")

    assert failures == [], f"{len(failures)} client requests failed, first ones: {failures[:10]}"
    engine = sa.create_engine(shared_database_url)
    try:
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == NEXT_REVISION
            columns = {column["name"] for column in sa.inspect(connection).get_columns("thought")}
            assert "edited_at" in columns
    finally:
        engine.dispose()
    assert all(step["exit_code"] == 0 for step in restarts), restarts
    # Every acknowledged write is there, exactly once, on every instance: none lost, none
    # written twice by a resent request.
    for server in instances:
        for client in clients:
            stored = thoughts_of(server.url, client.username, client.token)
            assert stored == client.acknowledged, (
                f"instance {server.port} holds {len(stored)} thoughts of {client.username}, "
                f"{len(client.acknowledged)} were acknowledged"
            )


def address_of(server: ServedApp) -> str:
    return f"127.0.0.1:{server.port}"


def roll_one(
    server: ServedApp, load_balancer: LoadBalancer, in_rotation: list[int], test_deadline: float
) -> dict:
    """One pod's turn in a rolling update: out of rotation, SIGTERM, exit, start, ready, in."""
    old_pid, old_address = server.pid, address_of(server)
    began = time.monotonic()
    in_rotation.remove(server.port)
    load_balancer.rotate(in_rotation)
    signalled, signalled_epoch = time.monotonic(), time.time()
    server.stop(signal.SIGTERM)
    exit_code = server.wait(timeout=min(EXIT_TIMEOUT_SECONDS, test_deadline - signalled))
    exited = time.monotonic()
    server.start()  # on a free port, until /readyz answers 200
    ready = time.monotonic()
    assert server.pid != old_pid
    in_rotation.append(server.port)
    load_balancer.rotate(in_rotation)
    return {
        "old_address": old_address,
        "new_address": address_of(server),
        "exit_code": exit_code,
        "out_of_rotation_seconds": round(signalled - began, 3),
        "sigterm_to_exit_seconds": round(exited - signalled, 2),
        "start_to_ready_seconds": round(ready - exited, 2),
        "sigterm_epoch": signalled_epoch,
        "in_rotation_epoch": time.time(),
    }


def share(entries: list[dict], restarts: list[dict]) -> dict:
    """Requests each instance answered, at its address before and after its restart."""
    counts = Counter(served_by(entry) for entry in entries)
    total = sum(counts.values())
    return {
        f"instance {number}": {
            f"{step['old_address']} (before restart)": counts[step["old_address"]],
            f"{step['new_address']} (after restart)": counts[step["new_address"]],
            "percent": round(
                100 * (counts[step["old_address"]] + counts[step["new_address"]]) / max(total, 1), 1
            ),
        }
        for number, step in enumerate(restarts)
    }


def thoughts_of(base_url: str, username: str, token: str) -> dict[int, str]:
    """All of `username`'s thoughts as one instance sees them: id -> text."""
    stored: dict[int, str] = {}
    while True:
        answer = requests.get(
            f"{base_url}/api/me/thoughts/",
            params={"limit": PAGE_SIZE, "offset": len(stored)},
            headers={"Authorization": f"Bearer {token}"},
            timeout=CLIENT_TIMEOUT_SECONDS,
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        for thought in page:
            assert thought["id"] not in stored, f"thought {thought['id']} listed twice"
            stored[thought["id"]] = thought["text"]
        if len(page) < PAGE_SIZE:
            return stored
