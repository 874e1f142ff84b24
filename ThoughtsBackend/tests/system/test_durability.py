"""Durability: stop the service with SIGTERM in the middle of concurrent writes, start it
again, and every thought that was answered 201 is there, whole; nothing answered with an
error is. Writes cut off with no answer at all are "in doubt" (the client cannot know),
and are counted: if stored, they must be stored whole.

Runs against SQLite with several uWSGI workers writing at once, and against PostgreSQL.
    make test-faults        (or: pytest -m faults -s tests/system/test_durability.py)
"""

import signal
import time
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa

from thoughts_backend.token_validation import encode_token

from ..databases import drop_schema
from ..support import wait_for
from .faults import (
    Load,
    served,
    stored_texts,
)

WRITERS = 6
WORKERS = 4
ACKNOWLEDGED_BEFORE_STOP = 150
# start_server.sh's own deadline is 8 s (STOP_TIMEOUT); past this, the stop has hung.
STOP_TIMEOUT_SECONDS = 30


def writer_for(username: str, token: str, prefix: str):
    def make(n, _previous):
        return (
            "POST",
            "/api/me/thoughts/",
            {
                "json": {"text": f"{prefix}-{username}-{n:05d}"},
                "headers": {"Authorization": f"Bearer {token}"},
            },
        )

    return make


def never_sent(outcome) -> bool:
    """The connection was refused: the request never reached the service."""
    return outcome.kind == "refused"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
        return
    url = request.getfixturevalue("postgresql_server_url")
    yield url
    # The test database is shared by the run: leave it as the other tests expect it.
    engine = sa.create_engine(url)
    drop_schema(engine)
    engine.dispose()


@pytest.mark.faults
def test_every_acknowledged_write_survives_a_sigterm_restart(database_url, public_key_file, private_key):
    prefix = uuid.uuid4().hex[:8]
    usernames = [f"writer{n}" for n in range(WRITERS)]
    writers = [writer_for(name, encode_token(name, private_key), prefix) for name in usernames]
    settings = {"DATABASE_URL": database_url}

    with served(public_key_file, processes=WORKERS, **settings) as service:
        load = Load(service.url, writers, stop_when=never_sent)
        with load:
            wait_for(
                lambda: load.count(lambda o: o.status == 201) >= ACKNOWLEDGED_BEFORE_STOP,
                60,
                "writes before the stop",
            )
            in_flight_at_stop = load.in_flight
            service.stop(signal.SIGTERM)
            exit_code = service.wait(STOP_TIMEOUT_SECONDS)
            stopped_in = time.monotonic() - service.signalled_at
    outcomes = load.snapshot()

    with served(public_key_file, processes=WORKERS, **settings) as restarted:
        stored = {
            text: thought for text, thought in stored_texts(restarted).items() if text.startswith(prefix)
        }

    sent = {o.sent_text: o for o in outcomes if not never_sent(o)}
    acknowledged = {o.sent_text: o.json_body for o in outcomes if o.status == 201}
    refused_with_an_answer = {o.sent_text for o in outcomes if o.status is not None and o.status != 201}
    in_doubt = {o.sent_text for o in outcomes if o.status is None and not never_sent(o)}
    print(
        f"\ndurability ({database_url.split(':')[0]}, {WORKERS} workers, {WRITERS} writers): "
        f"{len(sent)} writes sent, {in_flight_at_stop} in flight at SIGTERM, service exited {exit_code} "
        f"after {stopped_in:.2f}s; acknowledged 201: {len(acknowledged)}, found after restart: "
        f"{len(acknowledged.keys() & stored.keys())}; answered with an error: {len(refused_with_an_answer)} "
        f"({dict(Counter(o.status for o in outcomes if o.status and o.status != 201))}), found: "
        f"{len(refused_with_an_answer & stored.keys())}; cut off without an answer: {len(in_doubt)}, "
        f"found: {len(in_doubt & stored.keys())}; never sent (refused): {sum(never_sent(o) for o in outcomes)}"
    )

    assert len(acknowledged) >= ACKNOWLEDGED_BEFORE_STOP
    missing = acknowledged.keys() - stored.keys()
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:3]}"
    for text, answer in acknowledged.items():
        assert stored[text] == answer, "a stored thought differs from what its 201 said"
    assert not refused_with_an_answer & stored.keys(), "a write answered with an error was stored"
    assert stored.keys() <= sent.keys(), "a stored thought matches no write that was sent"
    for text, thought in stored.items():
        assert thought["username"] == text.split("-")[1], "a thought stored under the wrong user"
    ids = [thought["id"] for thought in stored.values()]
    assert len(ids) == len(set(ids))
