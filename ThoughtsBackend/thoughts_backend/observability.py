"""Logs and metrics: one JSON object per line on stdout, and /metrics for Prometheus.

Every request gets an id: the caller's X-Request-ID when it is sane, else a new one. It is
echoed in the response, and every log record written while the request runs carries it.
Each answered request writes one access record (method, path, status, duration) and counts
in two Prometheus metrics labelled by method, route template and status.

Under uWSGI several worker processes answer requests. prometheus_client's multiprocess
mode, switched on by PROMETHEUS_MULTIPROC_DIR (an empty directory, set before the process
starts), has each worker write its values to files there, and /metrics adds them up, so
whichever worker answers the scrape reports the whole service. Without the variable
(tests, `flask run`) the values live in the process.
"""

import json
import logging
import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request
from flask.logging import default_handler
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .config import ConfigError

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
# Visible ASCII only: an id is echoed in a header and searched for in logs, so no spaces,
# control characters or anything a terminal or a log shipper might interpret.
VALID_REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_LENGTH}}}")

METRICS_PATH = "/metrics"
# Probes and scrapes come every few seconds: counting or logging each would drown the
# requests people care about. They are logged only when they fail.
UNMEASURED_ROUTES = frozenset({"/healthz", "/readyz", METRICS_PATH})
# Label values must come from small fixed sets, or every scanner's made-up path or method
# would create new time series.
UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"

ACCESS_LOGGER = "thoughts_backend.access"
ACCESS_FIELDS = ("method", "path", "route", "status", "duration_ms", "remote_addr")


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON; a traceback goes inside it, as one string."""

    encoder = json.JSONEncoder(default=str)

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context() and "request_id" in g:
            entry["request_id"] = g.request_id
        for field in ACCESS_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return self.encoder.encode(entry)


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a record comes (a test may have replaced it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(app: Flask) -> None:
    """Send every log record, the libraries' too, to stdout as JSON; the app's from INFO up.

    Idempotent: building a second app in the same process replaces the handler, not adds one.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StdoutHandler)]:
        root.removeHandler(handler)
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    # The root logger stays at WARNING: at INFO, SQLAlchemy would log every statement.
    app.logger.removeHandler(default_handler)
    if app.logger.level == logging.NOTSET:
        app.logger.setLevel(logging.INFO)


class RequestMetrics:
    """http_requests_total and http_request_duration_seconds, by method, route and status."""

    def __init__(self):
        self.multiprocess_directory = multiprocess_directory()
        # A registry per app, so that two apps in one process (tests) count apart.
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("method", "route", "status")
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            labels,
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from the request reaching the app to its response, by method, route template and status",
            labels,
            registry=self.registry,
        )
        # The labelled children, kept to skip prometheus_client's label checks on each request.
        # As small as the label sets are: known methods, route templates, statuses.
        self.children: dict[tuple, tuple] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self.children.get(key)
        if children is None:
            children = self.children[key] = (self.requests.labels(*key), self.duration.labels(*key))
        count, duration = children
        count.inc()
        duration.observe(seconds)

    def exposition(self, accept_header: str | None) -> tuple[bytes, str]:
        """The metrics in the format the scraper asked for, and its content type."""
        registry = self.registry
        if self.multiprocess_directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_directory)
        encode, content_type = choose_encoder(accept_header)
        return encode(registry), content_type


def multiprocess_directory() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR, checked: a bad one fails at start, not at the first request."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # prometheus_client chose its storage when first imported: the variable must have
    # been set (or unset) before that, in the environment the process started with.
    multiprocess = getattr(values.ValueClass, "_multiprocess", False)
    if directory is None:
        if multiprocess:
            raise ConfigError("PROMETHEUS_MULTIPROC_DIR was unset after the process started; set it before")
        return None
    if not directory:
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR is empty; unset it (one process) or set it to an empty "
            "directory the workers can write (several uWSGI workers)"
        )
    if not multiprocess:
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR was set after the process started; set it in the "
            "environment uWSGI starts with"
        )
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR ({directory}) is not a writable directory; create it, "
            "empty, before the workers start (start_server.sh does)"
        )
    return directory


def request_id_from(header_value: str | None) -> str:
    if header_value and VALID_REQUEST_ID.fullmatch(header_value):
        return header_value
    return uuid.uuid4().hex


def init_observability(app: Flask) -> None:
    """JSON logs, request ids, the access log and /metrics for `app`. Call it first in the factory."""
    configure_logging(app)
    metrics = RequestMetrics()
    access_logger = logging.getLogger(ACCESS_LOGGER)

    @app.before_request
    def start_request():
        g.request_started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))

    @app.after_request
    def finish_request(response: Response) -> Response:
        # Present even if another before_request hook failed before ours ran.
        started = g.get("request_started") or time.perf_counter()
        seconds = time.perf_counter() - started
        if "request_id" not in g:
            g.request_id = request_id_from(None)
        response.headers[REQUEST_ID_HEADER] = g.request_id

        status = response.status_code
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED_ROUTE
        unmeasured = route in UNMEASURED_ROUTES
        if unmeasured and status < 400:
            return response
        method, path = request.method, request.path
        if not unmeasured:
            metrics.observe(method if method in KNOWN_METHODS else OTHER_METHOD, route, status, seconds)
        access_logger.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "remote_addr": request.remote_addr,
            },
        )
        return response

    @app.route(METRICS_PATH, methods=["GET"])
    def prometheus_metrics():
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        return Response(body, headers={"Content-Type": content_type})
