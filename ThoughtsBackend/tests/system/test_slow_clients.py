"""Clients that stop sending their body or head halfway, against the service under uWSGI.

uWSGI's fastrouter (uwsgi.ini) reads every body with a Content-Length whole before a
worker sees the request: a body that stops arriving costs a router connection, never a
worker, and its connection is closed fastrouter-timeout seconds after its head, without an
answer (the fastrouter has no 408 of its own). A chunked body is not buffered: it
streams to a worker, which waits socket-timeout (4 s) for each piece, then answers 400,
without a second wait while the unread rest is discarded (that used to run the request
into harakiri, 8 s, and get its worker killed). A head that stops arriving is dropped by
the HTTP router after http-headers-timeout; one that goes on arriving, however slowly, gets
a 408 at http-headers-deadline after its connection was accepted.

Standard library and the tests' own helpers only: the image runs this module too.
"""

import json
import socket
import time

from ..support import wait_for
from ..uwsgi_process import uwsgi_setting
from .slow_clients import SlowClients

# Longer than the fastrouter's deadline for a body (10 s) and shorter than harakiri plus
# that: a later end would mean a worker was held.
ANSWER_TIMEOUT = 15


def stall(served_app, headers: dict, first_part_of_body: bytes) -> socket.socket:
    """Send a POST's head and the start of its body, then nothing more."""
    head = "POST /api/me/thoughts/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    connection = socket.create_connection(("127.0.0.1", served_app.port), timeout=ANSWER_TIMEOUT)
    connection.sendall(head.encode() + b"\r\n" + first_part_of_body)
    return connection


def answer_of(connection: socket.socket) -> bytes:
    """All the server sent until it closed the connection; a timeout fails the test."""
    answer = b""
    with connection:
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread: what came before is the answer
    return answer


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head, answer
    return int(head.split()[1]), json.loads(body)


def test_bodies_that_stop_arriving_hold_no_worker_and_are_closed_at_the_deadline(served_app, make_token):
    token = {"Authorization": f"Bearer {make_token('slow')}", "Content-Type": "application/json"}
    workers_before = served_app.worker_pids()
    started = time.monotonic()
    # As many stalled bodies as workers, and more: with the bodies in the router, none of
    # them holds a worker.
    stalled = [stall(served_app, {**token, "Content-Length": "1000"}, b'{"text": "') for _ in range(4)]
    status, _ = served_app.get("/api/thoughts/", timeout=3)
    assert status == 200

    for connection in stalled:
        assert answer_of(connection) == b""  # closed, without an answer
    waited = time.monotonic() - started
    deadline = uwsgi_setting("fastrouter-timeout")
    # uWSGI's timers count whole seconds: the deadline, give or take one.
    assert deadline - 1 <= waited <= deadline + 2, waited
    assert served_app.worker_pids() == workers_before
    assert "HARAKIRI" not in served_app.output
    assert served_app.get("/api/thoughts/")[0] == 200


def test_a_chunked_body_that_stops_arriving_gets_a_400_json_and_its_worker_goes_on(served_app, make_token):
    """Not buffered by the fastrouter: the one kind of body that waits in a worker, for
    socket-timeout, once."""
    token = {"Authorization": f"Bearer {make_token('slow')}", "Content-Type": "application/json"}
    workers_before = served_app.worker_pids()
    connection = stall(served_app, {**token, "Transfer-Encoding": "chunked"}, b'400\r\n{"text": "')
    status, body = status_and_json(answer_of(connection))
    assert status == 400
    assert "stopped arriving" in body["message"]
    # The worker was let go after its one wait: not killed, not replaced.
    assert served_app.worker_pids() == workers_before
    assert "HARAKIRI" not in served_app.output
    assert served_app.get("/api/thoughts/")[0] == 200


def test_a_head_that_stops_arriving_is_closed_after_the_headers_timeout(served_app):
    """The HTTP router reads heads itself: one that pauses for http-headers-timeout is
    dropped, without an answer, and held no worker meanwhile."""
    started = time.monotonic()
    connection = socket.create_connection(("127.0.0.1", served_app.port), timeout=ANSWER_TIMEOUT)
    connection.sendall(b"GET /api/thoughts/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Unfinished: ")
    assert served_app.get("/api/thoughts/", timeout=3)[0] == 200
    assert answer_of(connection) == b""
    waited = time.monotonic() - started
    timeout = uwsgi_setting("http-headers-timeout")
    assert timeout - 1 <= waited <= timeout + 2, waited


def test_a_head_sent_a_byte_a_second_gets_a_408_json_at_the_headers_deadline(served_app):
    """http-headers-timeout restarts at every byte: only the deadline (uWSGI patched by
    docker/app/uwsgi/install.sh) ends a head that keeps trickling in. It held no worker."""
    deadline = uwsgi_setting("http-headers-deadline")
    head = b"GET /api/thoughts/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"v" * 64 + b"\r\n\r\n"
    workers_before = served_app.worker_pids()
    with SlowClients(served_app.port, 2, head, interval=1.0) as slow:
        assert served_app.get("/api/thoughts/", timeout=3)[0] == 200
        wait_for(lambda: slow.open == 0, deadline + 3, "both slow heads ended", details=lambda: slow.outcomes)
    for outcome in slow.outcomes:
        # Still sending when answered: the head never finished, and was cut by the deadline,
        # not by the timer that restarts at each byte.
        assert outcome.sent < len(head), outcome
        assert deadline - 1 <= outcome.after <= deadline + 2, outcome
        status, body = status_and_json(outcome.answer)
        assert status == 408
        assert "took too long to arrive" in body["message"]
    assert served_app.worker_pids() == workers_before
    assert served_app.get("/api/thoughts/")[0] == 200
