"""Stopping the service loses no request: start_server.sh and uwsgi.ini, run for real.

16 clients keep asking 2 uWSGI workers for GET /api/thoughts/, so most requests wait in
uWSGI's queue at any moment, then the script gets SIGTERM (docker stop) or SIGINT
(Ctrl+C). Every request on a connection opened before the signal must get its whole
response. A connection opened after it is answered or refused (at connect, or closed
before any byte of an answer), never left hanging or cut off mid-answer. The script exits
0 within Docker's 10 s, after the last uWSGI process, and leaves no FIFO, pidfile or
socket behind. The counts go to stdout (pytest -s) and to test-artifacts/graceful_stop.json.
"""

import http.client
import json
import os
import signal
import time
from pathlib import Path

import pytest

from ..support import wait_for
from ..uwsgi_process import ServedApp, is_alive, parent_of
from .load import Load, Outcome

REPOSITORY = Path(__file__).resolve().parents[3]
ARTIFACT = Path(os.environ.get("TEST_ARTIFACT_DIR", REPOSITORY / "test-artifacts")) / "graceful_stop.json"

WORKERS = 2
CLIENTS = 16
THOUGHTS = 20
PAGE = f"/api/thoughts/?limit={THOUGHTS}"
DOCKER_GRACE_SECONDS = 10
# Longer than any answer takes here, even on a busy machine: past it, a request hangs.
CLIENT_TIMEOUT_SECONDS = 8


def page_reader(_n, _previous):
    return "GET", PAGE, {}


def outcome_of(attempt: Outcome) -> str:
    """answered (the whole page), refused (at connect), closed (without a response),
    incomplete (cut short, or not the page), hung, or error."""
    if attempt.kind == "answered":
        body = attempt.json_body
        if attempt.status != 200 or not isinstance(body, list) or len(body) != THOUGHTS:
            return "incomplete"
    return attempt.kind


def page_readers(app: ServedApp) -> Load:
    """CLIENTS threads, each sending one request after another until told to stop."""
    return Load(
        app.url,
        [page_reader] * CLIENTS,
        cap=None,
        pause_after_no_answer=0.01,  # the server is gone or going: don't spin
        timeout=CLIENT_TIMEOUT_SECONDS,
    )


@pytest.fixture(scope="module")
def report():
    """The counts of every stop in this module, written once at the end."""
    runs: dict[str, dict] = {}
    yield runs
    print("\ngraceful stop:", json.dumps(runs, indent=2))
    try:
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        ARTIFACT.write_text(json.dumps(runs, indent=2) + "\n")
    except OSError as error:  # a read-only checkout: stdout has them anyway
        print(f"could not write {ARTIFACT}: {error}")


@pytest.fixture
def service_env(tmp_path, public_key_file) -> dict:
    return {
        "DATABASE_ENGINE": "SQLITE",
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "PUBLIC_KEY_FILE": str(public_key_file),
    }


@pytest.fixture
def served(service_env, make_token):
    """The service with THOUGHTS thoughts in it, so that each answer has some size."""
    with ServedApp(service_env, processes=WORKERS) as app:
        headers = {"Authorization": f"Bearer {make_token('alice')}", "Content-Type": "application/json"}
        for number in range(THOUGHTS):
            connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
            try:
                connection.request(
                    "POST", "/api/me/thoughts/", json.dumps({"text": f"thought {number}"}), headers
                )
                assert connection.getresponse().status == 201
            finally:
                connection.close()
        yield app


