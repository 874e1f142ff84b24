"""The application factory: the app, its settings, database, API namespaces and commands."""

import os
from collections.abc import Mapping

from flask import Flask, Request
from werkzeug.exceptions import BadRequest

from .admin_namespace import admin_namespace
from .api_namespace import api_namespace
from .auth import SWAGGER_AUTHORIZATIONS
from .cli import create_token, generate_keys
from .config import flask_config, gather_settings
from .db import configure_postgresql, configure_sqlite, db
from .errors import JsonErrorsApi, register_error_handlers
from .observability import init_observability
from .operations_namespace import operations_namespace
from .schema import MIGRATIONS_DIRECTORY


class JsonRequest(Request):
    def on_json_loading_failed(self, error):
        raise BadRequest(f"The request body is not valid JSON: {error}")


def create_app(overrides: Mapping | None = None) -> Flask:
    """Build the app from the environment; `overrides` (same names) win, for tests.

    Raises ConfigError, with one sentence saying what to fix, on a bad setting.
    """
    # The package's name, as Flask advises for a package: its root path and logger name.
    app = Flask("thoughts_backend")
    app.request_class = JsonRequest
    app.config.update(flask_config(gather_settings(os.environ, overrides)))
    app.json.sort_keys = False
    init_observability(app)
    # Keys from a JWK Set URL are fetched now, before uWSGI forks the workers from this
    # process; an identity provider that does not answer yet leaves /readyz at 503.
    app.config["TOKEN_KEYS"].load()

    db.init_app(app)
    with app.app_context():
        configure_sqlite(db.engine, app.config["SQLITE_BUSY_TIMEOUT_MS"], app.config["SQLITE_SYNCHRONOUS"])
        configure_postgresql(db.engine)
        if db.engine.dialect.name == "postgresql":
            # Here, not at the top: psycopg's import is a tenth of a start on SQLite, which
            # never uses it (SQLAlchemy loads a database's driver only for its URL, too).
            from .postgresql_timeouts import configure_postgresql_timeouts

            configure_postgresql_timeouts(
                db.engine,
                app.config["POSTGRES_STATEMENT_TIMEOUT_MS"],
                app.config["POSTGRES_TRANSACTION_POOLER"],
            )

    api = JsonErrorsApi(
        app,
        version="1.0",
        title="ThoughtsBackend API",
        description="A micro-blog of thoughts. Token routes take `Authorization: Bearer <RS256 JWT>`.",
        doc="/",
        authorizations=SWAGGER_AUTHORIZATIONS,
    )
    api.add_namespace(api_namespace, path="/api")
    api.add_namespace(admin_namespace, path="/admin")
    api.add_namespace(operations_namespace, path="/")
    register_error_handlers(app, api)

    if not under_uwsgi():
        init_migrate_commands(app)
    app.cli.add_command(generate_keys)
    app.cli.add_command(create_token)
    return app


def under_uwsgi() -> bool:
    """Whether this process is uWSGI's (its `uwsgi` module exists only there)."""
    try:
        import uwsgi  # noqa: F401
    except ImportError:
        return False
    return True


def init_migrate_commands(app: Flask) -> None:
    """`flask db ...` (Flask-Migrate) on this app's database and migrations/ folder.

    Not in the served app: importing Flask-Migrate (and so Alembic) would cost every start
    about half again of the app's own imports, and uWSGI needs neither on a database already
    at head (schema.upgrade_schema imports Alembic only when there is something to do).
    """
    from flask_migrate import Migrate

    Migrate(app, db, directory=str(MIGRATIONS_DIRECTORY))
