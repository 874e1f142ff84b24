"""Fixtures of every test: an app per test on SQLite, on the real PostgreSQL and through
PgBouncer, keys, tokens; and the hook that marks the long suites `host`.

Where a test goes:
  tests/         the app in-process (Flask's test client), its modules, its commands run to
                 their end (the CLI, init_db.py, flask db) and its files (Dockerfiles, compose,
                 manifests). Its database may be the shared PostgreSQL, or PgBouncer before it.
  tests/system/  tests that start the service or the servers around it as processes and talk
                 to them over sockets: uWSGI (start_server.sh, make run), a private PostgreSQL,
                 PgBouncer under faults, HAProxy, docker, a browser, an identity provider.
                 Every test marked faults, scaleout, container, compose, browser or idp is one.
Fixtures only system tests use are in tests/system/conftest.py; helpers (no fixtures) in
tests/support.py and in modules named for their concern, never in a conftest.py.
"""

import uuid

import psycopg
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa

from thoughts_backend.token_validation import encode_token

from .databases import app_with_schema
from .pgbouncer import PgBouncer
from .support import POSTGRES_TEST_URL, cannot_run, pem_public, postgresql_required

# docker-compose's test-sqlite and test-postgresql run the suite inside the image (its
# test-image stage: the runtime requirements, requirements-test.txt and ThoughtsBackend/),
# with `-m "not host"`. A test that needs anything else (a tool such as make, haproxy, node
# or docker; a dev requirement; a file outside ThoughtsBackend/; root) is marked `host`,
# and imports what the image lacks inside the test, so that the image can still collect
# its module. The long suites all need such things: their markers imply `host`.
HOST_SUITES = ("faults", "scaleout", "browser", "idp", "container", "compose", "pgbouncer")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    for item in items:
        if any(item.get_closest_marker(name) for name in HOST_SUITES):
            item.add_marker(pytest.mark.host)


@pytest.fixture(scope="session")
def private_key():
    """The tests' own key pair, made fresh for each run: nothing here is ever published."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def public_pem(private_key) -> str:
    return pem_public(private_key)


@pytest.fixture(scope="session")
def public_key_file(tmp_path_factory, public_pem):
    path = tmp_path_factory.mktemp("keys") / "public.pem"
    path.write_text(public_pem)
    return path


@pytest.fixture(scope="session")
def postgresql_server_url():
    """A throw-away database on the test PostgreSQL, dropped at the end of the run."""
    name = f"thoughts_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_TEST_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        cannot_run(
            f"PostgreSQL is not reachable at {POSTGRES_TEST_URL} ({error}); start it or set POSTGRES_TEST_URL",
            required=postgresql_required(),
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = sa.make_url(POSTGRES_TEST_URL).set(drivername="postgresql+psycopg", database=name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pgbouncer_server_url(postgresql_server_url):
    """The test database through Debian's PgBouncer in transaction mode, with a pool of 2
    server connections (tests/pgbouncer.py), for the run."""
    server = sa.make_url(POSTGRES_TEST_URL)
    with PgBouncer.create(server.host or "127.0.0.1", server.port or 5432, pool_size=2) as bouncer:
        yield bouncer.url_for(postgresql_server_url)


# Every test of the app on PostgreSQL runs a third time through PgBouncer in transaction
# mode, with POSTGRES_TRANSACTION_POOLER=true (app_overrides).
@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("pgbouncer", marks=[pytest.mark.postgresql, pytest.mark.pgbouncer]),
    ]
)
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite3'}"
    if request.param == "pgbouncer":
        return request.getfixturevalue("pgbouncer_server_url")
    return request.getfixturevalue("postgresql_server_url")


@pytest.fixture
def app_overrides(request, database_url, public_pem) -> dict:
    overrides = {"DATABASE_URL": database_url, "PUBLIC_KEY": public_pem}
    callspec = getattr(request.node, "callspec", None)  # absent where a module has its own database_url
    if callspec and callspec.params.get("database_url") == "pgbouncer":
        overrides["POSTGRES_TRANSACTION_POOLER"] = "true"
    return overrides


@pytest.fixture
def app(app_overrides):
    with app_with_schema(app_overrides) as app:
        app.config["TESTING"] = True
        yield app


@pytest.fixture
def make_token(private_key):
    def make(username: str = "alice", admin: bool = False, **claims) -> str:
        return encode_token(username, private_key, admin=admin, **claims)

    return make


@pytest.fixture
def auth(make_token):
    """Headers for a request as `username`: auth("bob"), auth("root", admin=True)."""

    def headers(username: str = "alice", admin: bool = False, **claims) -> dict:
        return {"Authorization": f"Bearer {make_token(username, admin=admin, **claims)}"}

    return headers


@pytest.fixture
def post_thought(client, auth):
    def post(text: str, username: str = "alice") -> dict:
        response = client.post("/api/me/thoughts/", json={"text": text}, headers=auth(username))
        assert response.status_code == 201, response.json
        return response.json

    return post
