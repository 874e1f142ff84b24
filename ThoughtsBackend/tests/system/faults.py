"""Faults under load, the helpers the fault tests share: the service under uWSGI with some
settings, its workers, a bounded load of readers and writers, a database fault under that
load and what every request must have got, a small filesystem that fills up.

Used by test_faults.py, test_durability.py, test_frozen_database.py, test_pgbouncer.py and
test_upload_buffer_full.py.
"""

import contextlib
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests

from ..support import cannot_run, postgresql_required, wait_for
from ..uwsgi_process import ServedApp
from .load import REQUEST_TIMEOUT, Load, Outcome, send

# The bound: while the database is away, an answer (503) within this many seconds.
OUTAGE_ANSWER_SECONDS = 1.0


def served(public_key_file, processes: int = 2, **settings) -> ServedApp:
    """The service under start_server.sh and uwsgi.ini, with these settings (environment)."""
    environment = {"PUBLIC_KEY_FILE": str(public_key_file), **{k: str(v) for k, v in settings.items()}}
    return ServedApp(environment, processes=processes)


def worker_pids(service: ServedApp) -> set[int]:
    return {pid for pid in service.worker_pids().values() if pid}


def busy_worker_pids(service: ServedApp) -> set[int]:
    return {worker["pid"] for worker in service.stats()["workers"] if worker["status"] == "busy"}


def replaced_workers(service: ServedApp, before: set[int]) -> set[int] | None:
    """The worker pids once one of `before` is gone and a new one serves in its place."""
    pids = worker_pids(service)
    return pids if len(pids) == len(before) and pids - before else None


def reader(_n, _previous):
    return "GET", "/api/thoughts/?limit=5", {}


def writer(headers: dict, prefix: str):
    def make(n, _previous):
        return "POST", "/api/me/thoughts/", {"json": {"text": f"{prefix}-{n}"}, "headers": headers}

    return make


def stored_texts(service: ServedApp) -> dict[str, dict]:
    """Every stored thought by text, read through the API page by page."""
    found, offset = {}, 0
    while True:
        page = requests.get(
            f"{service.url}/api/thoughts/", params={"limit": 1000, "offset": offset}, timeout=REQUEST_TIMEOUT
        )
        assert page.status_code == 200, f"{page.text}\n{service.output[-5000:]}"
        thoughts = page.json()
        for thought in thoughts:
            found[thought["text"]] = thought
        if len(thoughts) < 1000:
            return found
        offset += 1000


def errors_logged(output: str) -> str:
    """The service's error records (JSON log lines at level ERROR), for a failure's message."""
    records = [line for line in output.splitlines() if '"level": "ERROR"' in line]
    return "\n".join(record[-2000:] for record in records[-5:])


def summary(outcomes: list[Outcome]) -> Counter:
    return Counter(outcome.status or outcome.error for outcome in outcomes)


@dataclass
class DatabaseFault:
    """What one database fault under load gave: every request, and the times that frame it."""

    outcomes: list
    in_flight_at_fault: int
    made: float  # when the fault was in place
    undone: float  # when it was being undone
    recovered: float  # when writes had succeeded again
    readiness: Outcome  # /readyz during the fault
    stored: dict
    processes_before: set
    processes_after: set
    log: str

    @property
    def inside(self) -> list[Outcome]:
        """The requests made and answered while the fault was in place: each must be a 503."""
        return [o for o in self.outcomes if o.started > self.made and o.finished < self.undone]

    @property
    def during(self) -> list[Outcome]:
        """Every request that overlapped the fault: each must be answered in time. (One
        waiting when the fault was undone may then succeed.)"""
        return [o for o in self.outcomes if o.finished > self.made and o.started < self.undone]


