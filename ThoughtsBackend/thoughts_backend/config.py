"""Configuration: defaults, then environment variables, then the caller's overrides.

Every setting is checked here, at start-up, so that a wrong value stops the service with
one sentence that says what to fix, instead of failing at the first request.
"""

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

if TYPE_CHECKING:
    import sqlalchemy as sa

CODE_DIR = Path(__file__).resolve().parent.parent
# Where `generate-keys` puts a development pair, and where the key is looked for when
# neither PUBLIC_KEY nor PUBLIC_KEY_FILE is set (so `flask create-token` works in a shell
# or `docker exec` beside a server that start_server.sh gave a generated key).
DEFAULT_PUBLIC_KEY_FILE = CODE_DIR / "keys" / "public.pem"

DEFAULTS = {
    "DATABASE_ENGINE": "SQLITE",
    "SQLITE_PATH": str(CODE_DIR / "db.sqlite3"),
    "POSTGRES_PORT": "5432",
    "TOKEN_LEEWAY_SECONDS": "10",
    "MAX_CONTENT_LENGTH": str(64 * 1024),
    "SQLITE_BUSY_TIMEOUT_MS": "5000",
    "SQLITE_SYNCHRONOUS": "FULL",
    "POSTGRES_STATEMENT_TIMEOUT_MS": "3000",
    "POSTGRES_TRANSACTION_POOLER": "false",
}

# The names a caller may set, in the environment or in create_app's overrides.
SETTING_NAMES = (
    *DEFAULTS,
    "DATABASE_URL",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_HOST",
    "PUBLIC_KEY",
    "PUBLIC_KEY_FILE",
)

MINIMUM_RSA_KEY_BITS = 2048

# SQLite's synchronous modes that keep a WAL database whole (db.configure_sqlite): FULL
# syncs the WAL at every commit, so a 201 survives a power loss; NORMAL syncs it only at
# checkpoints, so the last commits before a power loss or a host crash may be lost (a
# process that dies loses nothing either way).
SQLITE_SYNCHRONOUS_MODES = ("FULL", "NORMAL")

