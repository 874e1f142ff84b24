"""The load generator of the system tests: client threads that keep sending requests to a
served app, each on a connection of its own, and what each request got.

    def reader(n, previous):                 # the n-th request of a thread, after `previous`
        return "GET", "/api/thoughts/?limit=5", {}

    with Load(service.url, [reader, reader, writer], cap=2000) as load:
        wait_for(lambda: load.count(lambda o: o.status == 200) >= 10, 20, "ten answers")
        ...                                  # a fault, a stop, a roll
    load.snapshot()                          # every Outcome, in the order they ended

A thread stops at the end of the `with` block, after `cap` requests (none by default), after
`seconds` (DEFAULT_SECONDS by default), or
after an outcome for which `stop_when` is true; `load.wait()` waits until they have ended so.
A request maker returns (method, path, kwargs) with kwargs among json=, headers=, params=
and label= (a name the outcome keeps). `send` is one such request, alone.
A connection per request: uWSGI's HTTP router (without http-keepalive) closes each one
after its answer, and a new connection is what spreads the load over instances.
"""

import functools
import http.client
import json as jsonlib  # send's json= (requests' name for a JSON body) would shadow `json`
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 10
# A thread's bound when the caller gives none: in time, not in count. A count ran out early on
# a fast machine (2000 reads in about 5 s), while a fault test still waited for reads after
# the fault (CI: "reads after the worker was replaced within 20 s" failed with no thread left).
DEFAULT_SECONDS = 120


@dataclass
class Outcome:
    """One request, as its client saw it."""

    method: str
    path: str
    started: float
    finished: float = 0.0
    opened: float | None = None  # when connect() returned; None if it did not
    # answered (a whole response), refused (at connect), closed (without a response),
    # incomplete (cut short), hung (no answer within the timeout), error (anything else)
    kind: str = ""
    status: int | None = None
    error: str | None = None  # what happened instead of an answer: "ConnectionRefusedError: ..."
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    sent_text: str | None = None  # the text of a thought it sent
    label: str = ""
    client: int = 0  # the thread that sent it

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 400

    @functools.cached_property
    def json_body(self):
        """The body parsed as JSON (None if it is not JSON), parsed once: waits poll it. Read it
        once the outcome is complete (send returns it so, and Load keeps only those)."""
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            return None

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")


def send(
    base_url: str,
    method: str,
    path: str,
    *,
    json: object = None,
    headers: dict | None = None,
    params: dict | None = None,
    label: str = "",
    timeout: float = REQUEST_TIMEOUT,
) -> Outcome:
    """One request on a new connection, read to its end: its Outcome, whatever happened."""
    url = urllib.parse.urlsplit(base_url)
    if params:
        path += ("&" if "?" in path else "?") + urllib.parse.urlencode(params)
    request_headers = {"Connection": "close", **(headers or {})}
    body = None
    if json is not None:
        body = jsonlib.dumps(json)
        request_headers["Content-Type"] = "application/json"
    sent_text = json.get("text") if isinstance(json, dict) else None
    outcome = Outcome(method, path, time.monotonic(), sent_text=sent_text, label=label)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        try:
            connection.connect()
        except ConnectionRefusedError as error:
            outcome.kind, outcome.error = "refused", _described(error)
            return outcome
        outcome.opened = time.monotonic()
        connection.request(method, path, body=body, headers=request_headers)
        response = connection.getresponse()
        outcome.status = response.status
        outcome.headers = {name.lower(): value for name, value in response.getheaders()}
        outcome.body = response.read()  # IncompleteRead if it stops short of Content-Length
        outcome.kind = "answered"
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as error:
        outcome.kind, outcome.error, outcome.status = "closed", _described(error), None
    except http.client.IncompleteRead as error:
        outcome.kind, outcome.error, outcome.status = "incomplete", _described(error), None
    except TimeoutError as error:
        outcome.kind, outcome.error, outcome.status = "hung", _described(error), None
    except (OSError, http.client.HTTPException) as error:
        outcome.kind, outcome.error, outcome.status = "error", _described(error), None
    finally:
        connection.close()
        outcome.finished = time.monotonic()
    return outcome


def _described(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


# (n, the thread's previous outcome or None) -> (method, path, kwargs)
RequestMaker = Callable[[int, Outcome | None], tuple[str, str, dict]]


class Load:
    """One thread per request maker, each sending one request after another until stopped."""

    def __init__(
        self,
        base_url: str,
        clients: list[RequestMaker],
        *,
        cap: int | None = None,
        seconds: float | None = DEFAULT_SECONDS,
        stop_when: Callable[[Outcome], bool] | None = None,
        pause_after_no_answer: float = 0.0,
        timeout: float = REQUEST_TIMEOUT,
    ):
        self.base_url = base_url
        self.cap = cap
        self.seconds = seconds
        self.stop_when = stop_when
        # A thread whose request got no HTTP answer waits this long: the server is going or
        # gone, and a thread must not spin on refused connections.
        self.pause_after_no_answer = pause_after_no_answer
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(number, make), daemon=True, name=f"load-{number}")
            for number, make in enumerate(clients)
        ]

    def _run(self, client: int, make_request: RequestMaker) -> None:
        deadline = None if self.seconds is None else time.monotonic() + self.seconds
        previous, n = None, 0
        while not self.stopping.is_set() and (self.cap is None or n < self.cap):
            if deadline is not None and time.monotonic() >= deadline:
                return
            method, path, kwargs = make_request(n, previous)
            with self.lock:
                self.in_flight += 1
            outcome = send(self.base_url, method, path, timeout=self.timeout, **kwargs)
            outcome.client = client
            with self.lock:
                self.in_flight -= 1
                self.outcomes.append(outcome)
            if self.stop_when and self.stop_when(outcome):
                return
            if outcome.status is None and self.pause_after_no_answer:
                self.stopping.wait(self.pause_after_no_answer)
            previous, n = outcome, n + 1

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def wait(self) -> None:
        """Until every thread has ended by itself: after `cap` requests, `seconds`, or an
        outcome for which `stop_when` is true (one of them must bound it)."""
        if self.cap is None and self.seconds is None and self.stop_when is None:
            raise ValueError("nothing ends these threads but stop(): wait() would never return")
        for thread in self.threads:
            thread.join()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(self.timeout + 5)

    def __enter__(self) -> "Load":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    @property
    def all_stopped(self) -> bool:
        return not any(thread.is_alive() for thread in self.threads)

    def count(self, predicate: Callable[[Outcome], bool]) -> int:
        with self.lock:
            return sum(1 for outcome in self.outcomes if predicate(outcome))

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)
