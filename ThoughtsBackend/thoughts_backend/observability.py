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

uWSGI replaces workers (max-requests, max-worker-lifetime, reload-on-rss), and each new
worker writes new files. A scrape reads every file, so they must not pile up: measured
here, the files of 100 replaced workers made a scrape take over a second. A worker that
exits therefore folds its counts into one archive file per metric type.
"""

import atexit
import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import sys
import time

from flask import Flask, Response, g, has_request_context, request
from flask.logging import default_handler
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from .config import ConfigError

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_ENVIRON_KEY = "HTTP_X_REQUEST_ID"
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
    """A log record as one line of JSON; a traceback goes inside it, as one string.

    It writes a line for every request (the access record), so it is kept cheap: the
    date and time to the second are formatted once per second, not once per record.
    """

    encoder = json.JSONEncoder(default=str)

    def __init__(self):
        super().__init__()
        self._second = (None, "")  # (whole seconds since the epoch, its UTC text): one tuple, swapped whole

    def timestamp(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond: 2024-05-01T12:00:00.123Z."""
        whole = int(created)
        second, text = self._second
        if whole != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, text)
        return f"{text}.{int((created - whole) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            # Which worker: uWSGI names workers by pid in its own messages (respawn, harakiri).
            "pid": record.process,
        }
        # The access record carries its request id; other records written during a request
        # take the request's.
        request_id = record.__dict__.get("request_id")
        if request_id is None and has_request_context():
            request_id = g.get("request_id")
        if request_id is not None:
            entry["request_id"] = request_id
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
        encode, content_type = choose_encoder(accept_header)
        if not self.multiprocess_directory:
            return encode(self.registry), content_type
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_directory)
        # Shared: scrapes run side by side, never while an exiting worker archives its files.
        with directory_lock(self.multiprocess_directory, fcntl.LOCK_SH):
            return encode(registry), content_type


# The metric types this module writes; their files are the ones archived.
ARCHIVED_TYPES = ("counter", "histogram")
ARCHIVE_NAME = "archive"
LOCK_FILE_NAME = "archive.lock"


@contextlib.contextmanager
def directory_lock(directory: str, operation: int):
    with open(os.path.join(directory, LOCK_FILE_NAME), "a") as lock:
        fcntl.flock(lock, operation)
        yield


def at_process_exit(function) -> None:
    """Run `function` when this process ends normally.

    Under uWSGI, uwsgi.atexit: with skip-atexit-teardown (uwsgi.ini sets it) a worker skips
    Python's atexit functions, but uWSGI calls uwsgi.atexit at every graceful exit.
    """
    try:
        import uwsgi  # exists only inside uWSGI
    except ImportError:
        atexit.register(function)
        return
    previous = getattr(uwsgi, "atexit", None)

    def run_all():
        try:
            function()
        finally:
            if previous is not None:
                previous()

    uwsgi.atexit = run_all


def archive_process_files(directory: str, pid: int | None = None) -> None:
    """Fold a process's counts into <type>_archive.db, and remove its own files.

    Runs at a worker's exit, when uWSGI recycles or stops it gracefully; a worker killed
    outright, or busy at its exit, leaves its files, which are still counted. The exclusive
    lock keeps scrapes out, so that no scrape sees a count twice or not at all.
    """
    pid = pid or os.getpid()
    with directory_lock(directory, fcntl.LOCK_EX):
        for metric_type in ARCHIVED_TYPES:
            own = os.path.join(directory, f"{metric_type}_{pid}.db")
            if not os.path.exists(own):
                continue
            archive = os.path.join(directory, f"{metric_type}_{ARCHIVE_NAME}.db")
            sources = [own, archive] if os.path.exists(archive) else [own]
            # Not a *.db name: scrapes ignore it until it replaces the archive.
            staging = f"{archive}.new"
            with contextlib.suppress(FileNotFoundError):
                os.remove(staging)
            merged = MmapedDict(staging)
            try:
                # accumulate=False: histogram buckets stay as stored, not cumulative.
                for metric in MultiProcessCollector.merge(sources, accumulate=False):
                    for sample in metric.samples:
                        key = mmap_key(
                            metric.name,
                            sample.name,
                            list(sample.labels),
                            list(sample.labels.values()),
                            metric.documentation,
                        )
                        merged.write_value(key, sample.value, 0.0)
            finally:
                merged.close()
            os.replace(staging, archive)
            os.remove(own)


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
    """The caller's id when it is sane, else 32 random hex digits (as many as a uuid4's)."""
    if header_value and VALID_REQUEST_ID.fullmatch(header_value):
        return header_value
    return os.urandom(16).hex()


def init_app(app: Flask) -> None:
    """JSON logs, request ids, the access log and /metrics for `app`. create_app calls it
    first: its hooks then time, log and count every request, those refused by later hooks too."""
    configure_logging(app)
    metrics = RequestMetrics()
    if metrics.multiprocess_directory:
        # Registered in the master; each forked worker inherits it and runs it with its own pid.
        at_process_exit(functools.partial(archive_process_files, metrics.multiprocess_directory))
    access_logger = logging.getLogger(ACCESS_LOGGER)

    @app.before_request
    def start_request():
        # The header straight from the WSGI environ: the same value as request.headers gives.
        request_id = request_id_from(request.environ.get(REQUEST_ID_ENVIRON_KEY))
        context = g._get_current_object()
        context.request_id = request_id
        context.request_started = time.perf_counter()

    @app.after_request
    def finish_request(response: Response) -> Response:
        # Each proxy (request, g) is looked up once: every lookup costs a context variable read.
        context = g._get_current_object()
        current = request._get_current_object()
        # Present even if another before_request hook failed before ours ran.
        started = getattr(context, "request_started", None) or time.perf_counter()
        seconds = time.perf_counter() - started
        request_id = getattr(context, "request_id", None)
        if request_id is None:
            request_id = context.request_id = request_id_from(None)
        response.headers[REQUEST_ID_HEADER] = request_id

        status = response.status_code
        rule = current.url_rule
        route = rule.rule if rule is not None else UNMATCHED_ROUTE
        unmeasured = route in UNMEASURED_ROUTES
        if unmeasured and status < 400:
            return response
        method, path = current.method, current.path
        if not unmeasured:
            metrics.observe(method if method in KNOWN_METHODS else OTHER_METHOD, route, status, seconds)
        if access_logger.isEnabledFor(logging.INFO):
            # Logger.info without its search of the call stack for the caller's file and
            # line, which no handler here writes: the record goes through the same level
            # checks, filters and handlers.
            fields = {
                "request_id": request_id,
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "remote_addr": current.remote_addr,
            }
            record = access_logger.makeRecord(
                ACCESS_LOGGER,
                logging.INFO,
                __file__,
                0,
                "%s %s %s",
                (method, path, status),
                None,
                extra=fields,
            )
            access_logger.handle(record)
        return response

    @app.route(METRICS_PATH, methods=["GET"])
    def prometheus_metrics():
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        return Response(body, headers={"Content-Type": content_type})
