"""Configuration: defaults, then environment variables, then the caller's overrides.

Every setting is checked here, at start-up, so that a wrong value stops the service with
one sentence that says what to fix, instead of failing at the first request.
"""

import re
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa

from . import development_keys, token_keys
from .token_keys import JwksFile, KeySourceError, RemoteJwks, StaticKeys
from .token_validation import AUDIENCE_CLAIMS, DEFAULT_RULES, TokenRules

CODE_DIR = Path(__file__).resolve().parent.parent

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
    "TOKEN_USERNAME_CLAIM": "username",
    "TOKEN_AUDIENCE_CLAIM": "aud",
    "TOKEN_ADMIN_SCOPE": "admin",
    "TOKEN_ALGORITHMS": "RS256",
    "JWKS_REFRESH_SECONDS": "60",
    "MIGRATE_ON_START": "true",
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
    "JWKS_FILE",
    "JWKS_URL",
    "TOKEN_ISSUER",
    "TOKEN_AUDIENCE",
)

# SQLite's synchronous modes that keep a WAL database whole (db.configure_sqlite): FULL
# syncs the WAL at every commit, so a 201 survives a power loss; NORMAL syncs it only at
# checkpoints, so the last commits before a power loss or a host crash may be lost (a
# process that dies loses nothing either way).
SQLITE_SYNCHRONOUS_MODES = ("FULL", "NORMAL")


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


def database_url(settings: Mapping) -> sa.URL:
    """The SQLAlchemy URL: DATABASE_URL if given, else built from DATABASE_ENGINE."""
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
    """The first key of PUBLIC_KEY (PEM text) or PUBLIC_KEY_FILE, checked as the service checks it."""
    return load_public_keys(settings, token_algorithms(settings))[0].key


def load_public_keys(settings: Mapping, algorithms: tuple[str, ...]) -> list[token_keys.VerificationKey]:
    """Every key of PUBLIC_KEY (PEM text) or PUBLIC_KEY_FILE: one, or several for a rotation."""
    text, source = settings.get("PUBLIC_KEY"), "PUBLIC_KEY"
    if text and settings.get("PUBLIC_KEY_FILE"):
        raise ConfigError("Set either PUBLIC_KEY or PUBLIC_KEY_FILE, not both")
    if not text:
        path = settings.get("PUBLIC_KEY_FILE")
        if not path and (development_public_key := development_keys.public_key_file()):
            path = str(development_public_key)
        if not path:
            raise ConfigError(
                "No public key to validate tokens: set PUBLIC_KEY_FILE to an RSA public key "
                "PEM file (or PUBLIC_KEY to its text, JWKS_FILE, JWKS_URL, or TOKEN_ISSUER alone for "
                "its discovery document); for development, "
                f"`python -m thoughts_backend generate-keys` makes a pair in {development_keys.KEYS_DIR}"
            )
        source = f"PUBLIC_KEY_FILE ({path})"
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise ConfigError(f"Cannot read {source}: {error.strerror}") from None
    try:
        return token_keys.keys_from_pem(text, source, algorithms)
    except KeySourceError as error:
        raise ConfigError(str(error)) from None


def token_algorithms(settings: Mapping) -> tuple[str, ...]:
    """TOKEN_ALGORITHMS: names separated by commas or spaces, each an asymmetric JWS algorithm."""
    text = str(settings.get("TOKEN_ALGORITHMS", "RS256"))
    names = tuple(dict.fromkeys(name for name in re.split(r"[\s,]+", text) if name))
    supported = token_keys.SUPPORTED_ALGORITHMS
    if not names:
        raise ConfigError(f"TOKEN_ALGORITHMS is empty; choose from {', '.join(supported)}")
    for name in names:
        if name.lower() == "none" or name.upper().startswith("HS"):
            raise ConfigError(
                f"TOKEN_ALGORITHMS may not list {name}: tokens must be signed with a private key "
                f"({', '.join(supported)})"
            )
        if name not in supported:
            raise ConfigError(f"TOKEN_ALGORITHMS lists {name!r}; choose from {', '.join(supported)}")
    return names


# A claim's name (RFC 7519 §4: any string; these are the ones IdPs use) and a scope token
# (RFC 6749 §3.3: printable ASCII but space, '"' and '\\').
_CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,64}")
# Registered claims that are never a user's name.
_NOT_A_USERNAME = frozenset({"exp", "iat", "nbf", "aud", "iss", "jti", "scope", "scp", "typ"})


