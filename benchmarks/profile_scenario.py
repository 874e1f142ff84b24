"""Where a scenario's time goes: py-spy samples a uWSGI worker of the real service under wrk.

    .venv/bin/pip install py-spy==0.4.3
    .venv/bin/python benchmarks/profile_scenario.py list [--seconds 10] [--rows 200] [--top 40]

Starts start_server.sh (processes=1, so one worker takes every request) on a seeded SQLite
database, drives the scenario with wrk, samples the worker with py-spy meanwhile, and
prints the share of samples per function: inclusive (the function and what it calls) and
self (the function's own code). Writes the raw (collapsed) stacks to --raw, by default
/tmp/thoughts-profile-SCENARIO.txt, which speedscope or flamegraph.pl can draw.
"""

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "ThoughtsBackend"))

import run_benchmarks  # noqa: E402
import seed  # noqa: E402
import servers  # noqa: E402


def frame_name(frame: str) -> str:
    """'function (path/to/file.py:12)' -> 'function (file.py)'."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else function


def summarise(raw: Path, top: int) -> str:
    inclusive, own = collections.Counter(), collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [frame_name(frame) for frame in stack.split(";")]
        for name in set(frames):
            inclusive[name] += samples
        own[frames[-1]] += samples
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=sorted(run_benchmarks.SCENARIOS))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--raw", type=Path, help="where to write the collapsed stacks")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(servers.VENV / "bin")) or shutil.which("py-spy")
    if not py_spy:
        sys.exit("py-spy is missing: .venv/bin/pip install py-spy==0.4.3")

    scenario = run_benchmarks.SCENARIOS[args.scenario]
    with tempfile.TemporaryDirectory(prefix="thoughts-profile-") as scratch_name:
        scratch = Path(scratch_name)
        bench = run_benchmarks.Bench(argparse.Namespace(warmup=1, duration=args.seconds), scratch)
        url = seed.seed_sqlite(scratch / "profile.sqlite3", args.rows)
        service = servers.service(url, bench.public_key_file, 1).start()
        try:
            bench.check(service, scenario)
            (worker,) = service.worker_pids()
            raw = args.raw or Path(tempfile.gettempdir()) / f"thoughts-profile-{args.scenario}.txt"

            def sample(_stop: threading.Event):
                command = [py_spy, "record", "--pid", str(worker), "--duration", str(args.seconds - 1)]
                command += ["--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking"]
                subprocess.run(command, check=True, capture_output=True)

            load = bench.load(service, scenario, during=sample)
        finally:
            service.stop()
    print(
        f"{args.scenario}: {load['requests_per_second']} req/s under py-spy, {load['cpu_ms_per_request']} CPU ms"
    )
    print(summarise(raw, args.top))
    print(f"\nraw stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
