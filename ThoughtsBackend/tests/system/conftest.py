"""Fixtures of the system tests: the service under uWSGI, the Docker daemon.

tests/system/ holds the tests that start the service or the servers around it as processes
and talk to them over sockets: uWSGI (start_server.sh, make run), a private PostgreSQL,
PgBouncer under faults, HAProxy, docker, a browser, an identity provider. Every test marked
faults, scaleout, container, compose, browser or idp is one. The app in-process, its
commands and its files are tested in tests/ (see tests/conftest.py, whose fixtures and
hooks apply here too). Helpers: tests/support.py, and here load.py (clients that keep
sending), faults.py, uploads.py, docker_support.py, slow_clients.py, postgres_protocol.py.
"""

import pytest

from ..uwsgi_process import ServedApp
from .docker_support import running_daemon


@pytest.fixture
def served_app(tmp_path, public_key_file):
    """The service under uWSGI (start_server.sh, uwsgi.ini, 2 workers) on a SQLite file of its own."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PUBLIC_KEY_FILE": str(public_key_file)}
    with ServedApp(env, processes=2) as app:
        yield app


@pytest.fixture(scope="module")
def docker_daemon(tmp_path_factory):
    """The Docker daemon for a module's tests (test_container_image.py, test_compose.py): the
    running one, or one started for them (docker_support.running_daemon)."""
    with running_daemon(tmp_path_factory.mktemp("dockerd")):
        yield
