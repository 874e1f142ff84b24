"""Clients that stop sending their body halfway, against the service under uWSGI.

uWSGI's HTTP router reads request heads itself, but passes bodies on to the worker as they
arrive: a worker waits up to socket-timeout (4 s) for each piece. A body that stops
arriving must cost the worker only that wait, and end in a clear 4xx: not a second wait
while the unread rest is discarded, which used to run the request into harakiri (8 s),
get its worker killed, and answer 500 where it was not killed.
"""

import json
import socket

import pytest
import requests

from .uwsgi_process import ServedApp

# Longer than uWSGI's socket-timeout (4 s) and shorter than harakiri (8 s): an answer
# later than this would mean the worker waited twice.
ANSWER_TIMEOUT = 7.5


@pytest.fixture
def service(tmp_path, public_key_file):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PUBLIC_KEY_FILE": str(public_key_file)}
    with ServedApp(env, processes=3) as app:
        yield app


def stall(service, headers: dict, first_part_of_body: bytes) -> socket.socket:
    """Send a POST's head and the start of its body, then nothing more."""
    head = "POST /api/me/thoughts/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    connection = socket.create_connection(("127.0.0.1", service.port), timeout=ANSWER_TIMEOUT)
    connection.sendall(head.encode() + b"\r\n" + first_part_of_body)
    return connection


def answer_of(connection: socket.socket) -> tuple[int, dict]:
    """The status and JSON body the server answered with; a timeout fails the test."""
    answer = b""
    with connection:
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head, answer
    return int(head.split()[1]), json.loads(body)


def test_bodies_that_stop_arriving_get_a_4xx_json_and_their_workers_go_on(service, make_token):
    token = {"Authorization": f"Bearer {make_token('slow')}", "Content-Type": "application/json"}
    workers_before = service.worker_pids()
    stalled = [
        stall(service, {**token, "Content-Length": "1000"}, b'{"text": "'),
        stall(service, {**token, "Content-Length": "1000"}, b'{"text": "'),
        stall(service, {**token, "Transfer-Encoding": "chunked"}, b'400\r\n{"text": "'),
    ]
    answers = [answer_of(connection) for connection in stalled]

    *content_length_answers, (chunked, chunked_body) = answers
    for status, body in content_length_answers:
        assert status == 408
        assert "stopped arriving" in body["message"] and "without pausing" in body["message"]
    assert chunked == 400
    assert "stopped arriving" in chunked_body["message"]
    # Each worker was let go after its one wait: none killed, none replaced.
    assert service.worker_pids() == workers_before
    assert "HARAKIRI" not in service.output
    mine = requests.get(f"{service.url}/api/me/thoughts/", headers=token, timeout=10)
    assert mine.status_code == 200
    assert mine.json() == []
