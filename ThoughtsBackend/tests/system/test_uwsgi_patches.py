"""The patches docker/app/uwsgi/install.sh applies to uWSGI, on a bare uWSGI (built as
`make install` builds it) serving a three-line app: what the service's own tests cannot
show, as uwsgi.ini runs them.

- http-headers-deadline.patch: a deadline for a request's whole head. uwsgi.ini closes
  every connection after its answer, so test_slow_clients.py sees it counted from the
  accept only. A team that turns http-keepalive on must not see a connection's later
  requests refused because the connection is older than the deadline: each request's head
  has its own, from its first bytes. And a head that a read past the deadline completes
  is served, not refused.
- http-to-bodyless.patch: the HTTP router sends a request without a body (no
  Content-Length, not chunked) to its own node, past the fastrouter that uwsgi.ini puts
  in front of the workers to buffer bodies. Every request with a body must still go to
  http-to's node, chunked ones too; test_slow_clients.py shows the service's slow bodies
  still buffered there.
- memory-from-statm.patch: reload-on-rss reads the worker's memory after every request
  from /proc/self/statm instead of /proc/self/stat (on the benchmark's VM, reading
  /proc/self/stat made everything the worker ran about 20 % slower). It must still recycle
  a worker over its limit.
"""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..support import strace_following, wait_for
from ..uwsgi_process import free_port

