"""The servers under test, both started by start_server.sh under the same uwsgi.ini.

The service is ThoughtsBackend/; the ceiling is ceiling/ (a bare WSGI app, given as the code
directory); the floors are floor/ (minimal Flask apps, the same way). All go through
tests/uwsgi_process.ServedApp, the launcher the tests use.
"""

import os
import sys
import time
from pathlib import Path

from measure import descendants, uwsgi_master, wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CODE = REPO / "ThoughtsBackend"
VENV = REPO / ".venv"
CEILING_DIR = HERE / "ceiling"
FLOOR_DIR = HERE / "floor"
UWSGI_INI = REPO / "docker" / "app" / "uwsgi.ini"
START_TIMEOUT_SECONDS = 120

sys.path.insert(0, str(CODE))
from tests.uwsgi_process import ServedApp  # noqa: E402


def seconds_since_boot() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def started_at_since_boot(pid: int) -> float:
    """When `pid` started, in seconds since boot (field 22 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[19]) / os.sysconf("SC_CLK_TCK")


class Server:
    """One ServedApp, with what the benchmark reads of it."""

    def __init__(self, code_dir: Path, env: dict, processes: int, ready_path: str, ini: Path = UWSGI_INI):
        # uwsgi.ini: the one given to the benchmark (start_server.sh reads UWSGI_INI).
        env = {**env, "UWSGI_INI": str(ini)}
        self.app = ServedApp(
            env, code_dir, processes=processes, ready_path=ready_path, start_timeout=START_TIMEOUT_SECONDS
        )
        self.ready_path = ready_path
        self.cold_start_seconds: float | None = None
        self.uwsgi_start_to_ready_seconds: float | None = None

    @property
    def port(self) -> int:
        return self.app.port

    @property
    def base_url(self) -> str:
        return self.app.url

    @property
    def root_pid(self) -> int:
        return self.app.pid

    def start(self) -> "Server":
        """Start, and time it: from the launch of start_server.sh to the first 200 on
        `ready_path` (ServedApp compiles the code to bytecode before, untimed, as the
        image's build does). ServedApp polls every 10 ms: the figure is "ready within",
        up to 10 ms late.
        """
        self.app.start()
        ready = time.monotonic()
        ready_since_boot = seconds_since_boot()
        self.cold_start_seconds = ready - self.app.launched_at
        master = uwsgi_master(self.root_pid)
        if master:
            self.uwsgi_start_to_ready_seconds = ready_since_boot - started_at_since_boot(master)
        return self

    def worker_pids(self) -> list[int]:
        try:
            return sorted(self.app.worker_pids().values())
        except OSError:  # the stats socket is briefly gone while uWSGI starts or stops
            return []

    def log_text(self) -> str:
        return self.app.output

    def stop(self) -> None:
        """SIGTERM (start_server.sh drains, then stops uWSGI); all its processes gone."""
        tree = descendants(self.root_pid) if self.app.process else []
        self.app.close()
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in tree), 30, 0.05, "uWSGI exit")


def service(
    database_url: str,
    public_key_file: Path,
    processes: int,
    code: Path | None = None,
    ini: Path | None = None,
    venv: Path | None = None,
) -> Server:
    """ThoughtsBackend on `database_url`, as `make run` serves it: CODE's, or `code`'s, under
    this checkout's uwsgi.ini or `ini`, with the uWSGI of this checkout's .venv or `venv`'s."""
    env = {"DATABASE_URL": database_url, "PUBLIC_KEY_FILE": str(public_key_file)}
    if venv is not None:
        env["PATH"] = os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")])
    return Server(code or CODE, env, processes, ready_path="/api/thoughts/?limit=1", ini=ini or UWSGI_INI)


def ceiling(processes: int) -> Server:
    """The bare WSGI app of ceiling/ under the same script and uwsgi.ini.

    A key file is named only so that start_server.sh does not make one: the app reads none.
    """
    return Server(CEILING_DIR, {"PUBLIC_KEY_FILE": os.devnull}, processes, ready_path="/")


def floor(name: str, processes: int) -> Server:
    """A minimal Flask app of floor/ (FLOOR=flask, flask-restx or observability), as the ceiling."""
    return Server(FLOOR_DIR, {"PUBLIC_KEY_FILE": os.devnull, "FLOOR": name}, processes, ready_path="/floor")
