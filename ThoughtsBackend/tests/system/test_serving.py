"""The service under real uWSGI (start_server.sh, uwsgi.ini): concurrent writers, HTTP details."""

import http.client
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..support import wait_for
from ..uwsgi_process import ServedApp
from .faults import worker_pids

WRITERS = 16
WRITES_EACH = 20


@pytest.fixture
def served_sqlite(tmp_path, public_key_file, make_token):
    env = {
        "DATABASE_ENGINE": "SQLITE",
        "SQLITE_PATH": str(tmp_path / "served.sqlite3"),
        "PUBLIC_KEY_FILE": str(public_key_file),
    }
    with ServedApp(env, processes=4) as served:
        yield served


def post(port: int, token: str, text: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            "/api/me/thoughts/",
            body=json.dumps({"text": text}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_sqlite_takes_concurrent_writes_from_several_workers(served_sqlite, make_token):
    """16 clients writing at once through 4 worker processes: no 'database is locked'."""
    token = make_token("writer")

    def write_many(writer: int) -> list[tuple[int, dict]]:
        return [post(served_sqlite.port, token, f"writer {writer} note {n}") for n in range(WRITES_EACH)]

    with ThreadPoolExecutor(WRITERS) as pool:
        answers = [answer for batch in pool.map(write_many, range(WRITERS)) for answer in batch]

    statuses = [status for status, _ in answers]
    assert statuses.count(201) == WRITERS * WRITES_EACH, [a for a in answers if a[0] != 201][:3]
    status, body = served_sqlite.get("/api/thoughts/?limit=1000")
    assert status == 200
    stored = {thought["text"] for thought in json.loads(body)}
    assert stored == {body["text"] for _, body in answers}
    assert "database is locked" not in served_sqlite.output


def test_responses_say_the_connection_closes(served_sqlite):
    """uWSGI's router closes after each response: say so, so clients don't reuse the socket."""
    connection = http.client.HTTPConnection("127.0.0.1", served_sqlite.port, timeout=10)
    try:
        connection.request("GET", "/api/thoughts/")
        response = connection.getresponse()
        response.read()
        assert response.getheader("Connection") == "close"
    finally:
        connection.close()


def caught_signals(pid: int) -> set[int]:
    """The signals process `pid` has a handler for (SigCgt in /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return {number for number in range(1, 65) if mask & (1 << (number - 1))}


def test_workers_that_exit_together_are_respawned_at_their_exit(served_app):
    """Workers that recycle in the same second (uwsgi.ini, worker recycling) are replaced at once.

    uWSGI's master looks for dead workers when its event queue wakes it, at the latest once a
    second, and a child's exit alone does not wake it: two workers gone together left no one
    to serve for up to a second. The master catches SIGCHLD, so that their exit wakes it.
    """
    assert signal.SIGCHLD in caught_signals(served_app.master_pid), "the master does not catch SIGCHLD"
    before = worker_pids(served_app)
    for pid in before:
        os.kill(pid, signal.SIGKILL)

    def replaced() -> bool:
        now = worker_pids(served_app)
        return len(now) == len(before) and not now & before

    wait_for(replaced, 30, "both workers respawned", details=lambda: served_app.output)
    assert served_app.get("/api/thoughts/")[0] == 200


def fastrouter_pid(served: ServedApp) -> int:
    """The fastrouter's pid, by the name uWSGI gives it (auto-procname: "uWSGI fastrouter 1")."""
    (pid,) = [
        pid
        for pid in served.uwsgi_pids()
        if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"uWSGI fastrouter")
    ]
    return pid


def test_requests_without_a_body_go_past_the_fastrouter(served_sqlite, make_token):
    """A request without a body goes from the HTTP router straight to a worker
    (http-to-bodyless): served while the fastrouter, which buffers bodies, is stopped."""
    fastrouter = fastrouter_pid(served_sqlite)
    os.kill(fastrouter, signal.SIGSTOP)
    try:
        assert served_sqlite.get("/api/thoughts/", timeout=5)[0] == 200
        connection = http.client.HTTPConnection("127.0.0.1", served_sqlite.port, timeout=5)
        try:
            token = make_token("deleter")
            connection.request("DELETE", "/api/me/thoughts/1/", headers={"Authorization": f"Bearer {token}"})
            assert connection.getresponse().status == 404
        finally:
            connection.close()
    finally:
        os.kill(fastrouter, signal.SIGCONT)
    # And a body still goes through the fastrouter, running again.
    assert post(served_sqlite.port, make_token("writer"), "after")[0] == 201