DEADLINE = 1
APP = """import os, time
def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(environ["QUERY_STRING"]))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class BareUwsgi:
    """A uWSGI master and one worker on 127.0.0.1 serving APP, with `options`."""

    def __init__(self, directory: Path, options: list[str]):
        (directory / "app.py").write_text(APP)
        self.port = free_port()
        self.log = directory / "uwsgi.log"
        uwsgi = Path(sys.executable).parent / "uwsgi"
        command = [str(uwsgi), "--strict", "--master", "--processes", "1", "--wsgi-file", "app.py"]
        command += ["--http", f"127.0.0.1:{self.port}", "--logto", str(self.log), *options]
        self.process = subprocess.Popen(
            command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        wait_for(
            lambda: self.process.poll() is not None or self.worker_pid() is not None,
            10,
            "the bare uWSGI answering",
            details=self.log_text,
        )
        assert self.process.poll() is None, self.log_text()

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def worker_pid(self) -> int | None:
        """The pid of the worker that answers a request (the app's answer), None if none does."""
        body = body_of_200(self.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 2)
        return None if body is None else int(body)

    def stop(self) -> None:
        stop_uwsgi(self.process)


def body_of_200(port: int, request: bytes, timeout: float) -> bytes | None:
    """The body of the answer to `request`, read until the server closes, if it is a 200;
    None for another status or no answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(request)
            answer = b"".join(iter(lambda: connection.recv(4096), b""))
    except OSError:
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    return body if head.startswith(b"HTTP/1.1 200") else None


def stop_uwsgi(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)  # uWSGI 2.0 takes SIGTERM as a reload
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def bare_uwsgi(tmp_path):
    started = []

    def start(*options: str) -> BareUwsgi:
        started.append(BareUwsgi(tmp_path, list(options)))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def keepalive_router(bare_uwsgi) -> BareUwsgi:
    # --http-keepalive takes an optional argument: given with "=".
    return bare_uwsgi("--http-keepalive=30", "--http-headers-deadline", str(DEADLINE))


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
    with socket.create_connection(("127.0.0.1", keepalive_router.port), timeout=5) as connection:
        connection.sendall(REQUEST)
        assert read_answer(connection).startswith(b"HTTP/1.1 200")
        # The connection idles past the deadline (the point of the test, not a wait for a
        # condition); its next request is sent whole, at once.
        time.sleep(DEADLINE + 1)
        connection.sendall(REQUEST)
        assert read_answer(connection).startswith(b"HTTP/1.1 200")


def test_the_next_head_on_a_kept_alive_connection_has_its_own_deadline(keepalive_router):
    with socket.create_connection(("127.0.0.1", keepalive_router.port), timeout=5) as connection:
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
    assert "request head not complete by its deadline" in keepalive_router.log_text()


def test_a_head_that_a_read_past_the_deadline_completes_is_served(keepalive_router):
    """The deadline refuses heads still incomplete, not late ones that arrive whole."""
    with socket.create_connection(("127.0.0.1", keepalive_router.port), timeout=5) as connection:
        started = time.monotonic()
        connection.sendall(REQUEST[:-2])
        # Timed on purpose (a slow client's pace): a byte 0.25 s before the deadline keeps
        # the router's timer (whole seconds) from closing the connection before the last
        # bytes, sent 0.3 s past the deadline, complete the head.
        time.sleep(max(0.0, started + DEADLINE - 0.25 - time.monotonic()))
        connection.sendall(b"X")
        time.sleep(max(0.0, started + DEADLINE + 0.3 - time.monotonic()))
        connection.sendall(b": y\r\n\r\n")
        assert read_answer(connection).startswith(b"HTTP/1.1 200")


def test_a_request_with_expect_100_continue_is_not_cut_at_the_head_deadline(bare_uwsgi):
    """Once a head is whole, its deadline no longer applies, also on the path that answers
    100 Continue itself (http-manage-expect), which leaves the head's timer before."""
    server = bare_uwsgi(
        "--http-manage-expect", "--http-headers-deadline", str(DEADLINE), "--http-timeout", "30"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        # The app takes longer than the deadline and the router's timer after it.
        connection.sendall(
            f"POST /slow?{DEADLINE + 2} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert connection.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        connection.sendall(b"{}")
        assert read_answer(connection).startswith(b"HTTP/1.1 200")


def test_reload_on_rss_still_recycles_a_worker_over_its_limit(bare_uwsgi):
    # 1 MiB: every worker is over it, and recycles after each request.
    server = bare_uwsgi("--reload-on-rss", "1", "--min-worker-lifetime", "0")
    first = server.worker_pid()
    second = wait_for(server.worker_pid, 10, "the respawned worker answering", details=server.log_text)
    assert first != second, server.log_text()


@pytest.mark.host  # strace, as root: neither is in the image
def test_a_worker_reads_its_memory_from_statm_not_stat(bare_uwsgi, tmp_path):
    server = bare_uwsgi("--reload-on-rss", "256")
    worker = server.worker_pid()
    trace = tmp_path / "trace.txt"
    with strace_following(worker, trace, "-e", "trace=openat"):
        answered = [server.worker_pid() for _ in range(10)]
    assert answered == [worker] * 10
    opened = trace.read_text()
    # After each request, reload-on-rss reads the worker's memory: from statm, never stat.
    assert opened.count('"/proc/self/statm"') == 10, opened
    assert '"/proc/self/stat"' not in opened, opened


NODE_APP = """import os
def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    answer = f"{os.environ['NODE']} {len(body)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]
"""


def test_requests_without_a_body_go_to_the_bodyless_node_and_the_others_to_http_to(tmp_path):
    """Two uWSGIs answer with their name: `buffered` behind http-to (as the fastrouter is in
    uwsgi.ini), `bodyless` behind http-to-bodyless, and its HTTP router takes the requests."""
    (tmp_path / "node_app.py").write_text(NODE_APP)
    uwsgi = str(Path(sys.executable).parent / "uwsgi")
    common = ["--strict", "--master", "--processes", "1", "--wsgi-file", "node_app.py"]
    port = free_port()
    router = ["--http", f"127.0.0.1:{port}", "--http-chunked-input", "--http-to", "buffered.sock"]
    router += ["--http-to-bodyless", "bodyless.sock"]
    commands = {
        "buffered": [uwsgi, *common, "--socket", "buffered.sock", "--env", "NODE=buffered"],
        "bodyless": [uwsgi, *common, "--socket", "bodyless.sock", "--env", "NODE=bodyless", *router],
    }
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    processes = [
        subprocess.Popen([*command, "--logto", str(logs[name])], cwd=tmp_path, stdout=subprocess.DEVNULL)
        for name, command in commands.items()
    ]

    def answer_to(request: bytes) -> bytes | None:
        return body_of_200(port, request, 5)

    head = "HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    try:
        wait_for(
            lambda: answer_to(f"POST / {head}Content-Length: 1\r\n\r\nx".encode()),
            10,
            "both uWSGIs answering",
            details=lambda: "\n".join(log.read_text() for log in logs.values() if log.exists()),
        )
        assert answer_to(f"GET /?a=b {head}\r\n".encode()) == b"bodyless 0"
        assert answer_to(f"DELETE /1 {head}Content-Length: 0\r\n\r\n".encode()) == b"bodyless 0"
        assert answer_to(f"POST / {head}Content-Length: 5\r\n\r\nhello".encode()) == b"buffered 5"
        chunked = f"POST / {head}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        assert answer_to(chunked.encode()) == b"buffered 0"
    finally:
        for process in processes:
            stop_uwsgi(process)
