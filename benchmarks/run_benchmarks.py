"""`make bench`: ThoughtsBackend under its real uwsgi.ini, against the bare-uWSGI ceiling.

    .venv/bin/python benchmarks/run_benchmarks.py [--duration 10] [--no-postgresql] [--only latency]

Each group of runs starts the service (docker/app/start_server.sh) and the ceiling (a bare
WSGI app, benchmarks/ceiling/wsgi.py, under the same script and uwsgi.ini) on loopback
ports, loads each scenario with wrk at 32 connections, and reports requests/s as a share of
the ceiling's, measured in the same group (the ceiling runs before and after; their mean is
the reference). Writes benchmarks/results/latest.md and latest.json; about 12 minutes.
See benchmarks/README.md.
"""

import argparse
import dataclasses
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "ThoughtsBackend"))

import latency  # noqa: E402
import measure  # noqa: E402
import seed  # noqa: E402
import servers  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from thoughts_backend.token_validation import encode_token  # noqa: E402

RESULTS = HERE / "results"
CONNECTIONS = 32
THREADS = 2
POSTGRES_SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
COLD_STARTS = 5
RECYCLE_EVERY_SECONDS = 3.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    method: str = "GET"
    body: str | None = None
    with_token: bool = False
    status: int = 200


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario("list", "/api/thoughts/?limit=200"),
        Scenario("search", f"/api/thoughts/?search={seed.SEARCH_WORD}"),
        Scenario("get", "/api/thoughts/42/"),
        Scenario("me", "/api/me/thoughts/", with_token=True),
        Scenario(
            "create",
            "/api/me/thoughts/",
            method="POST",
            body=json.dumps({"text": "A thought from the benchmark"}),
            with_token=True,
            status=201,
        ),
    )
}
READS = ("list", "search", "get", "me")
CEILING = Scenario("ceiling", "/")
# floor/wsgi.py's FLOOR values, with how the tables name them: each answers the ceiling's bytes.
FLOORS = {
    "flask": "Flask floor",
    "flask-restx": "flask-restx floor",
    "observability": "flask-restx + observability floor",
}
FLOOR = Scenario("floor", "/floor")


