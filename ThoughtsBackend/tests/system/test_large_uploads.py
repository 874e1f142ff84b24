"""Uploads over the body limit, of any size up to 256 MiB, get a 413 the client can read.

uWSGI's fastrouter (uwsgi.ini) receives a body with a Content-Length whole before a worker
sees it; the app answers 413 from the head, then reads and drops the rest from the router
at the speed of a local socket (request_limits.MAX_DISCARDED_BODY_BYTES,
MAX_DISCARD_SECONDS), so that the router can pass the answer on. Before, the worker stopped
reading after 1 MiB and closed: a client sending a few MiB saw "connection reset" instead
of the 413.

Standard library only (http.client sends the whole body, then reads the answer, as
requests and curl do): the image runs this module too.
"""

import http.client
import json

import pytest

from thoughts_backend.request_limits import MAX_DISCARDED_BODY_BYTES

from ..uwsgi_process import ServedApp
from .uploads import MiB, post, thought_of_size


@pytest.fixture(scope="module")
def service(tmp_path_factory, public_key_file):
    database = tmp_path_factory.mktemp("uploads") / "db.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{database}", "PUBLIC_KEY_FILE": str(public_key_file)}
    with ServedApp(env) as app:
        yield app


@pytest.mark.parametrize("size", [2 * MiB, 8 * MiB, 64 * MiB, MAX_DISCARDED_BODY_BYTES])
def test_an_upload_over_the_limit_gets_a_readable_413_every_time(service, make_token, size):
    token = make_token("uploader")
    body = thought_of_size(size)
    answers = [post(service, token, body) for _ in range(3)]
    for answer in answers:
        assert not isinstance(answer, str), answers
        status, message = answer
        assert status == 413
        assert message["message"]
    mine = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    mine.request("GET", "/api/me/thoughts/", headers={"Authorization": f"Bearer {token}"})
    assert json.loads(mine.getresponse().read()) == []
    mine.close()


def test_an_upload_past_what_is_read_and_dropped_is_closed_and_the_service_goes_on(service, make_token):
    """Past MAX_DISCARDED_BODY_BYTES the worker stops reading and closes: the client gets
    no answer (documented in README.md), and the service goes on."""
    answer = post(service, make_token("uploader"), thought_of_size(MAX_DISCARDED_BODY_BYTES + MiB))
    assert isinstance(answer, str), answer
    assert service.get("/api/thoughts/")[0] == 200
