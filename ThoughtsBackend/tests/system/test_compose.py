"""The README's docker-compose section, run line by line as written: build, the suite inside
the image on SQLite and on PostgreSQL, the server with curl, a stop under load, down and up.

    make test-compose        # or: cd ThoughtsBackend && pytest -m compose

Needs root and Debian's docker.io, docker-compose and debootstrap (dockerd is started when
none runs), and port 8000 free on the host: the README's curl calls use it. No image can be
pulled on our CI machines, so the commands run with the variables the README names for
that case: the glibc variant on the debootstrap base, and the PostgreSQL stand-in of
docker/db-standin/ for `db`. Both are built here from Debian's packages when missing.

Environment:
  THOUGHTS_BASE_IMAGE   BASE_IMAGE for the glibc variant (default: the debootstrap base)
  THOUGHTS_DB_IMAGE     DB_IMAGE (default: the stand-in, built on the same base)
  EXTRA_CA_CERT_FILE    PEM of a TLS-intercepting proxy's CA (default: the host's
                        /usr/local/share/ca-certificates/*.crt)
The results (tests passed in the image, requests lost at the stop, rows before and after
down/up) go to test-artifacts/compose.json.
"""

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

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

pytestmark = pytest.mark.compose

README = REPO_ROOT / "README.md"
PROJECT = "thoughts-compose-test"
DB_STANDIN = "thoughts-backend/postgres-standin:17"
APP_DOCKERFILE = "docker/app/Dockerfile.debian"
PORT = 8000  # the README's
URL = f"http://127.0.0.1:{PORT}"
ARTIFACT = Path(os.environ.get("TEST_ARTIFACT_DIR", REPO_ROOT / "test-artifacts")) / "compose.json"

# The suite inside the image takes minutes on 2 shared cores; nothing else should.
SUITE_TIMEOUT = 20 * 60
COMMAND_TIMEOUT = 5 * 60
# The in-image runs must not shrink unnoticed (a marker that leaves too much out).
MINIMUM_TESTS_IN_IMAGE = 200


def readme_commands() -> list[str]:
    """The first ```sh block of the README's docker-compose section, one command per line
    (continued lines joined)."""
    section = README.read_text().split("\n### docker-compose\n", 1)[1].split("\n#", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)[0]
    return [command.strip() for command in block.replace("\\\n", " ").splitlines() if command.strip()]


def pytest_counts(output: str) -> dict[str, int]:
    """The counts of pytest's last summary line: {"passed": 245, "deselected": 12, ...}."""
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    assert summary, f"no pytest summary in the output:\n{output[-3000:]}"
    counts = {word: int(number) for number, word in re.findall(r"(\d+) ([a-z]+)", summary[-1])}
    counts["errors"] = counts.pop("error", 0) + counts.pop("errors", 0)
    return counts


