"""Docker for the container and compose tests: the daemon, the local Debian base, the proxy
CA for builds, and HTTP clients that keep sending while a container is stopped.

Used by test_container_image.py (make test-container) and test_compose.py (make
test-compose). Both need root and Debian's docker.io; where the daemon cannot be had their
tests skip on a laptop and fail in CI.
"""

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..support import cannot_run, wait_for

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
class Response:
    status: int
    body: bytes
    headers: http.client.HTTPMessage

    def json(self):
        return json.loads(self.body)


def request(
    port: int, method: str, path: str, body=None, token: str | None = None, timeout: float = 10
) -> Response:
    """One request on its own connection, read to the end (IncompleteRead if it is cut short)."""
    headers = {"Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        return Response(response.status, response.read(), response.headers)
    finally:
        connection.close()


@dataclass
class Attempt:
    method: str
    started: float
    finished: float
    outcome: str  # "ok", or what went wrong
    thought_id: int | None = None


def client_loop(port: int, token: str, client: int, stop: threading.Event, attempts: list):
    """Alternate reads and writes until told to stop; bounded in count and time."""
    deadline = time.monotonic() + 120
    for number in range(2000):
        if stop.is_set() or time.monotonic() > deadline:
            return
        method = "POST" if number % 2 else "GET"
        started = time.monotonic()
        try:
            if method == "POST":
                response = request(
                    port, "POST", "/api/me/thoughts/", {"text": f"client {client} #{number}"}, token
                )
                ok = response.status == 201
                thought_id = response.json()["id"] if ok else None
            else:
                response = request(port, "GET", "/api/thoughts/?limit=5")
                ok = response.status == 200 and isinstance(response.json(), list)
                thought_id = None
            outcome = "ok" if ok else f"HTTP {response.status}: {response.body[:200]!r}"
        except (OSError, http.client.HTTPException, ValueError) as error:
            outcome, thought_id = f"{type(error).__name__}: {error}", None
        attempts.append(Attempt(method, started, time.monotonic(), outcome, thought_id))
        if outcome != "ok":
            time.sleep(0.05)  # the server is going away: don't spin on connection errors


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


def stop_under_load(port: int, token: str, stop_command) -> StopUnderLoad:
    """Four clients on `port`; once 40 requests are answered, `stop_command()` runs."""
    attempts: list[Attempt] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=client_loop, args=(port, token, number, stop, attempts))
        for number in range(4)
    ]
    for client in clients:
        client.start()
    try:
        wait_for(
            lambda: sum(a.outcome == "ok" for a in attempts) >= 40,
            30,
            "40 requests answered before the stop",
            interval=0.2,
            details=lambda: repr(attempts[-5:]),
        )
        stop_requested = time.monotonic()
        stop_command()
        stop_took = time.monotonic() - stop_requested
        time.sleep(0.5)  # let the clients see that the server is gone
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
    return StopUnderLoad(attempts, stop_requested, stop_took)
