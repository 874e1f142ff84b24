"""JSON logs, request ids and /metrics, through the Flask test client.

The multi-worker side (several uWSGI processes, one counter) is in test_metrics_multiprocess.py.
"""

import importlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import current_app
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from thoughts_backend.app import create_app
from thoughts_backend.observability import ACCESS_LOGGER, REQUEST_ID_HEADER, JsonFormatter, StdoutHandler

CODE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def database_url(tmp_path):
    """Logs and metrics don't depend on the database engine: SQLite is enough here."""
    return f"sqlite:///{tmp_path / 'db.sqlite3'}"


def log_records(capsys) -> list[dict]:
    """What the app wrote to stdout; a line that is not one JSON object fails the test."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def access_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r["logger"] == "thoughts_backend.access"]


def scrape(client) -> dict:
    """{(sample name, frozenset of labels): value} from /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def request_count(samples: dict, method: str, route: str, status: int) -> float:
    key = (
        "http_requests_total",
        frozenset({"method": method, "route": route, "status": str(status)}.items()),
    )
    return samples.get(key, 0)


def requests_counted(samples: dict) -> list[dict]:
    return [dict(labels) for (name, labels) in samples if name == "http_requests_total"]


# --- request ids --------------------------------------------------------------------------


def test_a_request_without_an_id_gets_a_new_one(client):
    first = client.get("/api/thoughts/").headers[REQUEST_ID_HEADER]
    second = client.get("/api/thoughts/").headers[REQUEST_ID_HEADER]
    assert len(first) == 32
    assert int(first, 16) >= 0
    assert first != second


def test_an_incoming_request_id_is_kept_and_echoed(client, capsys):
    request_id = "edge-7f3a:trace/42_x.Y"
    response = client.get("/api/thoughts/", headers={REQUEST_ID_HEADER: request_id})
    assert response.headers[REQUEST_ID_HEADER] == request_id
    (record,) = access_records(log_records(capsys))
    assert record["request_id"] == request_id


@pytest.mark.parametrize(
    "bad_id",
    ["", "x" * 129, "two words", "tab\there", "caf\u00e9", "\x7f"],
    ids=["empty", "too-long", "space", "tab", "non-ascii", "delete-char"],
)
def test_an_unusable_request_id_is_replaced(client, bad_id):
    echoed = client.get("/api/thoughts/", headers={REQUEST_ID_HEADER: bad_id}).headers[REQUEST_ID_HEADER]
    assert echoed != bad_id
    assert len(echoed) == 32


def test_quotes_in_a_request_id_are_kept_and_escaped_in_the_log(client, capsys):
    request_id = "quote\"d'"
    assert client.get("/api/thoughts/", headers={REQUEST_ID_HEADER: request_id}).headers[
        REQUEST_ID_HEADER
    ] == (request_id)
    (record,) = access_records(log_records(capsys))
    assert record["request_id"] == request_id


def test_the_longest_accepted_request_id_is_kept(client):
    request_id = "r" * 128
    assert client.get("/api/thoughts/", headers={REQUEST_ID_HEADER: request_id}).headers[
        REQUEST_ID_HEADER
    ] == (request_id)


def test_errors_carry_the_request_id_too(client):
    response = client.get("/no/such/page", headers={REQUEST_ID_HEADER: "lost-1"})
    assert response.status_code == 404
    assert response.headers[REQUEST_ID_HEADER] == "lost-1"


# --- logs ---------------------------------------------------------------------------------


