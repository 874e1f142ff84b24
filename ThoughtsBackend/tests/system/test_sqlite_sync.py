"""A 201 from SQLite is on disk: the worker syncs the WAL after a write and before its answer.

synchronous = FULL (the default, SQLITE_SYNCHRONOUS) syncs the WAL at every commit; NORMAL
only at checkpoints, so the last commits before a power loss or a host crash may be lost.
A power cut cannot be made here; what can be seen is the order of a worker's system calls.
strace follows the one worker of the service under uWSGI over a series of creates: each
201 must have been preceded, after the last write to the WAL, by an fdatasync (or fsync)
of the WAL. With NORMAL none is made, which is the trade that setting documents.
Needs strace (Debian: apt-get install strace) and the right to trace (root here).
"""

import re
from dataclasses import dataclass

import pytest
import requests

from thoughts_backend.token_validation import encode_token

from ..support import strace_following
from ..uwsgi_process import ServedApp

CREATES = 20

# One traced call per line, with -y naming each descriptor's file: "fdatasync(11</data/
# db.sqlite3-wal>) = 0", "writev(7<socket:[4567]>, [{iov_base="HTTP/1.1 201 ...
TRACED_CALL = re.compile(r"^(?:\d+\s+)?(?P<call>\w+)\((?P<fd>\d+)<(?P<file>[^>]*)>(?P<rest>.*)$")
SYNCS = {"fsync", "fdatasync"}
WRITES = {"write", "pwrite64", "writev", "pwritev", "pwritev2"}


@dataclass
class Answered:
    """What the worker did to the WAL between the previous answer and this 201."""

    wal_writes: int
    syncs_after_the_last_write: int
    syncs: int


def answers_from_trace(lines: list[str], wal: str) -> list[Answered]:
    answered, wal_writes, syncs, syncs_after_write = [], 0, 0, 0
    for line in lines:
        match = TRACED_CALL.match(line)
        if not match:
            continue
        call, file, rest = match["call"], match["file"], match["rest"]
        if file == wal and call in WRITES:
            wal_writes += 1
            syncs_after_write = 0
        elif file == wal and call in SYNCS:
            syncs += 1
            syncs_after_write += 1
        elif file.startswith("socket:") and call in WRITES and '"HTTP/1.1 201' in rest:
            answered.append(Answered(wal_writes, syncs_after_write, syncs))
            wal_writes, syncs, syncs_after_write = 0, 0, 0
    return answered


def traced_creates(served: ServedApp, headers: dict, trace_file) -> list[requests.Response]:
    """CREATES posts while strace follows the service's only worker; its calls go to trace_file."""
    (worker,) = [pid for pid in served.worker_pids().values() if pid]
    calls = f"trace={','.join(sorted(SYNCS | WRITES))}"
    with strace_following(worker, trace_file, "-y", "-s", "24", "-e", calls):
        return [
            requests.post(
                f"{served.url}/api/me/thoughts/", json={"text": f"kept {n}"}, headers=headers, timeout=10
            )
            for n in range(CREATES)
        ]


@pytest.mark.host  # strace, as root: neither is in the image
@pytest.mark.parametrize(("setting", "syncs_each_commit"), [(None, True), ("FULL", True), ("NORMAL", False)])
def test_each_acknowledged_write_syncs_the_wal_before_its_answer(
    tmp_path, public_key_file, private_key, setting, syncs_each_commit
):
    database = tmp_path / "db.sqlite3"
    environment = {"PUBLIC_KEY_FILE": str(public_key_file), "DATABASE_URL": f"sqlite:///{database}"}
    if setting:
        environment["SQLITE_SYNCHRONOUS"] = setting
    headers = {"Authorization": f"Bearer {encode_token('durable', private_key)}"}
    with ServedApp(environment, processes=1) as served:
        # The first write creates the WAL and opens the connection: not part of the count.
        warm_up = requests.post(
            f"{served.url}/api/me/thoughts/", json={"text": "first"}, headers=headers, timeout=10
        )
        assert warm_up.status_code == 201, warm_up.text
        answers = traced_creates(served, headers, tmp_path / "trace")
    trace = (tmp_path / "trace").read_text(errors="replace").splitlines()
    answered = answers_from_trace(trace, f"{database}-wal")

    syncs = sum(answer.syncs for answer in answered)
    print(
        f"\nSQLite synchronous={setting or 'default'}: {len(answers)} creates, {len(answered)} 201s seen "
        f"leaving the worker, {syncs} fsync/fdatasync of the WAL ({syncs / max(len(answered), 1):.2f} per write)"
    )
    assert [answer.status_code for answer in answers] == [201] * CREATES
    assert len(answered) == CREATES, "\n".join(trace[-20:])
    assert all(answer.wal_writes > 0 for answer in answered), "a create wrote nothing to the WAL"
    if syncs_each_commit:
        assert all(answer.syncs_after_the_last_write >= 1 for answer in answered), answered
    else:
        assert syncs == 0, answered
