"""Slow clients and an ordinary one, against a server on 127.0.0.1 (standard library only).

    with SlowClients(port, count=64, data=head + body, interval=1.0, at_once=len(head)) as slow:
        ...  # meanwhile: ordinary_requests(port, token, seconds=10)
    slow.outcomes  # per connection: how it ended ("closed", "reset", "408", ...) and when

A slow client opens its connection, sends the first `at_once` bytes of `data`, then the
rest one byte every `interval` seconds (a slowloris: a head, or a body, that trickles in). One thread drives them all, and
watches each for an answer or a close; it stops, closing what is left, at `close()`.
"""

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from .load import Load


@dataclass
class SlowOutcome:
    sent: int = 0  # bytes sent
    ended: str = ""  # "closed", "reset", an HTTP status, or "" while still open
    after: float = 0.0  # seconds from the connection's start to its end
    answer: bytes = b""


class SlowClients:
    def __init__(self, port: int, count: int, data: bytes, interval: float = 1.0, at_once: int = 0):
        self.port = port
        self.data = data
        self.at_once = at_once
        self.interval = interval
        self.outcomes = [SlowOutcome() for _ in range(count)]
        self._sockets: list[socket.socket | None] = []
        self._started: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SlowClients":
        for _ in self.outcomes:
            connection = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            connection.sendall(self.data[: self.at_once])
            connection.setblocking(False)
            self._sockets.append(connection)
            self._started.append(time.monotonic())
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self._sockets:
            if connection:
                connection.close()

    @property
    def open(self) -> int:
        return sum(1 for outcome in self.outcomes if not outcome.ended)

    def _end(self, index: int, how: str) -> None:
        outcome = self.outcomes[index]
        if outcome.answer:
            how = outcome.answer.split(b" ", 2)[1].decode(errors="replace")
        outcome.ended = how
        outcome.after = time.monotonic() - self._started[index]
        self._sockets[index].close()
        self._sockets[index] = None

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for index, connection in enumerate(self._sockets):
            selector.register(connection, selectors.EVENT_READ, index)
        next_byte = time.monotonic()
        while not self._stop.is_set():
            timeout = max(0.0, next_byte - time.monotonic())
            for key, _ in selector.select(min(timeout, 0.1)):
                index = key.data
                try:
                    chunk = key.fileobj.recv(65536)
                except ConnectionResetError:
                    chunk, how = b"", "reset"
                else:
                    how = "closed"
                if chunk:
                    self.outcomes[index].answer += chunk
                    continue
                selector.unregister(key.fileobj)
                self._end(index, how)
            if time.monotonic() < next_byte:
                continue
            next_byte += self.interval
            for index, connection in enumerate(self._sockets):
                outcome = self.outcomes[index]
                if connection is None or outcome.sent >= len(self.data):
                    continue
                try:
                    outcome.sent += connection.send(self.data[outcome.sent : outcome.sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    selector.unregister(connection)
                    self._end(index, "reset")
                except BlockingIOError:
                    pass
        selector.close()


@dataclass
class OrdinaryResults:
    latencies: list[float] = field(default_factory=list)  # seconds, one per request
    statuses: dict[str, int] = field(default_factory=dict)  # status (or error name) -> count

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def failures(self) -> int:
        return sum(count for status, count in self.statuses.items() if status not in ("200", "201"))

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ordinary_requests(port: int, token: str, seconds: float, timeout: float = 5) -> OrdinaryResults:
    """A client that alternates GET /api/thoughts/ and a POST of a thought, one request at
    a time on a new connection each, for `seconds`: every latency and status."""

    def alternate(n, _previous):
        number = n + 1
        if number % 2:
            return "GET", "/api/thoughts/?limit=5", {}
        text = f"ordinary thought {number}"
        return (
            "POST",
            "/api/me/thoughts/",
            {"json": {"text": text}, "headers": {"Authorization": f"Bearer {token}"}},
        )

    load = Load(f"http://127.0.0.1:{port}", [alternate], cap=None, seconds=seconds, timeout=timeout)
    with load:
        load.wait()  # it ends by itself, after `seconds`
    results = OrdinaryResults()
    for outcome in load.snapshot():
        status = str(outcome.status) if outcome.status is not None else (outcome.error or "").split(":")[0]
        results.latencies.append(outcome.seconds)
        results.statuses[status] = results.statuses.get(status, 0) + 1
    return results