def test_each_request_writes_one_json_access_record(client, capsys):
    before = datetime.now(UTC)
    response = client.get("/api/thoughts/?search=private-words", headers={REQUEST_ID_HEADER: "req-1"})
    records = log_records(capsys)
    (record,) = access_records(records)
    assert record["level"] == "INFO"
    assert record["message"] == "GET /api/thoughts/ 200"
    assert record["request_id"] == "req-1" == response.headers[REQUEST_ID_HEADER]
    assert record["method"] == "GET"
    assert record["path"] == "/api/thoughts/"
    assert record["route"] == "/api/thoughts/"
    assert record["status"] == 200
    assert record["remote_addr"] == "127.0.0.1"
    assert record["pid"] == os.getpid()
    assert isinstance(record["duration_ms"], float)
    assert 0 < record["duration_ms"] < 10_000
    logged_at = datetime.fromisoformat(record["timestamp"])
    assert record["timestamp"].endswith("Z")
    assert before.replace(microsecond=0) <= logged_at <= datetime.now(UTC)
    # The query string can hold what users typed: it stays out of the logs.
    assert "private-words" not in json.dumps(records)


def test_a_write_is_logged_with_its_status(client, auth, capsys):
    client.post("/api/me/thoughts/", json={"text": "logged"}, headers=auth("alice"))
    (record,) = access_records(log_records(capsys))
    assert (record["method"], record["path"], record["status"]) == ("POST", "/api/me/thoughts/", 201)


def test_app_log_records_during_a_request_carry_its_id(app, client, capsys):
    def noisy():
        current_app.logger.info("working on it")
        return {"done": True}

    app.add_url_rule("/noisy", "noisy", noisy)
    client.get("/noisy", headers={REQUEST_ID_HEADER: "req-noisy"})
    records = log_records(capsys)
    (note,) = [r for r in records if r["message"] == "working on it"]
    assert note["logger"] == "thoughts_backend"
    assert note["level"] == "INFO"
    assert note["request_id"] == "req-noisy"


def test_an_unexpected_error_logs_its_traceback_inside_one_json_record(client, monkeypatch, capsys):
    """A flask-restx route: the error is answered 500 and logged once, as one line."""

    def broken_page(*_args):
        raise RuntimeError("the page broke")

    monkeypatch.setattr(importlib.import_module("thoughts_backend.api_namespace"), "page_of", broken_page)
    response = client.get("/api/thoughts/", headers={REQUEST_ID_HEADER: "req-boom"})
    assert response.status_code == 500
    assert "the page broke" not in response.get_data(as_text=True)

    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    (error,) = [r for r in records if r["level"] == "ERROR"]
    assert error["request_id"] == "req-boom"
    assert error["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: the page broke" in error["exception"]
    assert "broken_page" in error["exception"]
    (access,) = access_records(records)
    assert access["status"] == 500
    # Nothing multi-line anywhere else: Flask's own stderr handler is gone.
    assert "Traceback" not in captured.err


def test_an_error_outside_flask_restx_routes_is_logged_the_same_way(app, client, capsys):
    def explode():
        raise ZeroDivisionError("plain route")

    app.add_url_rule("/explode", "explode", explode)
    assert client.get("/explode").status_code == 500
    records = log_records(capsys)
    (error,) = [r for r in records if r["level"] == "ERROR"]
    assert "ZeroDivisionError: plain route" in error["exception"]
    assert error["request_id"] == access_records(records)[0]["request_id"]


def test_successful_probes_and_scrapes_are_not_logged(client, capsys):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    assert access_records(log_records(capsys)) == []


def test_a_failing_readiness_probe_is_logged(client, monkeypatch, capsys):
    operations = importlib.import_module("thoughts_backend.operations_namespace")
    monkeypatch.setattr(operations, "text", lambda _sql: text("SELECT no_such_column"))
    assert client.get("/readyz").status_code == 503
    (record,) = access_records(log_records(capsys))
    assert (record["path"], record["status"]) == ("/readyz", 503)


def test_timestamps_are_utc_to_the_millisecond_within_and_across_seconds():
    formatter = JsonFormatter()
    second = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp()
    assert [formatter.timestamp(t) for t in (second, second + 0.0456, second + 0.9999, second + 1.5)] == [
        "2024-02-29T23:59:59.000Z",
        "2024-02-29T23:59:59.045Z",
        "2024-02-29T23:59:59.999Z",
        "2024-03-01T00:00:00.500Z",
    ]


def test_the_access_log_obeys_the_logging_configuration(client, capsys):
    """The access record goes through logging's levels and filters, like any record."""
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.WARNING)
    try:
        client.get("/api/thoughts/")
        assert access_records(log_records(capsys)) == []
    finally:
        access.setLevel(logging.NOTSET)
    kept = []
    access.addFilter(kept.append)  # a filter that records, and drops, every record
    try:
        client.get("/api/thoughts/", headers={REQUEST_ID_HEADER: "req-filtered"})
        assert access_records(log_records(capsys)) == []
    finally:
        access.removeFilter(kept.append)
    (record,) = kept
    assert (record.getMessage(), record.request_id) == ("GET /api/thoughts/ 200", "req-filtered")


