"""The glibc image, built and run for real: it serves the API and stops without losing a request.

    make test-container        # or: cd ThoughtsBackend && pytest -m container

Needs root (to start dockerd and run debootstrap) and Debian's docker.io; the first run
builds the local base image with docker/build_debian_base.sh (debootstrap + docker import).
Where the daemon cannot be had the tests skip on a laptop and fail in CI.

Environment:
  THOUGHTS_BASE_IMAGE     base for Dockerfile.debian (default: the local debootstrap image;
                          python:3.11-slim-bookworm where a registry is reachable)
  EXTRA_CA_CERT_FILE      PEM of a TLS-intercepting proxy's CA, for pip inside the build
                          (default: the host's /usr/local/share/ca-certificates/*.crt)
"""

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import cannot_run
from .uwsgi_process import free_port

pytestmark = pytest.mark.container

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_BASE_IMAGE = "thoughts-backend/debian-python:bookworm"
BASE_IMAGE = os.environ.get("THOUGHTS_BASE_IMAGE", LOCAL_BASE_IMAGE)
IMAGE = "thoughts-backend:container-test"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")

# Bounds, so that a broken image fails in minutes rather than hanging CI.
BUILD_TIMEOUT = 30 * 60
START_TIMEOUT = 90
STOP_GRACE = 30


unavailable = cannot_run


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


