"""What the benchmark measures: load with wrk, and the CPU and memory of a uWSGI process tree."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_scenario.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages when missing (as root), saying so."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("wrk is not installed: install it (Debian/Ubuntu: apt-get install wrk) and run again")
    print("wrk is missing: installing the Debian package (apt-get update && apt-get install wrk)", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("wrk") or sys.exit("apt-get installed wrk, but it is not on PATH")


# --- the process tree ------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    pending, seen = [pid], []
    while pending:
        current = pending.pop()
        seen.append(current)
        pending += children_of(current)
    return seen


def process_title(pid: int) -> str:
    """The command line as the process shows it (uWSGI rewrites it: "uWSGI worker 1")."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def is_uwsgi(pid: int) -> bool:
    """By the kernel's command name, which uWSGI leaves alone and a zombie still has: a worker
    that has exited but is not reaped yet must still count (its CPU is not yet the master's)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "uwsgi"
    except OSError:
        return False


def uwsgi_processes(root_pid: int) -> list[int]:
    """Every uWSGI process under `root_pid` (start_server.sh): master, workers, HTTP router."""
    return [pid for pid in descendants(root_pid) if is_uwsgi(pid)]


def uwsgi_master(root_pid: int) -> int | None:
    """The uWSGI process whose parent is not uWSGI."""
    processes = uwsgi_processes(root_pid)
    for pid in processes:
        if parent_of(pid) not in processes:
            return pid
    return None


def parent_of(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, IndexError):
        return None


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 on (after the parenthesised name, which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU of the uWSGI tree so far, including its workers that have exited.

    A worker that exits (recycled) is reaped by the master, whose cutime/cstime then hold it.
    """
    total_ticks = 0
    master = uwsgi_master(root_pid)
    for pid in uwsgi_processes(root_pid):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        # Fields 14-17 of stat: utime, stime, cutime, cstime (indexes 11-14 here).
        total_ticks += int(fields[11]) + int(fields[12])
        if pid == master:
            total_ticks += int(fields[13]) + int(fields[14])
    return total_ticks / CLOCK_TICKS


@dataclass
class Memory:
    processes: int
    rss_mib: float
    pss_mib: float


def memory(root_pid: int) -> Memory:
    """RSS and PSS summed over the uWSGI processes (PSS shares each shared page out fairly)."""
    rss = pss = 0
    pids = uwsgi_processes(root_pid)
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        rss += int(re.search(r"^Rss:\s+(\d+) kB", rollup, re.M).group(1))
        pss += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))
    return Memory(processes=len(pids), rss_mib=round(rss / 1024, 1), pss_mib=round(pss / 1024, 1))


# --- load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    closed_by_server: int
    cpu_ms_per_request: float | None


def run_wrk(
    wrk: str,
    url: str,
    duration: float,
    connections: int,
    threads: int,
    root_pid: int | None = None,
    method: str = "GET",
    body: str | None = None,
    headers: dict | None = None,
    during=None,
) -> LoadResult:
    """Drive `url` with wrk for `duration` seconds; CPU of the uWSGI tree under `root_pid`.

    `during`, if given, is called in a thread with a threading.Event that is set when the
    load ends (e.g. to recycle workers while it runs).
    """
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as scratch:
        result_path = Path(scratch) / "result.json"
        env = {**os.environ, "BENCH_METHOD": method, "BENCH_RESULT": str(result_path)}
        if body is not None:
            env["BENCH_BODY"] = body
        command = [
            wrk,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(duration))}s",
            "--timeout=10s",
            f"--script={WRK_SCRIPT}",
        ]
        for name, value in (headers or {}).items():
            command += ["--header", f"{name}: {value}"]
        command.append(url)
        cpu_before = cpu_seconds(root_pid) if root_pid else None
        stop = threading.Event()
        helper = threading.Thread(target=during, args=(stop,), daemon=True) if during else None
        if helper:
            helper.start()
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 60)
        stop.set()
        if helper:
            helper.join()
        cpu_after = cpu_seconds(root_pid) if root_pid else None
        if finished.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr or finished.stdout}")
        raw = json.loads(result_path.read_text())
    requests = raw["requests"]
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    cpu = None
    if cpu_before is not None and requests:
        cpu = round((cpu_after - cpu_before) * 1000 / requests, 3)
    return LoadResult(
        requests=requests,
        seconds=round(seconds, 2),
        requests_per_second=round(requests / seconds, 1),
        p50_ms=round(raw["latency_us"]["p50"] / 1000, 2),
        p99_ms=round(raw["latency_us"]["p99"] / 1000, 2),
        max_ms=round(raw["latency_us"]["max"] / 1000, 2),
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["write"] + errors["timeout"],
        # wrk counts a connection the server closes after a response as a read error: with
        # no HTTP keep-alive that is every request, so these are reported apart.
        closed_by_server=errors["read"],
        cpu_ms_per_request=cpu,
    )


def wait_for(condition, timeout: float, interval: float = 0.002, what: str = "condition"):
    """Poll `condition` until it returns a true value; returns it, or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(interval)
