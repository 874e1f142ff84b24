"""Observability under real uWSGI with two workers, started by start_server.sh.

/metrics counts every request once, whichever worker served it or answers the scrape; the
output has one JSON access record per request, with the id the response carried.
"""

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..support import wait_for
from ..uwsgi_process import ServedApp

LOG_WAIT_SECONDS = 10
RELOAD_WAIT_SECONDS = 30
STOP_WAIT_SECONDS = 30

REQUESTS = 300
CLIENT_THREADS = 8
SCRAPES = 6


@pytest.fixture
def metrics_directory(tmp_path) -> Path:
    return tmp_path / "prometheus"


def service_environment(tmp_path, public_key_file, metrics_directory) -> dict:
    return {
        "PUBLIC_KEY_FILE": str(public_key_file),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_directory),
    }


@pytest.fixture
def service(tmp_path, public_key_file, metrics_directory):
    with ServedApp(service_environment(tmp_path, public_key_file, metrics_directory), processes=2) as served:
        yield served


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    return get_with_headers(url, headers)[:2]


def get_with_headers(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def scrape(base_url: str) -> dict:
    """{(sample name, frozenset of labels): value}."""
    status, body = get(f"{base_url}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def send_concurrently(urls: list[str]) -> list[int]:
    with concurrent.futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return [status for status, _body in pool.map(get, urls)]


def test_two_workers_count_every_request_exactly_once(service, metrics_directory):
    base = service.url
    # Two routes and two statuses, with ids in the path: the series are per template.
    urls = [
        f"{base}/version" if i % 3 else f"{base}/api/thoughts/{1000 + i}/"  # unknown ids: 404
        for i in range(REQUESTS)
    ]
    statuses = send_concurrently(urls)
    expected_version = sum(1 for url in urls if url.endswith("/version"))
    expected_missing = REQUESTS - expected_version
    assert statuses.count(200) == expected_version
    assert statuses.count(404) == expected_missing

    # Both workers served, so both wrote their own files: the sum must still be exact.
    writers = {int(path.stem.rsplit("_", 1)[1]) for path in metrics_directory.glob("counter_*.db")}
    workers = set(service.worker_pids().values())
    assert len(workers) == 2
    assert writers == workers, f"only {writers} of {workers} counted: the load did not reach both workers"

    version = frozenset({"method": "GET", "route": "/version", "status": "200"}.items())
    missing = frozenset(
        {"method": "GET", "route": "/api/thoughts/<int:thought_id>/", "status": "404"}.items()
    )
    # Whichever worker answers the scrape reports the whole service; scrapes aren't counted.
    for _ in range(SCRAPES):
        samples = scrape(base)
        assert samples[("http_requests_total", version)] == expected_version
        assert samples[("http_requests_total", missing)] == expected_missing
        assert samples[("http_request_duration_seconds_count", version)] == expected_version
        assert (
            samples[("http_request_duration_seconds_bucket", missing | {("le", "+Inf")})] == expected_missing
        )
        assert sum(v for (name, _), v in samples.items() if name == "http_requests_total") == REQUESTS


def leave_counts_of_a_previous_run(directory: Path, count: int) -> None:
    """What a killed run leaves behind: a worker's counter file, written by prometheus_client."""
    directory.mkdir(parents=True, exist_ok=True)
    script = (
        "from prometheus_client import Counter\n"
        "requests = Counter('http_requests', 'old', ('method', 'route', 'status'))\n"
        f"requests.labels('GET', '/version', '200').inc({count})\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=True,
        timeout=60,
    )
    assert list(directory.glob("counter_*.db"))


def test_a_new_start_does_not_count_the_previous_runs_requests(tmp_path, public_key_file, metrics_directory):
    """start_server.sh empties PROMETHEUS_MULTIPROC_DIR: old files would be added up again."""
    leave_counts_of_a_previous_run(metrics_directory, 1000)
    with ServedApp(service_environment(tmp_path, public_key_file, metrics_directory)) as served:
        assert served.get("/version")[0] == 200
        version = frozenset({"method": "GET", "route": "/version", "status": "200"}.items())
        assert scrape(served.url)[("http_requests_total", version)] == 1


def access_records(service: ServedApp) -> list[dict]:
    return [
        record
        for record in (json.loads(line) for line in service.output.splitlines() if line.startswith("{"))
        if record["logger"] == "thoughts_backend.access"
    ]


def access_records_for(service: ServedApp, request_ids: set[str]) -> dict[str, list[dict]]:
    """The JSON access records of these requests in the output, once all have been written."""

    def all_written() -> dict[str, list[dict]] | None:
        found: dict[str, list[dict]] = {request_id: [] for request_id in request_ids}
        for record in access_records(service):
            if record.get("request_id") in found:
                found[record["request_id"]].append(record)
        return found if all(found.values()) else None

    return wait_for(all_written, LOG_WAIT_SECONDS, f"an access record for each of {sorted(request_ids)}")


def everything_written(service: ServedApp) -> str:
    """The whole output once the service has stopped, so every worker has written out all it
    logs after its responses. (Waiting for each worker to serve a later request does not work:
    which worker accepts the next connection is up to the kernel, and one may get them all.)"""
    service.stop()
    assert service.wait(STOP_WAIT_SECONDS) == 0
    return service.output


def plain_lines(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if not line.startswith("{"))


def test_each_request_is_one_json_access_record_in_the_output(service):
    marker = uuid.uuid4().hex
    requests = {f"ok-{marker}-{i}": "/version" for i in range(10)}
    requests |= {f"search-{marker}": f"/api/thoughts/?search={marker}"}
    for request_id, path in requests.items():
        status, _body, headers = get_with_headers(service.url + path, {"X-Request-ID": request_id})
        assert status == 200
        assert headers["X-Request-ID"] == request_id

    found = access_records_for(service, set(requests))
    for request_id, path in requests.items():
        (record,) = found[request_id]
        assert (record["method"], record["path"], record["status"]) == ("GET", path.split("?")[0], 200)
        assert record["level"] == "INFO"
        assert record["duration_ms"] > 0
    # Only the app's JSON records speak of these requests: uWSGI's own request line is off
    # (disable-logging), and no query string reaches the log.
    assert marker not in plain_lines(everything_written(service))
    assert all(marker not in record["path"] for records in found.values() for record in records)


def test_an_error_response_is_logged_once_as_json(service):
    marker = uuid.uuid4().hex
    request_id = f"missing-{marker}"
    status = get(f"{service.url}/no/such/{marker}", {"X-Request-ID": request_id})[0]
    assert status == 404
    (record,) = access_records_for(service, {request_id})[request_id]
    assert record["status"] == 404
    assert marker not in plain_lines(everything_written(service))


def wait_for_new_workers(service: ServedApp, old: set[int]) -> set[int]:
    def replaced() -> set[int] | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            current = set(service.worker_pids().values())
            if len(current) == 2 and not current & old and 0 not in current:
                return current
        return None

    return wait_for(replaced, RELOAD_WAIT_SECONDS, f"the workers {old} all replaced", interval=0.1)


def test_replaced_workers_leave_their_counts_but_not_their_files(service, metrics_directory):
    """uWSGI recycles workers (max-requests, lifetime, memory): counts stay, files don't pile up."""
    base = service.url
    assert send_concurrently([f"{base}/version"] * 40).count(200) == 40
    old = set(service.worker_pids().values())
    # A chain reload replaces the workers one by one, as recycling does.
    with open(service.fifo, "w") as fifo:
        fifo.write("c")
    new = wait_for_new_workers(service, old)

    version = frozenset({"method": "GET", "route": "/version", "status": "200"}.items())
    assert scrape(base)[("http_requests_total", version)] == 40
    pids_with_files = {path.stem.rsplit("_", 1)[1] for path in metrics_directory.glob("*.db")}
    assert not pids_with_files & {str(pid) for pid in old}, "a replaced worker's files were left behind"
    assert "archive" in pids_with_files

    assert send_concurrently([f"{base}/version"] * 10).count(200) == 10
    assert set(service.worker_pids().values()) == new
    assert scrape(base)[("http_requests_total", version)] == 50