class Bench:
    def __init__(self, args, scratch: Path):
        self.args = args
        self.scratch = scratch
        self.wrk = measure.ensure_wrk()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key_file = scratch / "public.pem"
        self.public_key_file.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.token = encode_token(seed.BENCH_USER, key, expires_in=6 * 3600)
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f} s] {message}", flush=True)

    # --- load ---------------------------------------------------------------------------------

    def headers(self, scenario: Scenario) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if scenario.with_token else {}

    def check(self, server: servers.Server, scenario: Scenario) -> None:
        """One request first: a scenario that answers the wrong status measures nothing."""
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        headers = self.headers(scenario)
        if scenario.body:
            headers["Content-Type"] = "application/json"
        connection.request(scenario.method, scenario.path, body=scenario.body, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        if response.status != scenario.status:
            raise RuntimeError(f"{scenario.name}: {scenario.path} answered {response.status}: {body[:300]!r}")

    def load(
        self, server: servers.Server, scenario: Scenario, during=None, connections: int = CONNECTIONS
    ) -> dict:
        self.check(server, scenario)
        options = {
            "method": scenario.method,
            "body": scenario.body,
            "headers": self.headers(scenario),
            "connections": connections,
            "threads": min(THREADS, connections),  # wrk wants a connection per thread at least
        }
        url = server.base_url + scenario.path
        measure.run_wrk(self.wrk, url, self.args.warmup, **options)
        result = measure.run_wrk(
            self.wrk, url, self.args.duration, root_pid=server.root_pid, during=during, **options
        )
        return dataclasses.asdict(result)

    def recycling(self, server: servers.Server, recycled: list):
        """While the load runs, SIGHUP one worker after the other: uWSGI's graceful recycle."""

        def recycle(stop: threading.Event):
            turn = 0
            while not stop.wait(RECYCLE_EVERY_SECONDS):
                workers = sorted(server.worker_pids())
                if workers:
                    pid = workers[turn % len(workers)]
                    turn += 1
                    try:
                        os.kill(pid, signal.SIGHUP)
                        recycled.append(pid)
                    except ProcessLookupError:
                        pass

        return recycle

    # --- groups -------------------------------------------------------------------------------

    def group(
        self,
        title: str,
        database_url: str,
        rows: int,
        processes: int,
        scenarios: tuple,
        recycle: tuple = (),
        with_floors: bool = False,
        one_connection: tuple = (),
    ) -> dict:
        """The service on `database_url` and the ceiling side by side: the ceiling, the floors,
        `scenarios` at CONNECTIONS (each followed by itself at one connection if it is in
        `one_connection`), `recycle` while workers recycle, the ceiling again."""
        self.say(f"{title}: starting the service and the ceiling")
        service = servers.service(database_url, self.public_key_file, processes)
        ceiling = servers.ceiling(processes)
        floors = {name: servers.floor(name, processes) for name in FLOORS} if with_floors else {}
        result = {
            "title": title,
            "rows": rows,
            "processes": processes,
            "scenarios": {},
            "floors": {},
            "one_connection": {},
        }
        try:
            service.start()
            ceiling.start()
            result["cold_start_ms"] = round(service.cold_start_seconds * 1000)
            result["memory_at_start"] = dataclasses.asdict(measure.memory(service.root_pid))
            ceiling_runs = [self.load(ceiling, CEILING)]
            for name, floor in floors.items():
                # One at a time: a floor's idle workers are no load, but its start is.
                self.say(f"{title}: {FLOORS[name]}")
                floor.start()
                try:
                    result["floors"][name] = self.load(floor, FLOOR)
                finally:
                    floor.stop()
            for name in scenarios:
                self.say(f"{title}: {name}")
                result["scenarios"][name] = self.load(service, SCENARIOS[name])
                if name in one_connection:
                    self.say(f"{title}: {name}, one connection")
                    result["one_connection"][name] = self.load(service, SCENARIOS[name], connections=1)
            for name in recycle:
                self.say(f"{title}: {name} while workers recycle")
                recycled: list[int] = []
                run = self.load(service, SCENARIOS[name], during=self.recycling(service, recycled))
                run["workers_recycled"] = len(recycled)
                result["scenarios"][f"{name} + recycling"] = run
            ceiling_runs.append(self.load(ceiling, CEILING))
            result["memory_after_load"] = dataclasses.asdict(measure.memory(service.root_pid))
            result["ceiling_memory"] = dataclasses.asdict(measure.memory(ceiling.root_pid))
        finally:
            service.stop()
            ceiling.stop()
        reference = statistics.mean(run["requests_per_second"] for run in ceiling_runs)
        result["ceiling"] = {"runs": ceiling_runs, "requests_per_second": round(reference, 1)}
        for run in (*result["scenarios"].values(), *result["floors"].values()):
            run["share_of_ceiling"] = round(run["requests_per_second"] / reference, 3)
        return result

    def one_connection_runs(self, database_url: str, scenarios: tuple) -> dict:
        """`scenarios` one request at a time (processes=2), each run keyed by its name."""
        service = servers.service(database_url, self.public_key_file, 2)
        try:
            service.start()
            return {name: self.load(service, SCENARIOS[name], connections=1) for name in scenarios}
        finally:
            service.stop()

    def latency_group(self) -> dict:
        """The service on the host, PostgreSQL in a network namespace across a link with
        latency.DELAY_MS of delay each way (latency.py): the scenarios at CONNECTIONS, and at
        one connection, where a request waits for nothing but itself. Then the same at one
        connection on SQLite (no network): the reference its p50 is compared with, counted
        in the link's round trips."""
        title = f"PostgreSQL over a {latency.DELAY_MS} ms link, {thousands(latency.ROWS)} rows, processes=2"
        self.say(f"{title}: a private PostgreSQL in a network namespace, {latency.DELAY_MS} ms each way")
        # Everything made here (the server, its database, the namespace) goes with the block.
        with latency.delayed_postgresql() as (server_url, delayed_by):
            self.say(f"{title}: delayed by {delayed_by}")
            url = seed.PostgresqlDatabase(server_url).create(latency.ROWS)
            round_trip = latency.link_round_trip(server_url)
            self.say(
                f"{title}: round trip of the link (SELECT 1, median of {round_trip['samples']}): "
                f"{round_trip['median_ms']} ms"
            )
            result = self.group(
                title, url, latency.ROWS, 2, latency.SCENARIOS, one_connection=latency.SCENARIOS
            )
        self.say(f"{title}: the reference, SQLite with the same rows, one connection")
        reference = seed.seed_sqlite(self.scratch / "latency-reference.sqlite3", latency.ROWS)
        result["link"] = {
            "delay_ms_each_way": latency.DELAY_MS,
            "delayed_by": delayed_by,
            "select_1_round_trip": round_trip,
        }
        result["sqlite_one_connection"] = self.one_connection_runs(reference, latency.SCENARIOS)
        return result

    def compare_sizes(self, title: str, small: tuple[int, str], large: tuple[int, str]) -> dict:
        """list and me on a small and a large table, back to back (small, large, small, large).

        Separate groups run minutes apart, and this machine's speed drifts more than the
        difference sought; alternating runs of two services started side by side do not.
        """
        self.say(f"{title}: {small[0]} vs {large[0]} rows, back to back")
        services = [servers.service(url, self.public_key_file, 2) for _rows, url in (small, large)]
        runs = {name: ([], []) for name in ("list", "me")}
        try:
            for service in services:
                service.start()
            for name, (small_runs, large_runs) in runs.items():
                for _ in range(2):
                    small_runs.append(self.load(services[0], SCENARIOS[name]))
                    large_runs.append(self.load(services[1], SCENARIOS[name]))
        finally:
            for service in services:
                service.stop()
        result = {"title": title, "small_rows": small[0], "large_rows": large[0], "scenarios": {}}
        for name, (small_runs, large_runs) in runs.items():
            cpu = [
                statistics.mean(run["cpu_ms_per_request"] for run in side)
                for side in (small_runs, large_runs)
            ]
            rate = [
                statistics.mean(run["requests_per_second"] for run in side)
                for side in (small_runs, large_runs)
            ]
            result["scenarios"][name] = {
                "cpu_ms_per_request": [round(x, 3) for x in cpu],
                "requests_per_second": [round(x, 1) for x in rate],
                "cpu_ratio_large_to_small": round(cpu[1] / cpu[0], 3),
            }
        return result

    def cold_starts(self, database_url: str) -> dict:
        """Start the service several times: launch of start_server.sh to the first 200."""
        self.say(f"cold start: {COLD_STARTS} starts at processes=2")
        launches, uwsgi_only, memories = [], [], []
        for _ in range(COLD_STARTS):
            server = servers.service(database_url, self.public_key_file, 2)
            try:
                server.start()
                launches.append(round(server.cold_start_seconds * 1000))
                if server.uwsgi_start_to_ready_seconds is not None:
                    uwsgi_only.append(round(server.uwsgi_start_to_ready_seconds * 1000))
                memories.append(dataclasses.asdict(measure.memory(server.root_pid)))
            finally:
                server.stop()
        return {
            "start_server_to_first_200_ms": launches,
            "uwsgi_master_to_first_200_ms": uwsgi_only,
            "median_start_server_ms": statistics.median(launches),
            "median_uwsgi_ms": statistics.median(uwsgi_only) if uwsgi_only else None,
            "memory_at_start": memories[-1],
        }


def thousands(number: int) -> str:
    return f"{number:,}".replace(",", " ")


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    # The uWSGI that ServedApp runs: the one beside this Python (`make bench VENV=...`).
    uwsgi_binary = Path(sys.executable).parent / "uwsgi"
    uwsgi = subprocess.run([str(uwsgi_binary), "--version"], capture_output=True, text=True)
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uwsgi": uwsgi.stdout.strip(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def postgresql_reachable() -> bool:
    try:
        import psycopg

        psycopg.connect(POSTGRES_SERVER_URL, connect_timeout=3).close()
        return True
    except Exception as error:
        print(f"PostgreSQL at {POSTGRES_SERVER_URL} is not reachable ({error}): skipping its runs")
        return False


def latency_unavailable(args) -> str | None:
    """Why the latency group is skipped, or None."""
    if args.no_postgresql:
        return "--no-postgresql was given"
    return latency.missing()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per run (default 10)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of load before each run (default 1)")
    parser.add_argument("--no-postgresql", action="store_true", help="skip the PostgreSQL runs")
    parser.add_argument(
        "--only", choices=("headline", "scale", "latency", "coldstart"), help="run one part only"
    )
    parser.add_argument(
        "--processes", default="2,1", help="uWSGI processes of the headline groups (default 2,1)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where latest.md/.json go")
    parser.add_argument(
        "--uwsgi-ini",
        type=Path,
        default=servers.UWSGI_INI,
        help="another uwsgi.ini, to measure a change to it",
    )
    parser.add_argument(
        "--code",
        type=Path,
        default=servers.CODE,
        help="another ThoughtsBackend/ to serve (e.g. an older commit's, from git archive), to compare",
    )
    args = parser.parse_args()
    # A SIGTERM ends the run through the finally blocks: databases dropped, namespace deleted.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    servers.CODE = args.code.resolve()
    servers.UWSGI_INI = args.uwsgi_ini.resolve()
    if not servers.UWSGI_INI.exists():
        sys.exit(f"{servers.UWSGI_INI} is missing: the benchmark runs the real service")

    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": CONNECTIONS,
            "wrk_threads": THREADS,
            "recycle_every_s": RECYCLE_EVERY_SECONDS,
            "code": str(servers.CODE),
            "uwsgi_ini": str(servers.UWSGI_INI),
        },
        "groups": [],
    }
    # The shared server is for the scale groups; the latency group starts its own.
    use_postgresql = args.only in (None, "scale") and not args.no_postgresql and postgresql_reachable()
    with tempfile.TemporaryDirectory(prefix="thoughts-bench-") as scratch_name:
        scratch = Path(scratch_name)
        bench = Bench(args, scratch)
        bench.say(f"scratch directory {scratch}; {args.duration:g} s per run, {CONNECTIONS} connections")
        if args.only in (None, "headline"):
            for processes in (int(n) for n in args.processes.split(",")):
                url = seed.seed_sqlite(scratch / f"headline-{processes}.sqlite3", 200)
                results["groups"].append(
                    bench.group(
                        f"SQLite, 200 rows, processes={processes}",
                        url,
                        200,
                        processes,
                        (*READS, "create"),
                        recycle=("list", "get"),
                        with_floors=True,
                    )
                )
        if args.only in (None, "headline", "coldstart"):
            url = seed.seed_sqlite(scratch / "coldstart.sqlite3", 200)
            results["cold_start"] = bench.cold_starts(url)
        if args.only in (None, "scale"):
            results["size_comparisons"] = []
            small = seed.seed_sqlite(scratch / "small.sqlite3", 200)
            large = seed.seed_sqlite(scratch / "large.sqlite3", 100_000)
            results["groups"].append(
                bench.group("SQLite, 100 000 rows, processes=2", large, 100_000, 2, READS)
            )
            results["size_comparisons"].append(bench.compare_sizes("SQLite", (200, small), (100_000, large)))
            if use_postgresql:
                databases = {rows: seed.PostgresqlDatabase(POSTGRES_SERVER_URL) for rows in (200, 1_000_000)}
                try:
                    urls = {}
                    for rows, database in databases.items():
                        bench.say(f"PostgreSQL: seeding {thousands(rows)} rows in {database.name}")
                        urls[rows] = database.create(rows)
                        title = f"PostgreSQL, {thousands(rows)} rows, processes=2"
                        results["groups"].append(bench.group(title, urls[rows], rows, 2, READS))
                    results["size_comparisons"].append(
                        bench.compare_sizes("PostgreSQL", (200, urls[200]), (1_000_000, urls[1_000_000]))
                    )
                finally:
                    for database in databases.values():
                        database.drop()
        if args.only in (None, "latency"):
            reason = latency_unavailable(args)
            if reason:
                print(f"The latency group is skipped: {reason}", flush=True)
            else:
                results["groups"].append(bench.latency_group())
        bench.say("done")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = targets(results)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = render(results)
    (args.output / "latest.md").write_text(markdown)
    print()
    print(markdown)
    return 0