def wait_for(condition, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


@pytest.fixture(scope="module")
def docker_daemon(tmp_path_factory):
    """The Docker daemon: the running one, or one started here and stopped at the end."""
    if shutil.which("docker") is None:
        unavailable("the docker CLI is not installed (apt-get install docker.io)")
    if daemon_answers():
        yield
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        unavailable("the Docker daemon is not running, and only root with dockerd installed can start it")
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_for(lambda: daemon.poll() is not None or daemon_answers(), timeout=60, interval=0.5):
            pytest.fail(f"dockerd did not answer within 60 s:\n{log_path.read_text()[-3000:]}")
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


@pytest.fixture(scope="module")
def base_image(docker_daemon):
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if BASE_IMAGE != LOCAL_BASE_IMAGE:
        return BASE_IMAGE  # a registry image: `docker build` pulls it
    script = REPO_ROOT / "docker" / "build_debian_base.sh"
    result = subprocess.run(
        ["sh", str(script), BASE_IMAGE], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{script} exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")
    return BASE_IMAGE


def proxy_ca_certificate() -> str:
    """CA certificates that pip inside the build must trust in addition to its own."""
    if os.environ.get("EXTRA_CA_CERT_FILE"):
        return Path(os.environ["EXTRA_CA_CERT_FILE"]).read_text()
    return "".join(path.read_text() for path in sorted(LOCAL_CA_DIR.glob("*.crt")))


@pytest.fixture(scope="module")
def image(base_image):
    arguments = ["build", "--file", "docker/app/Dockerfile.debian", "--tag", IMAGE]
    arguments += ["--build-arg", f"BASE_IMAGE={base_image}", "--build-arg", "APP_VERSION=container-test"]
    extra_ca = proxy_ca_certificate()
    if extra_ca:
        arguments += ["--build-arg", f"EXTRA_CA_CERT={extra_ca}"]
    result = subprocess.run(
        ["docker", *arguments, "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"docker build exited {result.returncode}:\n{(result.stdout + result.stderr)[-5000:]}")
    return IMAGE


@dataclass
class Response:
    status: int
    body: bytes

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
        return Response(response.status, response.read())
    finally:
        connection.close()


class Container:
    def __init__(self, image: str):
        self.name = f"thoughts-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        # A short health interval, so the image's own HEALTHCHECK is seen to pass.
        docker(
            "run", "--detach", "--name", self.name, "--publish", f"127.0.0.1:{self.port}:8000",
            "--health-interval", "1s", "--health-start-period", "60s", image,
        )  # fmt: skip

    def state(self) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        result = docker("logs", "--tail", "60", self.name, check=False)
        return result.stdout + result.stderr

    def answers(self) -> bool:
        try:
            return request(self.port, "GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    def wait_until_serving(self):
        def serving_or_exited():
            return self.answers() or not self.state()["Running"]

        if not wait_for(serving_or_exited, START_TIMEOUT) or not self.state()["Running"]:
            pytest.fail(f"the container did not start serving within {START_TIMEOUT} s:\n{self.logs()}")

    def token(self, username: str) -> str:
        """A token signed with the key pair start_server.sh made, minted as the README says."""
        result = docker("exec", self.name, "flask", "create-token", username, check=False)
        # `docker exec` sees the image's environment, not the PUBLIC_KEY_FILE that
        # start_server.sh exported to uWSGI: the app must find the generated key by itself.
        assert result.returncode == 0, (
            f"`flask create-token {username}` in the container failed:\n{result.stderr}"
        )
        return result.stdout.strip()

    def token_without_the_app(self, username: str) -> str:
        """The same through the package's own CLI, which needs no app (so no PUBLIC_KEY_FILE)."""
        command = ["python", "-m", "thoughts_backend", "create-token", username]
        result = docker("exec", self.name, *command, check=False)
        assert result.returncode == 0, f"{' '.join(command)} in the container failed:\n{result.stderr}"
        return result.stdout.strip()

    def remove(self):
        docker("rm", "--force", "--volumes", self.name, check=False)


@pytest.fixture
def container(image):
    started = Container(image)
    try:
        started.wait_until_serving()
        yield started
    finally:
        started.remove()


def test_image_runs_as_uwsgi_and_holds_no_key(image):
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == "uwsgi"
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["Cmd"] == ["/bin/sh", "/opt/uwsgi/start_server.sh"]
    assert not any(name.split("=")[0] in ("PUBLIC_KEY", "PUBLIC_KEY_FILE") for name in config["Env"])

    look = docker(
        "run", "--rm", "--entrypoint", "sh", image, "-c",
        "id -u; id -g; ls -A /opt/code/keys; find / -xdev -name '*.pem' -path '*key*' 2>/dev/null; "
        "touch /opt/data/probe && echo data-writable; touch /opt/code/probe 2>/dev/null || echo code-read-only",
    )  # fmt: skip
    assert look.stdout.split() == ["10001", "10001", "data-writable", "code-read-only"], look.stdout


def test_served_api_with_a_token_from_the_cli(container):
    assert container.state()["Health"]["Status"] in ("starting", "healthy")
    assert wait_for(lambda: container.state()["Health"]["Status"] == "healthy", timeout=30), container.logs()

    listing = request(container.port, "GET", "/api/thoughts/")
    assert listing.status == 200 and listing.json() == []
    version = request(container.port, "GET", "/version")
    assert version.json()["version"] == "container-test"

    token = container.token("alice")
    created = request(container.port, "POST", "/api/me/thoughts/", {"text": "Hello from a container"}, token)
    assert created.status == 201, created.body
    assert created.json()["username"] == "alice"

    listing = request(container.port, "GET", "/api/thoughts/")
    assert [thought["text"] for thought in listing.json()] == ["Hello from a container"]
    assert request(container.port, "POST", "/api/me/thoughts/", {"text": "no token"}).status == 401


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


def test_docker_stop_under_load_loses_no_request(container):
    token = container.token_without_the_app("alice")
    attempts: list[Attempt] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=client_loop, args=(container.port, token, number, stop, attempts))
        for number in range(4)
    ]
    for client in clients:
        client.start()
    try:
        assert wait_for(lambda: sum(a.outcome == "ok" for a in attempts) >= 40, timeout=30), attempts[-5:]
        stop_requested = time.monotonic()
        docker("stop", "--time", str(STOP_GRACE), container.name, timeout=STOP_GRACE + 30)
        stop_took = time.monotonic() - stop_requested
        time.sleep(0.5)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)

    state = container.state()
    # start_server.sh stops uWSGI gracefully and exits 0; 137 would mean docker had to kill it.
    assert state["ExitCode"] == 0, f"exit status {state['ExitCode']}:\n{container.logs()}"
    assert stop_took < STOP_GRACE - 5, f"docker stop took {stop_took:.1f} s:\n{container.logs()}"

    before_stop = [a for a in attempts if a.started < stop_requested]
    lost = [a for a in before_stop if a.outcome != "ok"]
    assert before_stop and not lost, f"{len(lost)} of {len(before_stop)} requests lost: {lost[:5]}"
    # Once the stop began a new request may be refused (through docker-proxy, a connection
    # closed without a response), but none may get an error status or a truncated answer.
    broken = [a for a in attempts if a.outcome.startswith(("HTTP 5", "IncompleteRead"))]
    assert not broken, broken[:5]

    # Every acknowledged write is still there after a restart of the same container.
    acknowledged = [a.thought_id for a in attempts if a.method == "POST" and a.outcome == "ok"]
    docker("start", container.name)
    container.wait_until_serving()
    missing = [
        thought_id
        for thought_id in acknowledged
        if request(container.port, "GET", f"/api/thoughts/{thought_id}/").status != 200
    ]
    assert not missing, (
        f"{len(missing)} of {len(acknowledged)} acknowledged thoughts are gone: {missing[:10]}"
    )
