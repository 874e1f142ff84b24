"""The README's commands, run as written: `make run`, `make token`, and every curl example; and
its table of where things are, against the package's modules."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from ..support import wait_for
from ..uwsgi_process import free_port

# make, the repository's Makefile and README.md: host only.
pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[3]
README = REPO / "README.md"


def shell_blocks_after(heading: str) -> list[str]:
    """The ```sh blocks of one README section."""
    text = README.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    def answers() -> bool:
        assert process.poll() is None, "make run exited before serving"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:  # refused, reset or timed out while uWSGI loads the app
            return False

    wait_for(answers, timeout, f"make run answering {url}", interval=0.1)


def json_values(text: str) -> list:
    """The JSON documents curl printed one after another, with or without newlines between."""
    decoder, values, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        value, position = decoder.raw_decode(text, position)
        values.append(value)
    return values


@contextlib.contextmanager
def running_make_run(directory: Path):
    """`make run` on a free port, with its SQLite file in `directory`; Ctrl+C at the end."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "SQLITE_PATH": str(directory / "readme.sqlite3")}
    for name in ("DATABASE_URL", "DATABASE_ENGINE", "PUBLIC_KEY", "PUBLIC_KEY_FILE"):
        env.pop(name, None)
    log_path = directory / "make-run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["make", "-s", "run"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process)
        yield port, env, process, log_path
    finally:
        if process.poll() is None:
            # Ctrl+C in the terminal: SIGINT to the whole foreground process group.
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
        print(log_path.read_text())


@pytest.fixture
def make_run(tmp_path):
    with running_make_run(tmp_path) as running:
        yield running


def test_make_run_serves_and_the_curl_examples_work(make_run):
    port, env, process, log_path = make_run
    script = "\n".join(shell_blocks_after("Try it")).replace("localhost:8000", f"127.0.0.1:{port}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answers = json_values(result.stdout)
    created, mine, found, one, form_created = answers
    assert created["text"] == "My first thought"
    assert created["username"] == "alice"
    assert mine == [created]
    assert found == [created]
    assert one == created
    assert form_created["text"] == "Posted as a form, as the original API allowed"
    # The two DELETEs answered 204 with no body; check their effect.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/thoughts/") as response:
        assert json.load(response) == []

    # Ctrl+C: make reports the interrupt, and the server behind it stops gracefully.
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=30)
    last_line = log_path.read_text().splitlines()[-1]
    assert last_line.startswith("start_server: ") and last_line.endswith("status 0"), last_line
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_two_make_runs_on_other_ports_serve_side_by_side(tmp_path):
    """Each `make run` has its own run directory (FIFO, pidfile, sockets) under run/PORT:
    a second one on another port neither breaks the first nor stops it when it stops."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with running_make_run(tmp_path / "first") as (first_port, _env, _process, _log):
        with running_make_run(tmp_path / "second") as (second_port, _env, second, second_log):
            for port in (first_port, second_port):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
                    assert response.status == 200
            os.killpg(second.pid, signal.SIGINT)
            second.wait(timeout=30)
            assert second_log.read_text().splitlines()[-1].endswith("status 0")
        with urllib.request.urlopen(f"http://127.0.0.1:{first_port}/readyz", timeout=10) as response:
            assert response.status == 200


def test_where_things_are_names_every_module_of_the_package():
    """The README's table of concepts names each module of thoughts_backend/, and only those."""
    section = README.read_text().split("\n## Where things are\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+\.py)`", section))
    package = REPO / "ThoughtsBackend" / "thoughts_backend"
    modules = {path.name for path in package.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert named >= modules, f"not in the README's table: {sorted(modules - named)}"
    tests = {"support.py", "load.py", "conftest.py"}
    assert named - modules <= tests, (
        f"named in the README, not in the package: {sorted(named - modules - tests)}"
    )
