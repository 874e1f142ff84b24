"""Docker for the container and compose tests: the daemon, the local Debian base, the proxy
CA for builds, and clients (load.Load) that keep sending while a container is stopped.

Used by test_container_image.py (make test-container) and test_compose.py (make
test-compose). Both need root and Debian's docker.io; where the daemon cannot be had their
tests skip on a laptop and fail in CI.
"""

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..support import cannot_run, wait_for
from .load import Load, Outcome

REPO_ROOT = Path(__file__).resolve().parents[3]
# Made by docker/build_debian_base.sh (debootstrap trixie + docker import): the base of
# Dockerfile.debian and of the PostgreSQL stand-in where no registry can be reached.
LOCAL_BASE_IMAGE = "thoughts-backend/debian-python:trixie"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")

# Bounds, so that a broken build fails in minutes rather than hanging CI.
BUILD_TIMEOUT = 30 * 60


def docker(*arguments: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(arguments)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def daemon_answers() -> bool:
    try:
        return docker("info", timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def running_daemon(log_directory: Path):
    """The Docker daemon: the running one, or one started here and stopped at the end."""
    if shutil.which("docker") is None:
        cannot_run("the docker CLI is not installed (apt-get install docker.io)")
    if daemon_answers():
        yield
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        cannot_run("the Docker daemon is not running, and only root with dockerd installed can start it")
    log_path = log_directory / "dockerd.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(
            lambda: daemon.poll() is not None or daemon_answers(),
            60,
            "dockerd answering",
            interval=0.5,
            details=lambda: log_path.read_text()[-3000:],
        )
        if daemon.poll() is not None:
            pytest.fail(f"dockerd exited with {daemon.returncode}:\n{log_path.read_text()[-3000:]}")
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def debian_base(image: str) -> str:
    """`image` if the daemon has it or can pull it; the local base is built once, here."""
    if docker("image", "inspect", image, check=False).returncode == 0 or image != LOCAL_BASE_IMAGE:
        return image  # a registry image: `docker build` pulls it
    script = REPO_ROOT / "docker" / "build_debian_base.sh"
    result = subprocess.run(
        ["sh", str(script), image], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{script} exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")
    return image


def proxy_ca_certificate() -> str:
    """CA certificates that pip inside the build must trust in addition to its own."""
    if os.environ.get("EXTRA_CA_CERT_FILE"):
        return Path(os.environ["EXTRA_CA_CERT_FILE"]).read_text()
    return "".join(path.read_text() for path in sorted(LOCAL_CA_DIR.glob("*.crt")))


@dataclass
class Attempt:
    method: str
    started: float
    finished: float
    outcome: str  # "ok", or what went wrong
    thought_id: int | None = None


@dataclass
class StopUnderLoad:
    """What the clients saw around a stop."""

    attempts: list[Attempt]
    stop_requested: float
    stop_took: float

    def lost(self) -> list[Attempt]:
        """Requests sent before the stop that did not get their answer."""
        return [a for a in self.attempts if a.started < self.stop_requested and a.outcome != "ok"]

    def sent_before_stop(self) -> int:
        return sum(a.started < self.stop_requested for a in self.attempts)

    def broken(self) -> list[Attempt]:
        """Once the stop began a new request may be refused (through docker-proxy, a connection
        closed without a response), but none may get an error status or a truncated answer."""
        return [a for a in self.attempts if a.outcome.startswith(("HTTP 5", "IncompleteRead"))]

    def acknowledged_writes(self) -> list[int]:
        return [a.thought_id for a in self.attempts if a.method == "POST" and a.outcome == "ok"]


def reads_and_writes(token: str, client: int):
    """Alternate a read and a write (a thought of this client's)."""

    def make(number, _previous):
        if number % 2:
            text = f"client {client} #{number}"
            return (
                "POST",
                "/api/me/thoughts/",
                {"json": {"text": text}, "headers": {"Authorization": f"Bearer {token}"}},
            )
        return "GET", "/api/thoughts/?limit=5", {}

    return make


def attempt_of(outcome: Outcome) -> Attempt:
    """ "ok" for a 201 to a write or a list to a read; else what went wrong."""
    body = outcome.json_body
    if outcome.status is None:
        return Attempt(outcome.method, outcome.started, outcome.finished, outcome.error or outcome.kind)
    ok = (outcome.method == "POST" and outcome.status == 201) or (
        outcome.method == "GET" and outcome.status == 200 and isinstance(body, list)
    )
    thought_id = body["id"] if ok and outcome.method == "POST" else None
    described = "ok" if ok else f"HTTP {outcome.status}: {outcome.body[:200]!r}"
    return Attempt(outcome.method, outcome.started, outcome.finished, described, thought_id)


def stop_under_load(port: int, token: str, stop_command) -> StopUnderLoad:
    """Four clients on `port` (bounded in count and time); once 40 requests are answered,
    `stop_command()` runs; the clients go on until one has seen the server gone."""
    load = Load(
        f"http://127.0.0.1:{port}",
        [reads_and_writes(token, client) for client in range(4)],
        cap=2000,
        seconds=120,
        pause_after_no_answer=0.05,  # the server is going away: don't spin on connection errors
    )
    with load:
        wait_for(
            lambda: load.count(lambda o: attempt_of(o).outcome == "ok") >= 40,
            30,
            "40 requests answered before the stop",
            interval=0.2,
            details=lambda: repr([attempt_of(o) for o in load.snapshot()[-5:]]),
        )
        stop_requested = time.monotonic()
        stop_command()
        stop_took = time.monotonic() - stop_requested
        # Let the clients see that the server is gone: a request sent after the stop has ended.
        wait_for(
            lambda: load.count(lambda o: o.started > stop_requested + stop_took) >= 1,
            30,
            "a request sent after the stop ended",
        )
    return StopUnderLoad([attempt_of(o) for o in load.snapshot()], stop_requested, stop_took)
