"""Exchanges with PostgreSQL per request, counted on the wire between a real uWSGI worker and
the server (tests/system/postgres_protocol.py): a read is one, a write at most two.

On a network, each exchange is a round trip: before, a read was three (BEGIN, the SELECT,
the ROLLBACK that returned its connection to the pool) and a full page four (its total in a
statement of its own). Now the engine runs in autocommit, each request's statement is a
transaction by itself, and a page carries its total.
"""

import time

import pytest
import requests
import sqlalchemy as sa

from thoughts_backend.db import PING_AFTER_IDLE_SECONDS

from ..support import wait_for
from ..uwsgi_process import ServedApp
from .postgres_protocol import ProtocolRecorder

# psycopg prepares a statement on its sixth run, in an exchange of its own: the warm-up
# runs each request more often than that, so that what is counted is the steady state.
WARM_UP_RUNS = 7
MEASURED_RUNS = 10
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


class CountedWorker:
    """One uWSGI worker behind the recorder; each request waits for the worker to be done
    with it (uWSGI's stats: idle, its request counted), including what it does after the
    answer is sent, so that every exchange is counted with the request that made it."""

    def __init__(self, app: ServedApp, recorder: ProtocolRecorder, token: str):
        self.app, self.recorder = app, recorder
        self.headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
        self.done_at = time.monotonic()

    def served(self) -> int:
        (worker,) = self.app.stats()["workers"]
        return worker["requests"] if worker["status"] == "idle" else -1

    def send(self, method: str, path: str, expected: int, **kwargs) -> tuple[requests.Response, list, float]:
        """The answer, the exchanges the request made, and how long the worker was idle before it."""
        before_served = wait_for(lambda: self.served() + 1, 10, "the worker did not become idle") - 1
        before = len(self.recorder.exchanges())
        idle = time.monotonic() - self.done_at
        answer = requests.request(method, self.app.url + path, headers=self.headers, timeout=10, **kwargs)
        assert answer.status_code == expected, answer.text
        wait_for(lambda: self.served() == before_served + 1, 10, "the worker did not finish the request")
        self.done_at = time.monotonic()
        return answer, self.recorder.exchanges()[before:], idle


def statements_of(exchanges: list, idle: float) -> list[str]:
    """The SQL of each exchange, but the pool's ping of a connection idle for longer than
    PING_AFTER_IDLE_SECONDS (db.configure_postgresql), which a busy service never sends."""
    statements = [exchange.sql.strip() for exchange in exchanges]
    if idle > PING_AFTER_IDLE_SECONDS and statements[:1] == ["SELECT 1"]:
        statements = statements[1:]
    return statements


@pytest.mark.postgresql
def test_a_read_is_one_exchange_with_postgresql_and_a_write_at_most_two(
    postgresql_server_url, public_key_file, make_token
):
    server = sa.make_url(postgresql_server_url)
    with ProtocolRecorder(server.host or "127.0.0.1", server.port or 5432) as recorder:
        # Through the recorder on loopback (the server may be another host: docker-compose's
        # db), in clear for it to read.
        url = server.set(
            host="127.0.0.1", port=recorder.port, query={"sslmode": "disable", "gssencmode": "disable"}
        )
        env = {
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "PUBLIC_KEY_FILE": str(public_key_file),
        }
        with ServedApp(env, processes=1) as app:
            worker = CountedWorker(app, recorder, make_token("round-trips"))
            created = [
                worker.send("POST", "/api/me/thoughts/", 201, json={"text": f"needle {n}"})[0].json()["id"]
                for n in range(2 * WARM_UP_RUNS + MEASURED_RUNS + 2)
            ]
            reads = {
                "get": f"/api/thoughts/{created[0]}/",
                "missing": "/api/thoughts/2147483000/",
                "list, short page": "/api/thoughts/?limit=1000",
                "list, full page": "/api/thoughts/?limit=2",
                "list, past the end": "/api/thoughts/?offset=1000000",
                "me, full page": "/api/me/thoughts/?limit=2",
                "search": "/api/thoughts/?search=needle&limit=2",
            }
            seen: dict[str, list] = {}
            for name, path in reads.items():
                expected = 404 if name == "missing" else 200
                for _ in range(WARM_UP_RUNS):
                    worker.send("GET", path, expected)
                seen[name] = [
                    statements_of(*worker.send("GET", path, expected)[1:]) for _ in range(MEASURED_RUNS)
                ]
            for _ in range(WARM_UP_RUNS):
                worker.send("POST", "/api/me/thoughts/", 201, json={"text": "more"})
                worker.send("DELETE", f"/api/me/thoughts/{created.pop()}/", 204)
            seen["create"] = [
                statements_of(*worker.send("POST", "/api/me/thoughts/", 201, json={"text": "more"})[1:])
                for _ in range(MEASURED_RUNS)
            ]
            seen["delete"] = [
                statements_of(*worker.send("DELETE", f"/api/me/thoughts/{created.pop()}/", 204)[1:])
                for _ in range(MEASURED_RUNS)
            ]

    for name in reads:
        for statements in seen[name]:
            assert len(statements) == 1 and statements[0].startswith("SELECT"), (name, statements)
    for statements in seen["create"]:
        assert len(statements) == 1 and statements[0].startswith("INSERT INTO thought"), statements
    for statements in seen["delete"]:
        assert len(statements) == 2, statements
        assert statements[0].startswith("SELECT") and statements[1].startswith("DELETE FROM thought"), (
            statements
        )
    every_statement = [statement for runs in seen.values() for statements in runs for statement in statements]
    assert not [s for s in every_statement if s.upper().startswith(TRANSACTION_CONTROL)]