def test_library_warnings_are_json_too(app, capsys):
    logging.getLogger("some.library").warning("disk %s", "nearly full")
    (record,) = log_records(capsys)
    assert (record["logger"], record["level"], record["message"]) == (
        "some.library",
        "WARNING",
        "disk nearly full",
    )
    assert "request_id" not in record


def test_what_the_start_logs_is_json_on_standard_output_too(tmp_path):
    """In a new process, as uWSGI's master starts: the token keys' warning about an identity
    provider that does not answer yet is a JSON record on standard output like any other."""
    with socket.socket() as unused:  # a port that nothing listens on: the fetch is refused
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    settings = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "JWKS_URL": f"{url}/jwks",
        "TOKEN_ISSUER": url,
        "TOKEN_AUDIENCE": "api",
    }
    program = f"from thoughts_backend.app import create_app; create_app({settings!r})"
    started = subprocess.run(
        [sys.executable, "-c", program], cwd=CODE_DIR, capture_output=True, text=True, timeout=60, check=True
    )
    assert started.stderr == ""
    records = [json.loads(line) for line in started.stdout.splitlines()]
    assert [(record["logger"], record["level"]) for record in records] == [
        ("thoughts_backend.token_keys", "WARNING")
    ], records
    assert "token keys not refreshed" in records[0]["message"]


def test_building_apps_again_keeps_one_log_handler(app_overrides, capsys):
    create_app(app_overrides)
    create_app(app_overrides)
    ours = [h for h in logging.getLogger().handlers if isinstance(h, StdoutHandler)]
    assert len(ours) == 1
    logging.getLogger("some.library").warning("once")
    assert len(log_records(capsys)) == 1


# --- metrics ------------------------------------------------------------------------------


def test_metrics_are_prometheus_text(client):
    client.get("/api/thoughts/")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    body = response.get_data(as_text=True)
    assert "# TYPE http_requests_total counter" in body
    assert "# TYPE http_request_duration_seconds histogram" in body