def database_fault_under_load(
    service: ServedApp, user_headers: dict, name: str, make_fault, undo_fault, answers: int = 8
) -> DatabaseFault:
    """Readers and writers on `service`; once writes flow, `make_fault()`, until `answers`
    requests started after it got 503; then `undo_fault()`, until writes succeed again."""
    processes_before = service.uwsgi_pids()
    load = Load(
        service.url, [reader, reader, writer(user_headers, f"{name}-a"), writer(user_headers, f"{name}-b")]
    )
    with load:
        wait_for(lambda: load.count(lambda o: o.status == 201) >= 10, 20, f"writes before the {name}")
        in_flight = load.in_flight
        make_fault()
        made = time.monotonic()
        wait_for(
            lambda: load.count(lambda o: o.started > made and o.status == 503) >= answers,
            30,
            f"503s during the {name}",
        )
        readiness = send(service.url, "GET", "/readyz")
        undone = time.monotonic()
        undo_fault()
        recovered = wait_for(
            lambda: load.count(lambda o: o.started > undone and o.status == 201) >= 10 and time.monotonic(),
            30,
            f"writes succeeding again after the {name}",
        )
    return DatabaseFault(
        load.snapshot(),
        in_flight,
        made,
        undone,
        recovered,
        readiness,
        stored_texts(service),
        processes_before,
        service.uwsgi_pids(),
        service.output,
    )


def describe(fault: DatabaseFault, name: str) -> str:
    during = fault.during
    return (
        f"\n{name} under load: {len(fault.outcomes)} requests, {fault.in_flight_at_fault} in flight at the "
        f"fault; {len(during)} during it ({dict(summary(during))}), answered in "
        f"{min(o.seconds for o in during):.3f}-{max(o.seconds for o in during):.3f}s; /readyz "
        f"{fault.readiness.status} in {fault.readiness.seconds:.2f}s; writes succeeded again "
        f"{fault.recovered - fault.undone:.2f}s after it was undone"
    )


def assert_every_request_answered_and_no_acknowledged_write_lost(fault: DatabaseFault) -> None:
    outcomes = fault.outcomes
    assert not [o.error for o in outcomes if o.status is None], "a request got no HTTP answer"
    assert {o.status for o in outcomes} <= {200, 201, 503}, f"{summary(outcomes)}\n{errors_logged(fault.log)}"
    assert fault.inside and all(o.status == 503 for o in fault.inside), summary(fault.inside)
    for outcome in (o for o in outcomes if o.status == 503):
        assert outcome.retry_after == "1"
        assert "database" in outcome.json_body["message"]
    assert "HARAKIRI" not in fault.log
    assert fault.processes_after == fault.processes_before, "a uWSGI process was killed or restarted"
    acknowledged = [o for o in outcomes if o.status == 201]
    assert all(o.json_body["text"] in fault.stored for o in acknowledged), "an acknowledged write was lost"


def writes_refused_yet_stored(fault: DatabaseFault) -> list[Outcome]:
    refused = [o for o in fault.outcomes if o.method == "POST" and o.status == 503]
    assert refused, "no write was refused: the fault did not reach the writes"
    return [o for o in refused if o.sent_text in fault.stored]


def assert_each_answered_503_within(fault: DatabaseFault, name: str, seconds: float) -> None:
    """What a fault that may leave a refused write stored (its commit sent, its answer lost)
    must give: printed with that count; every request answered, within `seconds`; /readyz 503."""
    print(describe(fault, name))
    print(f"writes answered 503 yet stored: {len(writes_refused_yet_stored(fault))}")
    assert_every_request_answered_and_no_acknowledged_write_lost(fault)
    slow = [o for o in fault.during if o.seconds > seconds]
    assert not slow, [(o.method, o.status, round(o.seconds, 3)) for o in slow]
    assert fault.readiness.status == 503


@contextlib.contextmanager
def tmpfs(directory: Path, size: str, read_only: bool = False):
    """A small filesystem of its own: real ENOSPC when full, real EROFS when read-only."""
    if os.geteuid() != 0:
        cannot_run("mounting a tmpfs needs root", required=postgresql_required())
    directory.mkdir(exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=False)
