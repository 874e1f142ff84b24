"""CPU per request of the app itself, without uWSGI, HTTP or wrk: for before/after comparisons.

    .venv/bin/python benchmarks/inprocess.py [--code DIR] [--rows 200] [--requests 300]

Calls the WSGI app directly with a prepared environ, in batches, and reports the fastest
batch's CPU time per request (process_time, so other processes' load counts little). Point
--code at another checkout's ThoughtsBackend/ (e.g. `git archive <commit> ThoughtsBackend |
tar -x -C /tmp/old`) to compare two versions on the same machine, back to back.

The metrics are kept as under uWSGI (prometheus_client's multiprocess mode, in a scratch
directory). The floors of floor/wsgi.py (Flask, flask-restx, flask-restx with the service's
request hooks) run last, on the same fixed answer as the ceiling.
"""

import argparse
import atexit
import contextlib
import importlib.util
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def environ_for(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> dict:
    path_info, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        environ["CONTENT_TYPE"] = "application/json"
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def call(app, method, path, body=b"", headers=None) -> str:
    environ = environ_for(method, path, body, headers)
    environ["wsgi.input"] = io.BytesIO(body)
    statuses = []
    chunks = app(environ, lambda status, _headers, _exc=None: statuses.append(status))
    try:
        for _ in chunks:
            pass
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return statuses[0]


def load_floors():
    """floor/wsgi.py under a name of its own (ThoughtsBackend has a wsgi.py too)."""
    spec = importlib.util.spec_from_file_location("bench_floor", HERE / "floor" / "wsgi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, default=HERE.parent / "ThoughtsBackend")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300, help="requests per batch")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    code = args.code.resolve()
    # Before prometheus_client is imported: it picks its storage then. Removed at exit,
    # after the app's own exit function has archived its files there (atexit runs last first).
    metrics_directory = tempfile.mkdtemp(prefix="bench-inprocess-metrics-")
    atexit.register(shutil.rmtree, metrics_directory, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_directory
    sys.path.insert(0, str(code))
    sys.path.insert(0, str(HERE))
    os.chdir(code)
    import seed
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from thoughts_backend.app import create_app
    from thoughts_backend.token_validation import encode_token

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    token = encode_token(seed.BENCH_USER, key, expires_in=3600)
    auth = {"Authorization": f"Bearer {token}"}
    scenarios = {
        "list": ("GET", "/api/thoughts/?limit=200", b"", None),
        "search": ("GET", f"/api/thoughts/?search={seed.SEARCH_WORD}", b"", None),
        "get": ("GET", "/api/thoughts/42/", b"", None),
        "me": ("GET", "/api/me/thoughts/", b"", auth),
        "version (no database)": ("GET", "/version", b"", None),
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as scratch:
        url = seed.seed_sqlite(Path(scratch) / "db.sqlite3", args.rows)
        service = create_app({"DATABASE_URL": url, "PUBLIC_KEY": public_pem}).wsgi_app
        floors = load_floors()
        apps = dict.fromkeys(scenarios, service)
        for floor in floors.FLOORS:
            scenarios[f"floor: {floor}"] = ("GET", floors.PATH, b"", None)
            apps[f"floor: {floor}"] = floors.create_floor(floor).wsgi_app
        # The service logs each request to stdout: keep that cost, send the lines nowhere.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            for name, (method, path, body, headers) in scenarios.items():
                app = apps[name]
                status = call(app, method, path, body, headers)
                if not status.startswith("200"):
                    raise SystemExit(f"{name}: {path} answered {status}")
                for _ in range(50):
                    call(app, method, path, body, headers)
                per_request = []
                for _ in range(args.batches):
                    started = time.process_time()
                    for _ in range(args.requests):
                        call(app, method, path, body, headers)
                    per_request.append((time.process_time() - started) / args.requests * 1e6)
                results[name] = {
                    "fastest_us": round(min(per_request)),
                    "median_us": round(statistics.median(per_request)),
                }
    if args.json:
        print(json.dumps({"code": str(code), "rows": args.rows, "results": results}))
    else:
        print(f"{code} ({args.rows} rows): CPU microseconds per request, fastest / median batch")
        for name, result in results.items():
            print(f"  {name:24} {result['fastest_us']:6} / {result['median_us']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
