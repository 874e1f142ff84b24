"""The glibc image, built and run for real: it serves the API and stops without losing a request.

    make test-container        # or: cd ThoughtsBackend && pytest -m container

Needs root (to start dockerd and run debootstrap) and Debian's docker.io; the first run
builds the local base image with docker/build_debian_base.sh (debootstrap + docker import).
Where the daemon cannot be had the tests skip on a laptop and fail in CI (tests/system/docker_support.py).

Environment:
  THOUGHTS_BASE_IMAGE     base for Dockerfile.debian (default: the local debootstrap image;
                          python:3.13-slim-trixie where a registry is reachable)
  EXTRA_CA_CERT_FILE      PEM of a TLS-intercepting proxy's CA, for pip inside the build
                          (default: the host's /usr/local/share/ca-certificates/*.crt)
"""

import json
import os
import subprocess
import uuid

import pytest

from ..support import wait_for
from ..uwsgi_process import free_port
from .docker_support import (
    BUILD_TIMEOUT,
    LOCAL_BASE_IMAGE,
    REPO_ROOT,
    debian_base,
    docker,
    proxy_ca_certificate,
    stop_under_load,
)
from .load import send

pytestmark = pytest.mark.container

BASE_IMAGE = os.environ.get("THOUGHTS_BASE_IMAGE", LOCAL_BASE_IMAGE)
IMAGE = "thoughts-backend:container-test"

# Bounds, so that a broken image fails in minutes rather than hanging CI.
START_TIMEOUT = 90
STOP_GRACE = 30


@pytest.fixture(scope="module")
def base_image(docker_daemon):
    return debian_base(BASE_IMAGE)


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


class Container:
    def __init__(self, image: str):
        self.name = f"thoughts-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
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
        return send(self.url, "GET", "/healthz", timeout=2).status == 200

    def wait_until_serving(self):
        def serving_or_exited():
            return self.answers() or not self.state()["Running"]

        wait_for(serving_or_exited, START_TIMEOUT, "the container serving", interval=0.2, details=self.logs)
        if not self.state()["Running"]:
            pytest.fail(f"the container exited before it served:\n{self.logs()}")

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

    # Every module of the code has its bytecode, made at build: a start compiles nothing.
    uncompiled = docker(
        "run", "--rm", "--entrypoint", "python", image, "-c",
        "import importlib.util, pathlib; print([str(p) for p in pathlib.Path('/opt/code').rglob('*.py')"
        " if not pathlib.Path(importlib.util.cache_from_source(p)).is_file()])",
    )  # fmt: skip
    assert uncompiled.stdout.strip() == "[]", uncompiled.stdout


def test_served_api_with_a_token_from_the_cli(container):
    assert container.state()["Health"]["Status"] in ("starting", "healthy")
    wait_for(
        lambda: container.state()["Health"]["Status"] == "healthy",
        30,
        "the container's HEALTHCHECK healthy",
        interval=0.2,
        details=container.logs,
    )

    listing = send(container.url, "GET", "/api/thoughts/")
    assert listing.status == 200 and listing.json_body == [], listing
    version = send(container.url, "GET", "/version")
    assert version.json_body["version"] == "container-test", version

    token = container.token("alice")
    created = send(
        container.url,
        "POST",
        "/api/me/thoughts/",
        json={"text": "Hello from a container"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status == 201, created
    assert created.json_body["username"] == "alice"

    listing = send(container.url, "GET", "/api/thoughts/")
    assert [thought["text"] for thought in listing.json_body] == ["Hello from a container"], listing
    assert send(container.url, "POST", "/api/me/thoughts/", json={"text": "no token"}).status == 401


def test_docker_stop_under_load_loses_no_request(container):
    token = container.token_without_the_app("alice")
    stopped = stop_under_load(
        container.port,
        token,
        lambda: docker("stop", "--time", str(STOP_GRACE), container.name, timeout=STOP_GRACE + 30),
    )

    state = container.state()
    # start_server.sh stops uWSGI gracefully and exits 0; 137 would mean docker had to kill it.
    assert state["ExitCode"] == 0, f"exit status {state['ExitCode']}:\n{container.logs()}"
    assert stopped.stop_took < STOP_GRACE - 5, (
        f"docker stop took {stopped.stop_took:.1f} s:\n{container.logs()}"
    )
    lost = stopped.lost()
    assert stopped.sent_before_stop() and not lost, (
        f"{len(lost)} of {stopped.sent_before_stop()} requests lost: {lost[:5]}"
    )
    assert not stopped.broken(), stopped.broken()[:5]

    # Every acknowledged write is still there after a restart of the same container.
    acknowledged = stopped.acknowledged_writes()
    docker("start", container.name)
    container.wait_until_serving()
    missing = [
        thought_id
        for thought_id in acknowledged
        if send(container.url, "GET", f"/api/thoughts/{thought_id}/").status != 200
    ]
    assert not missing, (
        f"{len(missing)} of {len(acknowledged)} acknowledged thoughts are gone: {missing[:10]}"
    )