def stop_under_load(app: ServedApp, stop) -> dict:
    """Run the clients; once they have had 5 answers each (on average), stop(app); the counts."""
    uwsgi_pids = app.uwsgi_pids()
    assert len(uwsgi_pids) == WORKERS + 3, f"master, {WORKERS} workers and the two routers: {uwsgi_pids}"
    with page_readers(app) as clients:

        def answered(attempt: Outcome) -> bool:
            return outcome_of(attempt) == "answered"

        def so_far() -> str:
            attempts = clients.snapshot()
            kinds: dict[str, int] = {}
            for attempt in attempts:
                kinds[outcome_of(attempt)] = kinds.get(outcome_of(attempt), 0) + 1
            return f"only {sum(map(answered, attempts))} answers so far, of {len(attempts)} requests: {kinds}"

        wait_for(
            lambda: clients.count(answered) >= 5 * CLIENTS,
            60,
            f"{5 * CLIENTS} answers",
            interval=0.01,
            details=so_far,
        )
        signalled_at = time.monotonic()
        stop(app)
        status = app.wait(timeout=DOCKER_GRACE_SECONDS + 5)
        exited_at = time.monotonic()
        still_running = sorted(pid for pid in uwsgi_pids if is_alive(pid))
    attempts = clients.snapshot()
    # In flight at the signal: connected before it, not finished by then.
    in_flight = [a for a in attempts if a.opened is not None and a.opened < signalled_at < a.finished]
    opened_before = [a for a in attempts if a.opened is not None and a.opened < signalled_at]
    after = [a for a in attempts if a.started >= signalled_at]

    def count(outcomes: list[Outcome]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for attempt in outcomes:
            counts[outcome_of(attempt)] = counts.get(outcome_of(attempt), 0) + 1
        return counts

    return {
        "workers": WORKERS,
        "clients": CLIENTS,
        "in_flight_at_signal": len(in_flight),
        "lost_of_those_in_flight": sum(outcome_of(a) != "answered" for a in in_flight),
        "opened_before_signal": count(opened_before),
        "started_after_signal": count(after),
        "seconds_to_exit": round(exited_at - signalled_at, 2),
        "exit_status": status,
        "uwsgi_processes_alive_at_exit": still_running,
        "failures": [
            {
                "started": a.started,
                "opened": a.opened,
                "ended": a.finished,
                "outcome": outcome_of(a),
                "status": a.status,
                "detail": a.error or a.body[:200].decode(errors="replace"),
            }
            for a in opened_before + after
            if outcome_of(a) in ("incomplete", "hung", "error")
        ],
    }


def docker_stop(app: ServedApp):
    """SIGTERM to the script alone: it is PID 1 of the container."""
    app.stop(signal.SIGTERM)


def ctrl_c(app: ServedApp):
    """SIGINT to the script's whole process group, as a terminal does on Ctrl+C."""
    os.killpg(os.getpgid(app.pid), signal.SIGINT)


@pytest.mark.parametrize(("signum", "send"), [(signal.SIGTERM, docker_stop), (signal.SIGINT, ctrl_c)])
def test_stop_answers_every_request_already_received(served, signum, send, report):
    # uWSGI is the script's child (so the script can wait for it) in a session of its own
    # (so that a signal to the script's process group doesn't reach the master).
    master = served.master_pid
    assert parent_of(master) == served.pid
    assert os.getsid(master) == master != os.getsid(served.pid)

    counts = stop_under_load(served, send)
    report[signum.name] = counts
    print(json.dumps(counts))

    # More requests were in flight than workers: some waited in the queue at the signal.
    assert counts["in_flight_at_signal"] > WORKERS, counts
    # Each one opened before the signal got its whole response.
    assert counts["lost_of_those_in_flight"] == 0, counts
    assert set(counts["opened_before_signal"]) == {"answered"}, counts
    # Opened after it: answered, refused, or closed unanswered; never hanging or cut short.
    assert set(counts["started_after_signal"]) <= {"answered", "refused", "closed"}, counts
    # Docker's grace period, the documented status, and no uWSGI process left behind.
    assert counts["seconds_to_exit"] < DOCKER_GRACE_SECONDS, counts
    assert counts["exit_status"] == 0, served.output
    assert counts["uwsgi_processes_alive_at_exit"] == [], counts

    output = served.output
    assert f"start_server: {signum.name}: answering" in output
    assert output.index("goodbye to uWSGI") < output.index("start_server: uWSGI stopped in")
    left = sorted(path.name for path in served.run_dir.iterdir() if path.name != "metrics")
    assert left == [], f"left in {served.run_dir}: {left}"


def test_uwsgi_q_alone_for_comparison(served, report):
    """What start_server.sh improves on: uWSGI 2.0's own graceful stop, `q` on the FIFO.

    Each worker finishes its current request and the ones queued behind are dropped: the
    report shows how many (14 of 16 in flight, typically). How many depends on how soon
    the master acts on `q`, so the test asserts nothing about it.
    """

    def plain_q(app: ServedApp):
        with app.fifo.open("w") as fifo:
            fifo.write("q")

    counts = stop_under_load(served, plain_q)
    report["q_without_drain"] = counts
    print(json.dumps(counts))
    assert counts["in_flight_at_signal"] > WORKERS, counts
    assert counts["exit_status"] == 0, served.output


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(served):
    workers = served.worker_pids()
    assert len(workers) == WORKERS
    victim_id, victim = min(workers.items())
    os.kill(victim, signal.SIGKILL)

    def respawned() -> bool:
        replacement = served.worker_pids()[victim_id]
        return replacement not in (0, victim) and is_alive(replacement)

    wait_for(respawned, 30, f"worker {victim_id} respawned", details=lambda: served.output)

    assert f"worker {victim_id} (pid: {victim}) died, killed by signal 9" in served.output
    assert served.uwsgi_pids() >= set(served.worker_pids().values())
    for _ in range(4 * WORKERS):
        status, body = served.get(PAGE)
        assert status == 200 and len(json.loads(body)) == THOUGHTS