def port_is_free(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


class Compose:
    """Runs the README's commands in its own project, with the variables it names."""

    def __init__(self, base_image: str, db_image: str):
        self.environment = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": PROJECT,
            "APP_DOCKERFILE": APP_DOCKERFILE,
            "BASE_IMAGE": base_image,
            "DB_IMAGE": db_image,
            "EXTRA_CA_CERT": proxy_ca_certificate(),
        }

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT, check: bool = True):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=REPO_ROOT,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, (
                f"`{command}` exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def exit_codes(self) -> dict[str, int]:
        ids = self.run("docker-compose ps -q").stdout.split()  # stopped ones too
        codes = {}
        for container in ids:
            name, code = docker(
                "inspect", "--format", "{{.Name}} {{.State.ExitCode}}", container
            ).stdout.split()
            codes[name.lstrip("/")] = int(code)
        return codes

    def logs(self) -> str:
        result = self.run("docker-compose logs --no-color --tail 40", check=False)
        return result.stdout[-4000:]


@pytest.fixture(scope="module")
def compose(docker_daemon):
    base_image = debian_base(os.environ.get("THOUGHTS_BASE_IMAGE", LOCAL_BASE_IMAGE))
    db_image = os.environ.get("THOUGHTS_DB_IMAGE", DB_STANDIN)
    if db_image == DB_STANDIN:
        docker(
            "build", "--build-arg", f"BASE_IMAGE={base_image}", "--tag", DB_STANDIN,
            str(REPO_ROOT / "docker" / "db-standin"), timeout=BUILD_TIMEOUT,
        )  # fmt: skip
    if not port_is_free(PORT):
        pytest.fail(f"port {PORT} is in use: the README's docker-compose commands need it")
    session = Compose(base_image, db_image)
    session.run("docker-compose down --volumes --remove-orphans")  # a previous run's leftovers
    try:
        yield session
    finally:
        session.run("docker-compose down --volumes --remove-orphans", check=False)


def test_the_readme_names_the_variables_this_test_sets():
    section = README.read_text().split("\n### docker-compose\n", 1)[1]
    for setting in (
        f"APP_DOCKERFILE={APP_DOCKERFILE}",
        f"BASE_IMAGE={LOCAL_BASE_IMAGE}",
        f"DB_IMAGE={DB_STANDIN}",
    ):
        assert setting in section, setting
    assert f"COMPOSE_PROJECT_NAME={PROJECT}" in section


def test_the_readme_docker_compose_section_runs_as_written(compose):
    steps: list[dict] = []  # each command with what it gave, for test-artifacts/compose.json
    variables: dict[str, str] = {}
    ups = 0
    rows_before_down = acknowledged = None
    for command in readme_commands():
        started = time.monotonic()
        assignment = re.fullmatch(r"([A-Z_]+)=\$\((.+)\)", command)
        if assignment:  # NAME=$(...): NAME holds the output for the lines after it
            name, inner = assignment.groups()
            variables[name] = compose.run(inner).stdout.strip()
            compose.environment[name] = variables[name]
            assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", variables[name]), variables[name]
            outcome = "a token"
        elif command.startswith("docker-compose build"):
            compose.run(command, timeout=BUILD_TIMEOUT)
            # The images' interpreter: the suite below runs on it (3.13 on the trixie base).
            version = docker("run", "--rm", "--entrypoint", "python", "thoughts-backend:test", "--version")
            outcome = f"built, {version.stdout.strip()}"
            if compose.environment["BASE_IMAGE"] == LOCAL_BASE_IMAGE:
                assert version.stdout.startswith("Python 3.13."), version.stdout
        elif command.startswith("docker-compose run --rm test-"):
            output = compose.run(command, timeout=SUITE_TIMEOUT, check=False)
            counts = pytest_counts(output.stdout)
            assert output.returncode == 0 and counts.get("failed", 0) == 0 and counts["errors"] == 0, (
                f"`{command}` inside the image: {counts}\n{output.stdout[-6000:]}\n{output.stderr[-2000:]}"
            )
            if " -k " in command:
                # The extra arguments reached pytest: it ran some tests and left the rest out.
                assert counts["passed"] > 0 and counts.get("deselected", 0) > 0, counts
            else:
                assert counts["passed"] >= MINIMUM_TESTS_IN_IMAGE, counts
            if os.environ.get("CI") == "true":
                assert counts.get("skipped", 0) == 0, f"skipped in CI:\n{output.stdout[-4000:]}"
            outcome = counts
        elif command.startswith("docker-compose up -d server"):
            compose.run(command)
            ups += 1
            outcome = "started"
        elif command.startswith("curl -sf --retry"):
            # -f: curl fails unless /readyz answered 200, i.e. the server reaches db.
            assert json.loads(compose.run(command, timeout=90).stdout) == {"status": "ready"}
            outcome = "ready"
        elif command.startswith("curl -s -X POST"):
            created = json.loads(compose.run(command).stdout)
            assert created["username"] == "alice" and created["text"] == "Kept in the db-data volume", created
            outcome = created
        elif command.startswith("curl -s http://localhost:8000/api/thoughts/"):
            listed = json.loads(compose.run(command).stdout)
            texts = [thought["text"] for thought in listed]
            assert "Kept in the db-data volume" in texts, listed
            outcome = f"{len(listed)} thoughts listed (the first page)"
            if ups == 2:
                first_page = send(URL, "GET", "/api/thoughts/?limit=1")
                assert first_page.status == 200, first_page
                rows_after_up = int(first_page.headers["x-total-count"])
                missing = [i for i in acknowledged if send(URL, "GET", f"/api/thoughts/{i}/").status != 200]
                outcome = {"listed": len(listed), "rows after down and up": rows_after_up}
                assert rows_after_up == rows_before_down and not missing, (
                    f"{rows_before_down} rows before down, {rows_after_up} after up; missing: {missing[:10]}"
                )
        elif command.startswith("docker-compose stop"):
            stopped = stop_under_load(
                PORT, variables["TOKEN"], lambda command=command: compose.run(command, timeout=60)
            )
            lost = stopped.lost()
            exit_codes = compose.exit_codes()
            outcome = {
                "sent before the stop": stopped.sent_before_stop(),
                "lost": len(lost),
                "stop took s": round(stopped.stop_took, 1),
                "exit codes": exit_codes,
            }
            assert stopped.sent_before_stop() and not lost, f"{len(lost)} lost: {lost[:5]}\n{compose.logs()}"
            assert not stopped.broken(), stopped.broken()[:5]
            assert exit_codes and set(exit_codes.values()) == {0}, f"{exit_codes}\n{compose.logs()}"
            acknowledged = stopped.acknowledged_writes()
        elif command == "docker-compose down" or command.startswith("docker-compose down "):
            if "--volumes" in command:
                compose.run(command)
                gone = docker("volume", "inspect", f"{PROJECT}_db-data", check=False)
                assert gone.returncode != 0, "the volume outlived `down --volumes`"
                steps.append({"command": command, "result": "volume removed"})
                continue
            # Counted from the data itself: the server is stopped, the volume still mounted.
            compose.run("docker-compose start db", timeout=60)
            rows_before_down = int(
                compose.run(
                    "docker-compose exec -T db sh -c "
                    '\'until pg_isready -q -h 127.0.0.1; do sleep 0.2; done; psql -qtA -U "$POSTGRES_USER" '
                    '-d "$POSTGRES_DB" -c "SELECT count(*) FROM thought"\''
                ).stdout.strip()
            )
            compose.run("docker-compose stop db", timeout=60)
            compose.run(command)
            kept = docker("volume", "inspect", f"{PROJECT}_db-data", check=False)
            assert kept.returncode == 0, "the named volume did not outlive `docker-compose down`"
            outcome = {"rows before down": rows_before_down, "volume": "kept"}
        else:
            pytest.fail(f"the README's docker-compose block has a line this test does not check: {command}")
        steps.append({"command": command, "result": outcome, "seconds": round(time.monotonic() - started, 1)})

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(steps, indent=2, default=str) + "\n")
    print(json.dumps(steps, indent=2, default=str))
    # Every step of the section ran, the comparison across down and up included.
    assert ups == 2 and rows_before_down, steps
    assert any(
        isinstance(step["result"], dict) and "rows after down and up" in step["result"] for step in steps
    )