def test_metrics_speak_openmetrics_when_asked(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_requests_are_counted_by_route_template_not_by_path(client, post_thought):
    thought = post_thought("counted")
    for thought_id in (thought["id"], thought["id"], 999_998, 999_999):
        client.get(f"/api/thoughts/{thought_id}/")
    samples = scrape(client)
    route = "/api/thoughts/<int:thought_id>/"
    assert request_count(samples, "GET", route, 200) == 2
    assert request_count(samples, "GET", route, 404) == 2
    assert request_count(samples, "POST", "/api/me/thoughts/", 201) == 1
    assert not any(str(thought["id"]) in labels["route"] for labels in requests_counted(samples))


def test_the_latency_histogram_agrees_with_the_counter(client):
    for _ in range(3):
        client.get("/version")
    samples = scrape(client)
    labels = frozenset({"method": "GET", "route": "/version", "status": "200"}.items())
    assert samples[("http_requests_total", labels)] == 3
    assert samples[("http_request_duration_seconds_count", labels)] == 3
    assert samples[("http_request_duration_seconds_bucket", labels | {("le", "+Inf")})] == 3
    assert 0 < samples[("http_request_duration_seconds_sum", labels)] < 30


def test_unknown_paths_and_methods_share_one_series(client):
    for path in ("/wp-admin/1", "/wp-admin/2", "/.env", "/api/thoughts/not-a-number/"):
        assert client.get(path).status_code == 404
    assert client.open("/api/thoughts/", method="BREW").status_code == 405
    assert client.open("/api/thoughts/", method="PURGE").status_code == 405
    samples = scrape(client)
    assert request_count(samples, "GET", "<unmatched>", 404) == 4
    assert request_count(samples, "OTHER", "<unmatched>", 405) == 2
    assert len(requests_counted(samples)) == 2


def test_probes_and_scrapes_are_not_counted(client):
    for path in ("/healthz", "/readyz", "/metrics", "/metrics"):
        client.get(path)
    assert requests_counted(scrape(client)) == []


def test_each_app_counts_its_own_requests(app_overrides, client):
    client.get("/version")
    other = create_app(app_overrides).test_client()
    assert requests_counted(scrape(other)) == []
    assert request_count(scrape(client), "GET", "/version", 200) == 1


# --- multiprocess settings ----------------------------------------------------------------


def start_app_with(
    environment: dict, public_pem: str, tmp_path, requests: tuple[str, ...] = ("/version",)
) -> subprocess.CompletedProcess:
    """A fresh interpreter, so that prometheus_client sees the environment at its import.

    It answers `requests` through the test client, prints /metrics and exits, as a worker would.
    """
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"PUBLIC_KEY": public_pem, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env |= environment
    script = (
        "from thoughts_backend.app import create_app\n"
        "client = create_app().test_client()\n"
        f"for path in {list(requests)!r}:\n"
        "    client.get(path)\n"
        "print(client.get('/metrics').get_data(as_text=True))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=CODE_DIR, env=env, capture_output=True, text=True, timeout=60
    )


def parse_metrics(text: str) -> dict:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_multiprocess_mode_counts_in_the_directory(tmp_path, public_pem):
    directory = tmp_path / "metrics"
    directory.mkdir()
    result = start_app_with({"PROMETHEUS_MULTIPROC_DIR": str(directory)}, public_pem, tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'http_requests_total{method="GET",route="/version",status="200"} 1.0' in result.stdout


def test_an_exiting_process_folds_its_counts_into_the_archive(tmp_path, public_pem):
    """Two "workers" live and exit one after the other; a third still sees every count, exactly."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    environment = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for requests in (("/version",) * 3, ("/version", "/version", "/nowhere")):
        result = start_app_with(environment, public_pem, tmp_path, requests)
        assert result.returncode == 0, result.stderr
        # Only the archive is left: no file per dead process for every scrape to read.
        assert sorted(p.name for p in directory.glob("*.db")) == [
            "counter_archive.db",
            "histogram_archive.db",
        ]

    samples = parse_metrics(start_app_with(environment, public_pem, tmp_path, ()).stdout)
    version = frozenset({"method": "GET", "route": "/version", "status": "200"}.items())
    unmatched = frozenset({"method": "GET", "route": "<unmatched>", "status": "404"}.items())
    assert samples[("http_requests_total", version)] == 5
    assert samples[("http_requests_total", unmatched)] == 1
    # Buckets are archived as stored: added up again at each scrape, they still end at the count.
    assert samples[("http_request_duration_seconds_count", version)] == 5
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "http_request_duration_seconds_bucket" and labels - {("le", dict(labels)["le"])} == version
    )
    assert buckets[-1] == (float("inf"), 5)
    assert all(lower[1] <= upper[1] for lower, upper in itertools.pairwise(buckets))
    assert 0 < samples[("http_request_duration_seconds_sum", version)] < 30


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/no/such/directory", "PROMETHEUS_MULTIPROC_DIR (/no/such/directory) is not a writable directory"),
        ("", "PROMETHEUS_MULTIPROC_DIR is empty"),
    ],
)
def test_a_bad_multiprocess_directory_stops_the_start(tmp_path, public_pem, value, expected):
    result = start_app_with({"PROMETHEUS_MULTIPROC_DIR": value}, public_pem, tmp_path)
    assert result.returncode != 0
    assert f"ConfigError: {expected}" in result.stderr