# --- targets and the table ----------------------------------------------------------------------


def find_group(results: dict, prefix: str) -> dict | None:
    return next((g for g in results["groups"] if g["title"].startswith(prefix)), None)


def targets(results: dict) -> list[dict]:
    """Each target of the issue with its measured figure, where this run measured it."""
    found = []

    def add(target, measured, met):
        found.append({"target": target, "measured": measured, "met": bool(met)})

    headline = find_group(results, "SQLite, 200 rows, processes=2")
    if headline:
        scenarios = headline["scenarios"]
        # What bounds a share: the floors, measured in the same group.
        floors = "".join(
            f"; {FLOORS[name]} {run['share_of_ceiling']:.0%}"
            for name, run in headline.get("floors", {}).items()
        )
        add(
            "get by id >= 50% of the ceiling's req/s",
            f"{scenarios['get']['share_of_ceiling']:.0%}{floors}",
            scenarios["get"]["share_of_ceiling"] >= 0.5,
        )
        add(
            "list of 200 rows >= 20% of the ceiling's req/s",
            f"{scenarios['list']['share_of_ceiling']:.0%}{floors}",
            scenarios["list"]["share_of_ceiling"] >= 0.2,
        )
        reads = {name: run for name, run in scenarios.items() if name.split(" ")[0] in READS}
        worst = max(reads, key=lambda name: reads[name]["p99_ms"])
        add(
            "p99 <= 30 ms on every read scenario of the 200-row headline, recycling included",
            f"worst {reads[worst]['p99_ms']} ms ({worst})",
            reads[worst]["p99_ms"] <= 30,
        )
        rss = headline["memory_after_load"]["rss_mib"]
        add(
            "RSS of all uWSGI processes <= 100 MiB",
            f"{rss} MiB (PSS {headline['memory_after_load']['pss_mib']})",
            rss <= 100,
        )
    if "cold_start" in results:
        cold = results["cold_start"]["median_start_server_ms"]
        add("cold start <= 350 ms", f"{cold} ms median (start_server.sh to first 200)", cold <= 350)
    big = find_group(results, "PostgreSQL, 1 000 000")
    if big:
        p99 = big["scenarios"]["search"]["p99_ms"]
        add("search on 1 000 000 rows (PostgreSQL) p99 <= 50 ms", f"{p99} ms", p99 <= 50)
    for group in results["groups"]:
        if "link" not in group:
            continue
        round_trip = group["link"]["select_1_round_trip"]["median_ms"]
        for name in latency.READS:
            p50 = group["one_connection"][name]["p50_ms"]
            reference = group["sqlite_one_connection"][name]["p50_ms"]
            beyond = latency.round_trips_beyond(p50, reference, round_trip)
            # Closer to one round trip than to two.
            add(
                f"{name} over a {group['link']['delay_ms_each_way']} ms link, one connection: p50 approaches "
                "SQLite's p50 + one round trip (<= 1.5 round trips beyond SQLite's)",
                f"{p50} ms vs {reference} + {round_trip} = {reference + round_trip:.2f} ms; "
                f"{beyond} round trips beyond SQLite's",
                beyond <= 1.5,
            )
    for comparison in results.get("size_comparisons", []):
        for name, measured in comparison["scenarios"].items():
            small_cpu, large_cpu = measured["cpu_ms_per_request"]
            # Within 15%: what back-to-back runs of one service differ by here.
            add(
                f"{name}: cost grows with the page, not the table ({comparison['title']}, "
                f"{thousands(comparison['small_rows'])} vs {thousands(comparison['large_rows'])} rows)",
                f"{small_cpu} vs {large_cpu} CPU ms per request",
                large_cpu <= small_cpu * 1.15,
            )
    return found


