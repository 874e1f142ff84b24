"""Start-up configuration: every bad setting stops the app with one clear sentence."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from thoughts_backend import config, development_keys
from thoughts_backend.app import create_app
from thoughts_backend.config import CODE_DIR, ConfigError, database_url, gather_settings, load_public_key
from thoughts_backend.db import db

from .support import pem_public


def settings(**values) -> dict:
    return gather_settings({}, values)


def test_default_is_sqlite_file_beside_the_code():
    url = database_url(settings())
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(CODE_DIR / "db.sqlite3")


def test_sqlite_path_from_environment():
    url = database_url(gather_settings({"SQLITE_PATH": "/data/t.db"}))
    assert url.database == "/data/t.db"


def test_postgresql_from_the_original_variables():
    url = database_url(
        gather_settings(
            {
                "DATABASE_ENGINE": "POSTGRESQL",
                "POSTGRES_DB": "thoughts",
                "POSTGRES_USER": "postgres",
                "POSTGRES_PASSWORD": "s3cret",
                "POSTGRES_HOST": "db",
                "POSTGRES_PORT": "5433",
            }
        )
    )
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "postgres",
        "s3cret",
        "db",
        5433,
        "thoughts",
    )


def test_engine_name_is_case_insensitive():
    assert database_url(settings(DATABASE_ENGINE="sqlite")).get_backend_name() == "sqlite"


def test_database_url_overrides_engine():
    url = database_url(settings(DATABASE_ENGINE="POSTGRESQL", DATABASE_URL="postgresql://u@h/d"))
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "h"


def test_empty_environment_value_counts_as_unset():
    assert gather_settings({"DATABASE_ENGINE": ""})["DATABASE_ENGINE"] == "SQLITE"


@pytest.mark.parametrize(
    "values, sentence",
    [
        ({"DATABASE_ENGINE": "MYSQL"}, "DATABASE_ENGINE must be SQLITE or POSTGRESQL"),
        ({"DATABASE_ENGINE": "POSTGRESQL"}, "needs POSTGRES_DB, POSTGRES_USER, POSTGRES_HOST"),
        (
            {
                "DATABASE_ENGINE": "POSTGRESQL",
                "POSTGRES_DB": "d",
                "POSTGRES_USER": "u",
                "POSTGRES_HOST": "h",
                "POSTGRES_PORT": "five",
            },
            "POSTGRES_PORT must be a whole number",
        ),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL is not a valid database URL"),
        ({"DATABASE_URL": "mysql://u@h/d"}, "only sqlite and postgresql are supported"),
    ],
)
def test_bad_database_settings(values, sentence):
    with pytest.raises(ConfigError, match=sentence):
        database_url(settings(**values))


def test_public_key_from_text_and_from_file(public_pem, public_key_file):
    assert load_public_key(settings(PUBLIC_KEY=public_pem)).key_size == 2048
    assert load_public_key(settings(PUBLIC_KEY_FILE=str(public_key_file))).key_size == 2048


def private_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    "make_values, sentence",
    [
        (lambda tmp, pem, key: {"PUBLIC_KEY": pem, "PUBLIC_KEY_FILE": "x"}, "not both"),
        (lambda tmp, pem, key: {"PUBLIC_KEY_FILE": str(tmp / "absent.pem")}, "Cannot read PUBLIC_KEY_FILE"),
        (lambda tmp, pem, key: {"PUBLIC_KEY": private_pem(key)}, "holds a private key"),
        (lambda tmp, pem, key: {"PUBLIC_KEY": "hello"}, "not a PEM-encoded public key"),
        (
            lambda tmp, pem, key: {"PUBLIC_KEY": pem_public(ec.generate_private_key(ec.SECP256R1()))},
            "must be an RSA public key",
        ),
        (
            lambda tmp, pem, key: {"PUBLIC_KEY": pem_public(rsa.generate_private_key(65537, 1024))},  # noqa: S505 (the weak key is the point),
            "use at least 2048 bits",
        ),
    ],
    ids=["both", "unreadable", "private", "not-pem", "not-rsa", "too-small"],
)
def test_bad_public_key_settings(tmp_path, public_pem, private_key, make_values, sentence):
    with pytest.raises(ConfigError, match=sentence):
        load_public_key(settings(**make_values(tmp_path, public_pem, private_key)))


@pytest.mark.parametrize(
    "name, value, sentence",
    [
        ("TOKEN_LEEWAY_SECONDS", "-1", "at least 0"),
        ("TOKEN_LEEWAY_SECONDS", "soon", "whole number"),
        ("MAX_CONTENT_LENGTH", "10", "at least 1024"),
        ("POSTGRES_STATEMENT_TIMEOUT_MS", "-1", "at least 0"),
        ("POSTGRES_STATEMENT_TIMEOUT_MS", "3s", "whole number"),
    ],
)
def test_bad_numbers_stop_create_app(tmp_path, public_pem, name, value, sentence):
    overrides = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "PUBLIC_KEY": public_pem, name: value}
    with pytest.raises(ConfigError, match=f"{name} must be .*{sentence}"):
        create_app(overrides)


@pytest.mark.parametrize(
    "timeout, options",
    [(None, "-c statement_timeout=3000"), ("250", "-c statement_timeout=250"), ("0", None)],
)
def test_postgresql_connections_carry_the_statement_timeout(public_pem, timeout, options):
    values = settings(DATABASE_URL="postgresql://u@db/thoughts", PUBLIC_KEY=public_pem)
    if timeout is not None:
        values["POSTGRES_STATEMENT_TIMEOUT_MS"] = timeout
    connect_args = config.flask_config(values)["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]
    assert connect_args.get("options") == options
    assert connect_args["connect_timeout"] == 2 and connect_args["tcp_user_timeout"] == 2000


@pytest.mark.parametrize(
    "query, expected",
    [
        (
            "?options=-c%20search_path%3Dapp&connect_timeout=10",
            {"options": "-c search_path=app -c statement_timeout=3000", "connect_timeout": None},
        ),
        ("?options=-c%20statement_timeout%3D500", {"options": None}),
    ],
)
def test_the_database_urls_own_connection_parameters_are_kept(public_pem, query, expected):
    """What DATABASE_URL sets wins: SQLAlchemy lays connect_args over the URL's parameters."""
    values = settings(DATABASE_URL=f"postgresql://u@db/thoughts{query}", PUBLIC_KEY=public_pem)
    connect_args = config.flask_config(values)["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]
    for name, value in expected.items():
        assert connect_args.get(name) == value, name
    assert connect_args["tcp_user_timeout"] == 2000


def test_create_app_reads_the_environment(monkeypatch, tmp_path, public_key_file):
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("PUBLIC_KEY_FILE", str(public_key_file))
    monkeypatch.setenv("MAX_CONTENT_LENGTH", "2048")
    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"].database == str(tmp_path / "env.db")
    assert app.config["MAX_CONTENT_LENGTH"] == 2048


# The public half of the key pair hard-coded in the original ThoughtsBackend; its private
# half is published with it, so a deployment that trusts this key trusts anyone.
ORIGINAL_PUBLISHED_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxF2uf9o4z4Wsg1sMHQeN
lSNoz09CV6psTgKOuUH5jyzzqP/Dd2WSfEzFu965dh1nT2Q8Pc+g8nu8y0Fbuh4z
dCDAHXJg629VYxTNQDjBXNsDeMB1x3APGGLCkTnNnm4AVL5c2/+ZqmpX52rmqV0c
VR8QJ7L2hsTsHsNPGtbx8UMLIX+hkocneqP33vxFk5hlLpIsERFtRXPDAWhF+/7A
amCRD3puUxE0P35eRt5kel3H6wXopwH9Jq6SS44NPu5EjuTR/Ne2oVYWfRUq1CP1
iKUI0u2y+aro9HRMqtNSASPxxDbcsadEhYqVB+7ak3X9qpTLM/dGy9vb8ZuizbwZ
KwIDAQAB
-----END PUBLIC KEY-----
"""


def test_the_originals_published_key_is_refused():
    with pytest.raises(ConfigError, match="whose private key is public"):
        load_public_key(settings(PUBLIC_KEY=ORIGINAL_PUBLISHED_PUBLIC_KEY))


def test_without_a_key_setting_the_default_key_file_is_used(monkeypatch, tmp_path, public_pem):
    monkeypatch.setattr(development_keys, "KEYS_DIR", tmp_path)
    with pytest.raises(ConfigError, match=f"No public key to validate tokens.*makes a pair in {tmp_path}"):
        load_public_key(settings())
    (tmp_path / "public.pem").write_text(public_pem)
    assert load_public_key(settings()).key_size == 2048


@pytest.mark.parametrize(("value", "expected"), [("normal", "NORMAL"), ("Full", "FULL")])
def test_the_setting_takes_either_mode_in_any_case(tmp_path, public_pem, value, expected):
    app = create_app(
        {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "PUBLIC_KEY": public_pem, "SQLITE_SYNCHRONOUS": value}
    )
    assert app.config["SQLITE_SYNCHRONOUS"] == expected
    with app.app_context():
        with db.engine.connect() as connection:
            in_effect = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
        db.engine.dispose()
    # PRAGMA synchronous reads back as a number.
    assert in_effect == {"NORMAL": 1, "FULL": 2}[expected]


@pytest.mark.parametrize("value", ["OFF", "EXTRA", "yes"])
def test_any_other_mode_stops_the_start_with_a_sentence(tmp_path, public_pem, value):
    with pytest.raises(ConfigError, match=f"SQLITE_SYNCHRONOUS must be FULL or NORMAL, not '{value}'"):
        create_app(
            {
                "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
                "PUBLIC_KEY": public_pem,
                "SQLITE_SYNCHRONOUS": value,
            }
        )