# SHA-256 of the DER public keys whose private halves are published, so anyone can mint
# tokens for them: the key hard-coded in the original ThoughtsBackend's config.py.
PUBLISHED_KEY_FINGERPRINTS = frozenset({"b2043c0cc72b110b1663659fc6c4fe65912e33ee746d4523af55ea1b2fed4a8f"})


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and how to fix it."""


def gather_settings(environ: Mapping[str, str], overrides: Mapping | None = None) -> dict:
    """Merge defaults, environment and overrides, keeping only the names we know.

    An empty environment variable counts as unset, as in most container tooling.
    """
    settings = dict(DEFAULTS)
    for name in SETTING_NAMES:
        value = environ.get(name)
        if value not in (None, ""):
            settings[name] = value
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings


def database_url(settings: Mapping) -> "sa.URL":
    """The SQLAlchemy URL: DATABASE_URL if given, else built from DATABASE_ENGINE."""
    # Here, not at the top: the key tools (cli.py) import this module and need no database.
    import sqlalchemy as sa

    if settings.get("DATABASE_URL"):
        try:
            url = sa.make_url(settings["DATABASE_URL"])
        except sa.exc.ArgumentError:
            raise ConfigError(
                "DATABASE_URL is not a valid database URL; expected e.g. "
                "postgresql+psycopg://user:password@host:5432/dbname or sqlite:////path/db.sqlite3"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"DATABASE_URL uses {url.get_backend_name()!r}; only sqlite and postgresql are supported"
            )
        if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url

    engine = str(settings["DATABASE_ENGINE"]).upper()
    if engine == "SQLITE":
        return sa.URL.create("sqlite", database=str(settings["SQLITE_PATH"]))
    if engine == "POSTGRESQL":
        missing = [n for n in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_HOST") if not settings.get(n)]
        if missing:
            raise ConfigError(
                f"DATABASE_ENGINE=POSTGRESQL needs {', '.join(missing)} to be set "
                "(or give a full DATABASE_URL instead)"
            )
        port = _integer(settings, "POSTGRES_PORT", minimum=1, maximum=65535)
        return sa.URL.create(
            "postgresql+psycopg",
            username=settings["POSTGRES_USER"],
            password=settings.get("POSTGRES_PASSWORD") or None,
            host=settings["POSTGRES_HOST"],
            port=port,
            database=settings["POSTGRES_DB"],
        )
    raise ConfigError(f"DATABASE_ENGINE must be SQLITE or POSTGRESQL, not {settings['DATABASE_ENGINE']!r}")


def load_public_key(settings: Mapping) -> rsa.RSAPublicKey:
    """Parse the token-validation key once, from PUBLIC_KEY (PEM text) or PUBLIC_KEY_FILE."""
    text, source = settings.get("PUBLIC_KEY"), "PUBLIC_KEY"
    if text and settings.get("PUBLIC_KEY_FILE"):
        raise ConfigError("Set either PUBLIC_KEY or PUBLIC_KEY_FILE, not both")
    if not text:
        path = settings.get("PUBLIC_KEY_FILE")
        if not path and DEFAULT_PUBLIC_KEY_FILE.is_file():
            path = str(DEFAULT_PUBLIC_KEY_FILE)
        if not path:
            raise ConfigError(
                "No public key to validate tokens: set PUBLIC_KEY_FILE to an RSA public key "
                f"PEM file (or PUBLIC_KEY to its text); for development, "
                f"`python -m thoughts_backend generate-keys` makes a pair in {DEFAULT_PUBLIC_KEY_FILE.parent}"
            )
        source = f"PUBLIC_KEY_FILE ({path})"
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise ConfigError(f"Cannot read {source}: {error.strerror}") from None

    if "PRIVATE KEY" in text:
        raise ConfigError(
            f"{source} holds a private key; give the service only the public key "
            "(`openssl rsa -in private.pem -pubout`)"
        )
    try:
        key = serialization.load_pem_public_key(text.encode())
    except ValueError:
        raise ConfigError(f"{source} is not a PEM-encoded public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{source} must be an RSA public key: tokens are RS256")
    if public_key_fingerprint(key) in PUBLISHED_KEY_FINGERPRINTS:
        raise ConfigError(
            f"{source} is the original ThoughtsBackend's example key, whose private key is public: "
            "anyone could sign tokens for it. Make your own pair with `python -m thoughts_backend generate-keys`"
        )
    if key.key_size < MINIMUM_RSA_KEY_BITS:
        raise ConfigError(
            f"{source} is a {key.key_size}-bit RSA key; use at least {MINIMUM_RSA_KEY_BITS} bits"
        )
    return key


def public_key_fingerprint(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


# libpq's own timeouts, so that a PostgreSQL that stops answering, without refusing or
# resetting (a network partition, a failover that moved its address), costs a request a few
# seconds and a 503, well inside uWSGI's harakiri, instead of a worker hung until it is
# killed. A stopped server refuses at once and needs none of them.
POSTGRESQL_CONNECT_ARGS = {
    # A new connection that gets no answer (libpq's minimum is 2 s).
    "connect_timeout": 2,
    # Data sent and not acknowledged for this long (ms) ends the connection: a query, the
    # pool's ping, a commit sent into the void. A long query is not affected: once sent, it
    # is acknowledged, and waiting for its result sends nothing.
    "tcp_user_timeout": 2000,
    # An idle pooled connection is probed, so that a dead one is found before use.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def postgresql_connect_args(
    url: "sa.URL", statement_timeout_ms: int, transaction_pooler: bool = False
) -> dict:
    """POSTGRESQL_CONNECT_ARGS and the statement timeout, under what DATABASE_URL says.

    SQLAlchemy lays connect_args over the URL's own parameters: whatever the URL sets
    (`?connect_timeout=10`, `?options=-c search_path=app`) is kept, and the statement
    timeout is added to the URL's `options`, unless those already set one.

    Behind a pooler in transaction mode, nothing goes into `options` (PgBouncer refuses the
    startup parameter; postgresql_timeouts.py sets the timeout per transaction instead), and
    psycopg prepares no statement: a statement prepared on one server connection is unknown
    to the next transaction's, and psycopg prepares one after its fifth run.
    """
    arguments = {name: value for name, value in POSTGRESQL_CONNECT_ARGS.items() if name not in url.query}
    if transaction_pooler:
        if "options" in url.query:
            raise ConfigError(
                "DATABASE_URL sets `options`, which a pooler in transaction mode refuses "
                "(POSTGRES_TRANSACTION_POOLER=true): set those parameters on the database or "
                "role instead (ALTER ROLE ... SET ...)"
            )
        return {**arguments, "prepare_threshold": None}
    options = url.query.get("options", "")
    if not isinstance(options, str):  # `options` given more than once comes as a tuple: not merged
        options = ""
    if statement_timeout_ms and "statement_timeout" not in options:
        # The server cancels a statement that runs or waits (for a lock held by a long
        # transaction, a migration) longer than this: a 503 instead of a worker held until
        # harakiri. 0 leaves it to the server's own setting (a pooler such as PgBouncer may
        # refuse this startup option).
        arguments["options"] = f"{options} -c statement_timeout={statement_timeout_ms}".strip()
    return arguments


def transaction_pooler_setting(settings: Mapping) -> bool:
    """Whether DATABASE_URL leads to a pooler in transaction mode (PgBouncer's pool_mode =
    transaction), which shares each server connection between clients, transaction by transaction."""
    return _boolean(settings, "POSTGRES_TRANSACTION_POOLER")


def flask_config(settings: Mapping) -> dict:
    """Turn checked settings into the Flask configuration the app runs with."""
    url = database_url(settings)
    statement_timeout = _integer(settings, "POSTGRES_STATEMENT_TIMEOUT_MS", minimum=0)
    transaction_pooler = transaction_pooler_setting(settings)
    engine_options: dict = {}
    if url.get_backend_name() == "postgresql":
        # A pooled connection that PostgreSQL dropped (restart, failover) is replaced before
        # use by db.configure_postgresql, which needs no pool_pre_ping.
        engine_options = {"connect_args": postgresql_connect_args(url, statement_timeout, transaction_pooler)}
    return {
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
        "POSTGRES_STATEMENT_TIMEOUT_MS": statement_timeout,
        "POSTGRES_TRANSACTION_POOLER": transaction_pooler,
        "SQLITE_BUSY_TIMEOUT_MS": _integer(settings, "SQLITE_BUSY_TIMEOUT_MS", minimum=0),
        "SQLITE_SYNCHRONOUS": _choice(settings, "SQLITE_SYNCHRONOUS", SQLITE_SYNCHRONOUS_MODES),
        "TOKEN_LEEWAY_SECONDS": _integer(settings, "TOKEN_LEEWAY_SECONDS", minimum=0, maximum=300),
        "MAX_CONTENT_LENGTH": _integer(settings, "MAX_CONTENT_LENGTH", minimum=1024),
        "PUBLIC_KEY_OBJECT": load_public_key(settings),
        # flask-restx: plain JSON errors, no "did you mean" guesses, no X-Fields header in the docs.
        "RESTX_ERROR_404_HELP": False,
        "RESTX_MASK_SWAGGER": False,
        "PROPAGATE_EXCEPTIONS": False,
    }


def _boolean(settings: Mapping, name: str) -> bool:
    value = settings[name]
    if isinstance(value, bool):
        return value
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if str(value).lower() not in words:
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    return words[str(value).lower()]


def _choice(settings: Mapping, name: str, choices: tuple[str, ...]) -> str:
    value = str(settings[name]).upper()
    if value not in choices:
        raise ConfigError(f"{name} must be {' or '.join(choices)}, not {settings[name]!r}")
    return value


def _integer(settings: Mapping, name: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(settings[name])
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, not {settings[name]!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name} must be at least {minimum}{upper}, not {value}")
    return value
