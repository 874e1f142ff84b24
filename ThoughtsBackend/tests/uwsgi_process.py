"""The service as production runs it: start_server.sh with the real uwsgi.ini, on loopback.

    from .uwsgi_process import ServedApp  # in a test module of tests/

    with ServedApp({"DATABASE_ENGINE": "SQLITE", "SQLITE_PATH": db, "PUBLIC_KEY_FILE": pem}) as app:
        status, body = app.get("/api/thoughts/")
        app.stop(signal.SIGTERM)
        assert app.wait(timeout=10) == 0
        print(app.output)

`ServedApp` compiles the code to bytecode first, as the image's build does (its
`python -m compileall`), so that a start here costs what a container's start costs, even
where PYTHONDONTWRITEBYTECODE keeps Python from caching what it compiles. Then it starts
the script on a free port, with a run directory of its own, and
returns once GET /healthz answers 200: it waits for that (support.wait_for), never a fixed time. The
environment is ours plus PORT, UWSGI_RUN_DIR, UWSGI_PROCESSES and CODE_DIR, then the
caller's `env`, which wins (UWSGI_HARAKIRI=3, UWSGI_INI=variant.ini). Leaving the `with`
block stops whatever still runs (SIGTERM, then SIGKILL) and removes the files made for it.
start_server.sh and uwsgi.ini come from docker/app/ in a checkout, /opt/uwsgi/ in the
image. Without uWSGI, start() raises: a test that needs it fails, it never skips.
"""

import compileall
import configparser
import contextlib
import functools
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .support import wait_for

CODE_DIR = Path(__file__).resolve().parents[1]
SERVER_DIRS = (CODE_DIR.parent / "docker" / "app", Path("/opt/uwsgi"))
READY_POLL_SECONDS = 0.01


def server_dir() -> Path:
    """Where start_server.sh and uwsgi.ini are: the checkout's docker/app, or the image's."""
    for directory in SERVER_DIRS:
        if (directory / "start_server.sh").is_file():
            return directory
    raise FileNotFoundError(f"start_server.sh is in none of {', '.join(map(str, SERVER_DIRS))}")


def uwsgi_setting(name: str) -> int:
    """A whole-number setting of uwsgi.ini, as written there (outside any if-env block)."""
    ini = configparser.ConfigParser(strict=False, interpolation=None)
    ini.read(server_dir() / "uwsgi.ini")
    return int(ini["uwsgi"][name])


