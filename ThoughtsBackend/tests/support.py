"""Helpers of the tests (pytest advises conftest.py for fixtures and hooks only): where the
test PostgreSQL is, whether a missing tool fails or skips, waiting for a condition, strace
following a process, a public
key's PEM, the repository's benchmarks/. Light on purpose: uwsgi_process.py imports it, and
benchmarks/servers.py imports that outside pytest, so neither the app nor SQLAlchemy is
loaded here (an app with its schema is in databases.py).

    from .support import cannot_run, wait_for        # in a module of tests/
    from ..support import cannot_run, wait_for       # in a module of tests/system/
"""

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

POSTGRES_TEST_URL = os.environ.get("POSTGRES_TEST_URL", "postgresql://postgres@127.0.0.1:5432/test")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgresql_required() -> bool:
    """In CI a missing PostgreSQL is a failure; on a laptop its tests skip."""
    return os.environ.get("REQUIRE_POSTGRESQL", "") == "1" or in_ci()


def cannot_run(reason: str, required: bool | None = None):
    """A test whose tool or service is missing: a failure where it must run (CI, by
    default), a skip with the reason on a developer's machine."""
    if in_ci() if required is None else required:
        pytest.fail(f"{reason} (required here, so this is a failure, not a skip)")
    pytest.skip(reason)


def wait_for(condition, timeout: float, what: str, interval: float = 0.05, details=None):
    """Poll `condition` until it returns a true value, and return it; fail saying `what` did not
    happen within `timeout`, followed by `details()` (a log, the last answers) if given: it is
    read when the wait fails, not when it starts. The one wait of the tests and their helpers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)  # the polling interval of a condition, not a guess at a duration
    pytest.fail(f"{what} within {timeout} s" + (f":\n{details()}" if details else ""))


@contextlib.contextmanager
def strace_following(pid: int, trace_file: Path, *options: str):
    """strace attached to process `pid` while the block runs, writing its calls (as
    `options` select them) to `trace_file`; detached after, leaving the process running.
    No strace, or no right to trace (root here), is cannot_run."""
    if shutil.which("strace") is None:
        cannot_run("strace is not installed (Debian: apt-get install strace)")
    if os.geteuid() != 0:
        cannot_run("tracing a process with strace needs root (or kernel.yama.ptrace_scope 0)")
    command = ["strace", "-p", str(pid), "-o", str(trace_file), *options]
    strace = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        # strace says so on stderr once it is attached; an error (no permission) comes instead.
        first_line = strace.stderr.readline()
        if "attached" not in first_line:
            cannot_run(f"strace cannot trace process {pid}: {first_line.strip()}")
        yield
    finally:
        strace.send_signal(signal.SIGINT)  # detaches, leaving the process running
        strace.wait(10)
        strace.stderr.close()


def pem_public(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# The repository's benchmarks/ (not in the image: tests that use it are marked host).
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmark_module(name: str):
    """benchmarks/<name>.py, imported from the checkout."""
    assert BENCHMARKS.is_dir(), f"{BENCHMARKS} is not here: these tests need the repository's benchmarks/"
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
