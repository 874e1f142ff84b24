"""Fixtures: an app per test on SQLite and on the real PostgreSQL, keys, tokens."""

import contextlib
import importlib.util
import os
import time
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from thoughts_backend import create_app
from thoughts_backend.db import create_schema, db
from thoughts_backend.token_validation import encode_token

# The image carries the service's requirements only (docker-compose's test-sqlite and
# test-postgresql run the suite there); these modules test the host's tooling and need
# requirements-dev.txt. Where that is not installed they are left out, and the header of
# the run says so. In CI everything is installed, and nothing is left out: an import that
# fails there fails the run.
HOST_TOOLING_TESTS = {
    "test_attacks_http.py": "requests",
    "test_faults.py": "requests",
    "test_durability.py": "requests",  # through test_faults
    "test_scale_out.py": "requests",
    "test_kubernetes_manifests.py": "yaml",
    "test_identity_provider_http.py": "requests",
}
collect_ignore = [
    module
    for module, needs in HOST_TOOLING_TESTS.items()
    if os.environ.get("CI") != "true" and importlib.util.find_spec(needs) is None
]


def pytest_report_header(config):
    if collect_ignore:
        return f"left out, requirements-dev.txt is not installed: {', '.join(collect_ignore)}"
    return None


POSTGRES_TEST_URL = os.environ.get("POSTGRES_TEST_URL", "postgresql://postgres@127.0.0.1:5432/test")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgresql_required() -> bool:
    """In CI a missing PostgreSQL is a failure; on a laptop its tests skip."""
    return os.environ.get("REQUIRE_POSTGRESQL", "") == "1" or in_ci()


def cannot_run(reason: str, required: bool | None = None):
    """A test whose tool or service is missing: a failure where it must run (CI, by
    default), a skip with the reason on a developer's machine."""
    if in_ci() if required is None else required:
        pytest.fail(f"{reason} (required here, so this is a failure, not a skip)")
    pytest.skip(reason)


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it returns a true value, and return it; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)  # the polling interval of a condition, not a guess at a duration
    pytest.fail(f"{what} within {timeout} s")


def pem_public(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


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
    from .pgbouncer import PgBouncer  # it imports this module's helpers

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


@contextlib.contextmanager
def app_with_schema(overrides: dict):
    """An app with its tables created; dropped, and its connections closed, afterwards."""
    app = create_app(overrides)
    with app.app_context():
        create_schema(db.engine)
    try:
        yield app
    finally:
        with app.app_context():
            db.metadata.drop_all(db.engine)
            db.engine.dispose()


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