@functools.cache
def compile_to_bytecode(code_dir: Path) -> None:
    """Bytecode for every module of `code_dir`, as the image's build makes it (`RUN python
    -m compileall -q /opt/code`); once per directory and test run (a tree already compiled
    still takes 50 ms to check). Without it, on a host whose environment sets
    PYTHONDONTWRITEBYTECODE, every start would compile the app's modules from source again
    (about 17 ms of CPU here), which no container does. The tests' interpreter is the one
    uWSGI embeds (the same virtualenv's). In the image itself the code is already compiled,
    and read-only to the user the tests run as: left as it is."""
    if not os.access(code_dir, os.W_OK):
        return
    if not compileall.compile_dir(code_dir, quiet=1):
        raise RuntimeError(f"some modules of {code_dir} do not compile (listed above)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parent_of(pid: int) -> int:
    """The parent's pid, from /proc; OSError if `pid` is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name, in parentheses, may hold spaces: the fields follow the last ')'.
    return int(stat.rpartition(")")[2].split()[1])


def process_tree(root: int) -> set[int]:
    """`root` and all its descendants alive now, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = parent_of(int(entry.name))
        except OSError:  # exited while we looked
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree and Path(f"/proc/{pid}").exists():
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return tree


def is_alive(pid: int) -> bool:
    """Running, or exited but not yet reaped by its parent (a zombie counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class ServedApp:
    """start_server.sh serving `code_dir` (with env added to ours) on 127.0.0.1:<free port>."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        code_dir: Path = CODE_DIR,
        *,
        processes: int = 2,
        ready_path: str = "/healthz",
        start_timeout: float = 60,
    ):
        self.code_dir = Path(code_dir)
        self.extra_env = dict(env or {})
        self.processes = processes
        self.ready_path = ready_path
        self.start_timeout = start_timeout
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.launched_at: float | None = None  # time.monotonic() when the script was started
        self.signalled_at: float | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="served-app-"))
        self.run_dir = self._workdir / "run"
        self._log_path = self._workdir / "output.log"
        self._log = None

    # --- Where things are ---

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The script's pid: the process that gets the signals (PID 1 in the container)."""
        assert self.process, "not started"
        return self.process.pid

    @property
    def fifo(self) -> Path:
        return self.run_dir / "master.fifo"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "uwsgi.pid"

    @property
    def master_pid(self) -> int:
        return int(self.pidfile.read_text())

    @property
    def output(self) -> str:
        """Everything the script and uWSGI have written so far (stdout and stderr)."""
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    # --- Life cycle ---

    def start(self) -> "ServedApp":
        uwsgi = shutil.which("uwsgi", path=self._environment(0)["PATH"])
        if uwsgi is None:
            raise FileNotFoundError(
                "uwsgi is not installed: make install (or sh docker/app/uwsgi/install.sh PIP)"
            )
        compile_to_bytecode(self.code_dir)
        for _attempt in range(3):  # another process may take the free port before uWSGI does
            self.port = free_port()
            self._launch()
            if self._wait_until_ready():
                return self
            if "Address already in use" not in self.output:
                break
        raise RuntimeError(f"start_server.sh did not start:\n{self.output}")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Send `signum` to the script, as `docker stop` (SIGTERM) or Ctrl+C (SIGINT) would."""
        self.signalled_at = time.monotonic()
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """The script's exit status; subprocess.TimeoutExpired if it runs past `timeout`."""
        assert self.process, "not started"
        return self.process.wait(timeout)

    def close(self) -> None:
        """Stop whatever still runs, the gentle way first; remove the files made for it."""
        try:
            if self.process and self.process.poll() is None:
                self.stop(signal.SIGTERM)
                try:
                    self.process.wait(15)
                except subprocess.TimeoutExpired:
                    self._kill_everything()
        finally:
            if self._log:
                self._log.close()
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> "ServedApp":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- Looking inside ---

    def uwsgi_pids(self) -> set[int]:
        """The master, its workers and its routers (HTTP, fastrouter), alive now."""
        return process_tree(self.master_pid)

    def stats(self) -> dict:
        """uWSGI's stats (its stats socket's JSON): per worker its pid, status, requests."""
        with socket.socket(socket.AF_UNIX) as stats:
            stats.settimeout(5)
            stats.connect(str(self.run_dir / "stats.sock"))
            data = b"".join(iter(lambda: stats.recv(65536), b""))
        return json.loads(data)

    def worker_pids(self) -> dict[int, int]:
        """Worker id -> pid, from uWSGI's stats socket; 0 while that worker is being respawned."""
        return {worker["id"]: worker["pid"] for worker in self.stats()["workers"]}

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        """GET `path` on a new connection: (status, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    # --- Inside ---

    def _environment(self, port: int) -> dict[str, str]:
        # uWSGI would take an inherited UWSGI_* variable for an option of this instance.
        environment = {name: value for name, value in os.environ.items() if not name.startswith("UWSGI_")}
        # The venv's uwsgi and python, even when the tests run without activating it.
        environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
        environment.update(
            PORT=str(port),
            CODE_DIR=str(self.code_dir),
            UWSGI_RUN_DIR=str(self.run_dir),
            UWSGI_PROCESSES=str(self.processes),
            PYTHONUNBUFFERED="1",
        )
        environment.update(self.extra_env)
        return environment

    def _launch(self) -> None:
        if self._log:
            self._log.close()
        self._log = self._log_path.open("ab")
        self.launched_at = time.monotonic()
        self.process = subprocess.Popen(
            ["sh", str(server_dir() / "start_server.sh")],
            cwd=self.code_dir,
            env=self._environment(self.port),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session, like a container's PID 1: our signals reach it only when we send them.
            start_new_session=True,
        )

    def _answers_ready(self) -> bool:
        try:
            return self.get(self.ready_path, timeout=2)[0] == 200
        except OSError:  # refused, reset or timed out: not ready yet
            return False

    def _wait_until_ready(self) -> bool:
        """True once `ready_path` answers 200; False if the script exits first."""
        try:
            wait_for(
                lambda: self.process.poll() is not None or self._answers_ready(),
                self.start_timeout,
                f"{self.ready_path} answering 200",
                # Tried every 10 ms (a refused connection costs microseconds): a start's
                # time, which the benchmark reports, is known to within that.
                interval=READY_POLL_SECONDS,
                details=lambda: self.output,
            )
        except BaseException:
            self._kill_everything()
            raise
        return self.process.poll() is None

    def _kill_everything(self) -> None:
        """SIGKILL the script and uWSGI's process group (uWSGI runs in a session of its own)."""
        with contextlib.suppress(OSError, ValueError):  # no pidfile, or no such group any more
            os.killpg(self.master_pid, signal.SIGKILL)
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
