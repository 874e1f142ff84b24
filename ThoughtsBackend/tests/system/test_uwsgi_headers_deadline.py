"""The HTTP router's deadline for a request's whole head (http-headers-deadline), which
docker/app/uwsgi/http-headers-deadline.patch adds to uWSGI, on kept-alive connections.

uwsgi.ini closes every connection after its answer, so the service's own tests
(test_slow_clients.py) only see a deadline counted from the connection's accept. A team
that turns on http-keepalive must not see a connection's later requests refused because
the connection is older than the deadline: each request's head gets its own deadline,
from its first bytes. Here a bare uWSGI, built as `make install` builds it, serves a
two-line app with a 1-s deadline.
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..support import wait_for
from ..uwsgi_process import free_port

DEADLINE = 1
APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture
def keepalive_router(tmp_path):
    """(port, log) of a bare uWSGI with keep-alive and the head deadline."""
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    log = tmp_path / "uwsgi.log"
    uwsgi = Path(sys.executable).parent / "uwsgi"
    command = [str(uwsgi), "--strict", "--master", "--processes", "1", "--wsgi-file", "app.py"]
    command += ["--http", f"127.0.0.1:{port}", "--http-keepalive=30"]  # an optional argument: with "="
    command += ["--http-headers-deadline", str(DEADLINE), "--logto", str(log)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: process.poll() is not None or answers(port),
            10,
            "the bare uWSGI answering",
            details=lambda: log.read_text() if log.exists() else "",
        )
        assert process.poll() is None, log.read_text()
        yield port, log
    finally:
        process.terminate()  # uWSGI 2.0 takes SIGTERM as a reload; SIGINT/SIGKILL end it
        process.send_signal(2)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return connection.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def read_answer(connection: socket.socket) -> bytes:
    """One whole answer (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = connection.recv(4096)
        assert chunk, f"closed before a whole body: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_kept_alive_connection_older_than_the_deadline_is_still_served(keepalive_router):
    port, _log = keepalive_router
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(REQUEST)
        assert read_answer(connection).startswith(b"HTTP/1.1 200")
        # The connection idles past the deadline (the point of the test, not a wait for a
        # condition); its next request is sent whole, at once.
        time.sleep(DEADLINE + 1)
        connection.sendall(REQUEST)
        assert read_answer(connection).startswith(b"HTTP/1.1 200")


def test_the_next_head_on_a_kept_alive_connection_has_its_own_deadline(keepalive_router):
    port, log = keepalive_router
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(REQUEST)
        assert read_answer(connection).startswith(b"HTTP/1.1 200")
        # The next head trickles in, a byte every 0.2 s, and never completes.
        started = time.monotonic()
        connection.setblocking(False)
        answer = b""
        for byte in (REQUEST[:-4] + b"X-Slow: " + b"v" * 100)[:60]:
            connection.send(bytes([byte]))
            time.sleep(0.2)  # the pace of the slow client
            try:
                answer += connection.recv(4096)
            except BlockingIOError:
                continue
            if b"\r\n\r\n" in answer:
                break
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"took too long to arrive" in answer
    # From the head's first byte, not from the connection's accept: at the first byte
    # sent past the deadline.
    assert DEADLINE <= waited <= DEADLINE + 1, waited
    assert "request head not complete by its deadline" in log.read_text()
