"""Before/after: two ThoughtsBackend trees served side by side, their runs alternated.

    .venv/bin/python benchmarks/compare.py --code /tmp/old/ThoughtsBackend \\
        [--database sqlite|postgresql] [--rows 200] [--scenarios get,list] [--rounds 4]

`--code` is the other tree, e.g. an older commit's: `git archive <commit> ThoughtsBackend |
tar -x -C /tmp/old`. Both are served under this checkout's uwsgi.ini, unless `--ini` names
the other side's (`git archive <commit> docker/app/uwsgi.ini | tar -x -C /tmp/old`), to
measure a change to uWSGI's settings; and with this checkout's uWSGI, unless `--venv` names
the virtualenv of the other side's (its uwsgi and the app's requirements), to measure a
change to uWSGI itself. Each tree gets a database of its own, seeded alike
(seed.py) but laid out by that tree's own schema setup, and its own service (processes=2).
Then every scenario runs on one, then the other, `--rounds` times, and the medians are
printed.

This machine's speed drifts more between minutes than most changes move a figure; runs
alternated a few seconds apart drift together. That makes this the tool for "did that
change help"; `make bench` is the one for the absolute figures and the ceiling ratios.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_benchmarks  # noqa: E402  (puts ThoughtsBackend/ on the path)
import seed  # noqa: E402
import servers  # noqa: E402

FIGURES = (("requests_per_second", "req/s"), ("cpu_ms_per_request", "CPU ms/req"), ("p99_ms", "p99 ms"))


def seeded_by(tree: Path, call: str) -> str:
    """Run a seed.py `call` with `tree`'s schema setup (its migrations or create_schema, in a process of its
    own), and return the URL it gives: each side's database is laid out by its own code, so a
    change to the schema (an index, a trigger) is measured too."""
    program = f"import sys; sys.path[:0] = [{str(tree)!r}, {str(HERE)!r}]; import seed; print({call})"
    finished = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.exit(f"seeding with {tree} failed:\n{finished.stderr}")
    return finished.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, required=True, help="the other ThoughtsBackend/ (the 'before')")
    parser.add_argument("--ini", type=Path, help="the 'before' side's uwsgi.ini (default: this checkout's)")
    parser.add_argument(
        "--venv",
        type=Path,
        help="the 'before' side's virtualenv: its uwsgi, and the app's requirements (default: this "
        "checkout's .venv), to measure a change to uWSGI itself",
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--scenarios", default="get,list", help=f"of {','.join(run_benchmarks.SCENARIOS)}")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5, help="seconds of load per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1)
    args = parser.parse_args()
    scenarios = [run_benchmarks.SCENARIOS[name] for name in args.scenarios.split(",")]
    trees = {"before": args.code.resolve(), "after": servers.CODE}
    inis = {"before": (args.ini or servers.UWSGI_INI).resolve(), "after": servers.UWSGI_INI}
    for tree in trees.values():
        if not (tree / "wsgi.py").exists():
            sys.exit(f"{tree} is not a ThoughtsBackend/ tree (no wsgi.py)")

    runs: dict[str, dict[str, list[dict]]] = {side: {s.name: [] for s in scenarios} for side in trees}
    databases = []
    services = {}
    with tempfile.TemporaryDirectory(prefix="thoughts-compare-") as scratch_name:
        scratch = Path(scratch_name)
        bench = run_benchmarks.Bench(args, scratch)
        try:
            for side, tree in trees.items():
                if args.database == "postgresql":
                    databases.append(seed.PostgresqlDatabase(run_benchmarks.POSTGRES_SERVER_URL))
                    url = seeded_by(
                        tree,
                        f"seed.PostgresqlDatabase({run_benchmarks.POSTGRES_SERVER_URL!r}, "
                        f"{databases[-1].name!r}).create({args.rows})",
                    )
                else:
                    url = seeded_by(tree, f"seed.seed_sqlite({str(scratch / side)!r}, {args.rows})")
                venv = args.venv.resolve() if side == "before" and args.venv else None
                services[side] = servers.service(
                    url, bench.public_key_file, 2, code=tree, ini=inis[side], venv=venv
                ).start()
            for round_number in range(1, args.rounds + 1):
                bench.say(f"round {round_number} of {args.rounds}")
                for scenario in scenarios:
                    for side, service in services.items():
                        runs[side][scenario.name].append(bench.load(service, scenario))
        finally:
            for service in services.values():
                service.stop()
            for database in databases:
                database.drop()

    print(
        f"\n{args.database}, {args.rows} rows, processes=2, {args.rounds} alternated runs of {args.duration:g} s"
    )
    for side in trees:
        print(f"{side + ':':7} {trees[side]}, {inis[side]}")
    print()
    print("| scenario | figure | before | after | after / before |")
    print("|---|---|---:|---:|---:|")
    for scenario in scenarios:
        for key, label in FIGURES:
            before, after = (
                statistics.median(run[key] for run in runs[side][scenario.name]) for side in trees
            )
            print(f"| {scenario.name} | {label} | {before:g} | {after:g} | {after / before:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