def render(results: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    lines = [
        f"Measured {results['date']} on {m['host']}: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}, uWSGI {m['uwsgi']}. Load average "
        f"{' / '.join(map(str, m['load_average_at_start']))} at start, "
        f"{' / '.join(map(str, m.get('load_average_at_end', [])))} at end.",
        f"wrk: {s['connections']} connections, {s['wrk_threads']} threads, {s['duration_s']:g} s per run after "
        f"{s['warmup_s']:g} s of warm-up. 'of ceiling' = req/s over the bare-uWSGI ceiling's, measured in "
        "the same group. CPU = user+system time of all uWSGI processes per request. non-2xx = responses "
        "with status >= 400 (wrk's count; each scenario's first answer is checked first), plus connect, "
        "write and timeout errors. closed = connections the server closed after a response (no keep-alive).",
        "",
        "| group | scenario | req/s | of ceiling | p50 ms | p99 ms | non-2xx | closed | CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group in results["groups"]:
        ceiling = group["ceiling"]
        ceiling_cpu = statistics.mean(run["cpu_ms_per_request"] for run in ceiling["runs"])
        ceiling_p99 = max(run["p99_ms"] for run in ceiling["runs"])
        lines.append(
            f"| {group['title']} | *ceiling* | {ceiling['requests_per_second']:.0f} | 100% | "
            f"{ceiling['runs'][0]['p50_ms']} | {ceiling_p99} | "
            f"{sum(r['non_2xx'] + r['socket_errors'] for r in ceiling['runs'])} | "
            f"{sum(r['closed_by_server'] for r in ceiling['runs'])} | {ceiling_cpu:.3f} |"
        )
        for name, run in group.get("floors", {}).items():
            lines.append(
                f"| {group['title']} | *{FLOORS[name]}* | {run['requests_per_second']:.0f} | "
                f"{run['share_of_ceiling']:.0%} | {run['p50_ms']} | {run['p99_ms']} | "
                f"{run['non_2xx'] + run['socket_errors']} | {run['closed_by_server']} | "
                f"{run['cpu_ms_per_request']} |"
            )
        for name, run in group["scenarios"].items():
            label = name
            if "workers_recycled" in run:
                label += f" ({run['workers_recycled']} recycles)"
            lines.append(
                f"| {group['title']} | {label} | {run['requests_per_second']:.0f} | "
                f"{run['share_of_ceiling']:.0%} | {run['p50_ms']} | {run['p99_ms']} | "
                f"{run['non_2xx'] + run['socket_errors']} | {run['closed_by_server']} | "
                f"{run['cpu_ms_per_request']} |"
            )
    lines += [
        "",
        "| group | cold start ms | RSS MiB at start | RSS MiB after load | PSS MiB after load |",
        "|---|---:|---:|---:|---:|",
    ]
    for group in results["groups"]:
        lines.append(
            f"| {group['title']} | {group['cold_start_ms']} | {group['memory_at_start']['rss_mib']} | "
            f"{group['memory_after_load']['rss_mib']} | {group['memory_after_load']['pss_mib']} |"
        )
    if "cold_start" in results:
        cold = results["cold_start"]
        lines += [
            "",
            f"Cold start at processes=2, {len(cold['start_server_to_first_200_ms'])} starts: start_server.sh "
            f"launched to first 200: {cold['start_server_to_first_200_ms']} ms (median "
            f"{cold['median_start_server_ms']}); uWSGI master started to first 200: "
            f"{cold['uwsgi_master_to_first_200_ms']} ms (median {cold['median_uwsgi_ms']}).",
        ]
    if results.get("size_comparisons"):
        lines += [
            "",
            "Page vs table size, the two services side by side, runs alternated (small, large, small, large):",
            "",
            "| database | scenario | rows | CPU ms/req | req/s | large / small CPU |",
            "|---|---|---|---:|---:|---:|",
        ]
        for comparison in results["size_comparisons"]:
            for name, measured in comparison["scenarios"].items():
                rows = f"{thousands(comparison['small_rows'])} / {thousands(comparison['large_rows'])}"
                cpu = " / ".join(str(x) for x in measured["cpu_ms_per_request"])
                rate = " / ".join(f"{x:.0f}" for x in measured["requests_per_second"])
                lines.append(
                    f"| {comparison['title']} | {name} | {rows} | {cpu} | {rate} | "
                    f"{measured['cpu_ratio_large_to_small']:.2f} |"
                )
    for group in results["groups"]:
        if "link" in group:
            lines += latency_lines(group)
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for target in results["targets"]:
        lines.append(
            f"| {target['target']} | {target['measured']} | {'yes' if target['met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def latency_lines(group: dict) -> list[str]:
    """The latency group's one-connection runs beside SQLite's, counted in round trips."""
    link = group["link"]
    round_trip = link["select_1_round_trip"]
    lines = [
        "",
        f"{group['title']}: delayed by {link['delayed_by']}. One "
        f"round trip of the link, `SELECT 1` on one connection of a Python client, "
        f"{round_trip['samples']} times: "
        f"median {round_trip['median_ms']} ms (min {round_trip['min_ms']}, p99 {round_trip['p99_ms']}). "
        "At one connection a request waits for nothing but itself (at 32, p50 is mostly the queue for "
        "the 2 workers); SQLite with the same rows and no network is the reference:",
        "",
        "| scenario | over the link: req/s | p50 ms | p99 ms | CPU ms/req | SQLite: req/s | p50 ms | p99 ms "
        "| CPU ms/req | SQLite p50 + one round trip | round trips beyond SQLite's p50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in group["one_connection"].items():
        reference = group["sqlite_one_connection"][name]
        beyond = latency.round_trips_beyond(run["p50_ms"], reference["p50_ms"], round_trip["median_ms"])
        lines.append(
            f"| {name}, 1 connection | {run['requests_per_second']:.0f} | {run['p50_ms']} | {run['p99_ms']} | "
            f"{run['cpu_ms_per_request']} | {reference['requests_per_second']:.0f} | {reference['p50_ms']} | "
            f"{reference['p99_ms']} | {reference['cpu_ms_per_request']} | "
            f"{reference['p50_ms'] + round_trip['median_ms']:.2f} | {beyond} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