def token_rules(settings: Mapping, algorithms: tuple[str, ...]) -> TokenRules:
    claim = str(settings["TOKEN_USERNAME_CLAIM"])
    if not _CLAIM_NAME.fullmatch(claim) or claim in _NOT_A_USERNAME:
        raise ConfigError(
            f"TOKEN_USERNAME_CLAIM must name the claim that holds the user name "
            f"(e.g. username, preferred_username, sub, email), not {claim!r}"
        )
    admin_scope = str(settings["TOKEN_ADMIN_SCOPE"])
    if not _SCOPE_TOKEN.fullmatch(admin_scope):
        raise ConfigError(
            f"TOKEN_ADMIN_SCOPE must be one scope name (no spaces or quotes, e.g. admin), not {admin_scope!r}"
        )
    audience = settings.get("TOKEN_AUDIENCE") or None
    audience_claim = str(settings["TOKEN_AUDIENCE_CLAIM"]).strip()
    if audience_claim not in AUDIENCE_CLAIMS:
        raise ConfigError(
            "TOKEN_AUDIENCE_CLAIM must be aud, or client_id for Amazon Cognito access tokens, "
            f"not {settings['TOKEN_AUDIENCE_CLAIM']!r}"
        )
    if audience_claim == "client_id" and audience is None:
        raise ConfigError("TOKEN_AUDIENCE_CLAIM=client_id needs TOKEN_AUDIENCE: set it to the app client id")
    rules = TokenRules(
        username_claim=claim,
        issuer=settings.get("TOKEN_ISSUER") or None,
        audience=audience,
        audience_claim=audience_claim,
        algorithms=algorithms,
        admin_scope=admin_scope,
    )
    return DEFAULT_RULES if rules == DEFAULT_RULES else rules


def key_source(settings: Mapping, algorithms: tuple[str, ...]):
    """The one source of token keys that the settings name (token_keys.py), not yet fetched."""
    pem = [name for name in ("PUBLIC_KEY", "PUBLIC_KEY_FILE") if settings.get(name)]
    chosen = [*pem[:1], *(name for name in ("JWKS_FILE", "JWKS_URL") if settings.get(name))]
    if len(chosen) > 1:
        raise ConfigError(f"Set only one source of token keys, not {' and '.join(chosen)}")
    issuer, audience = settings.get("TOKEN_ISSUER"), settings.get("TOKEN_AUDIENCE")
    remote = settings.get("JWKS_URL") or (issuer and not chosen)
    if not remote:
        if settings.get("JWKS_FILE"):
            try:
                return JwksFile(settings["JWKS_FILE"], algorithms)
            except KeySourceError as error:
                raise ConfigError(str(error)) from None
        return StaticKeys(load_public_keys(settings, algorithms))

    name = "JWKS_URL" if settings.get("JWKS_URL") else "TOKEN_ISSUER (its discovery document)"
    if not issuer or not audience:
        raise ConfigError(
            f"Keys from {name} need both TOKEN_ISSUER and TOKEN_AUDIENCE: an identity provider "
            "signs tokens for many APIs, and only those for this one may pass"
        )
    refresh = _integer(settings, "JWKS_REFRESH_SECONDS", minimum=5, maximum=86400)
    try:
        if settings.get("JWKS_URL"):
            return RemoteJwks(
                algorithms, refresh, jwks_url=token_keys.check_url(settings["JWKS_URL"], "JWKS_URL")
            )
        return RemoteJwks(algorithms, refresh, issuer=token_keys.check_url(issuer, "TOKEN_ISSUER"))
    except KeySourceError as error:
        raise ConfigError(str(error)) from None


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


def postgresql_connect_args(url: sa.URL, statement_timeout_ms: int, transaction_pooler: bool = False) -> dict:
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
        if not transaction_pooler:
            # Each request is one statement (a write at most two, each complete by itself),
            # so none needs a transaction around it: without one, a read is one exchange
            # with the server instead of three (BEGIN, the SELECT, and the ROLLBACK that
            # returned the connection to the pool), and a write is committed by its own
            # statement, before the answer, as COMMIT did. Migrations take a transaction of
            # their own (schema.schema_lock). Behind a transaction pooler, each transaction
            # must set its own statement timeout (postgresql_timeouts.py): no autocommit there.
            engine_options["isolation_level"] = "AUTOCOMMIT"
    return {
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
        "POSTGRES_STATEMENT_TIMEOUT_MS": statement_timeout,
        "POSTGRES_TRANSACTION_POOLER": transaction_pooler,
        "SQLITE_BUSY_TIMEOUT_MS": _integer(settings, "SQLITE_BUSY_TIMEOUT_MS", minimum=0),
        "SQLITE_SYNCHRONOUS": _choice(settings, "SQLITE_SYNCHRONOUS", SQLITE_SYNCHRONOUS_MODES),
        "TOKEN_LEEWAY_SECONDS": _integer(settings, "TOKEN_LEEWAY_SECONDS", minimum=0, maximum=300),
        "MAX_CONTENT_LENGTH": _integer(settings, "MAX_CONTENT_LENGTH", minimum=1024),
        **token_config(settings),
        # Whether uWSGI's master migrates the database before it forks (wsgi.py).
        "MIGRATE_ON_START": _boolean(settings, "MIGRATE_ON_START"),
        # flask-restx: plain JSON errors, no "did you mean" guesses, no X-Fields header in the docs.
        "RESTX_ERROR_404_HELP": False,
        "RESTX_MASK_SWAGGER": False,
        "PROPAGATE_EXCEPTIONS": False,
    }


def token_config(settings: Mapping) -> dict:
    """TOKEN_KEYS (the key source) and TOKEN_RULES."""
    algorithms = token_algorithms(settings)
    return {"TOKEN_KEYS": key_source(settings, algorithms), "TOKEN_RULES": token_rules(settings, algorithms)}


BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _boolean(settings: Mapping, name: str) -> bool:
    value = settings[name]
    if isinstance(value, bool):
        return value
    try:
        return BOOLEANS[str(value).strip().lower()]
    except KeyError:
        raise ConfigError(f"{name} must be true or false, not {value!r}") from None


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
