"""The application factory: the app, its settings, database, API namespaces and commands."""

import os
from collections.abc import Mapping

from flask import Flask, Request
from werkzeug.exceptions import BadRequest

from . import auth, cli, db, errors, observability, request_limits, schema
from .admin_namespace import admin_namespace
from .api_namespace import api_namespace
from .config import flask_config, gather_settings
from .operations_namespace import operations_namespace


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

    # Observability first: its JSON logging must be in place for what the start logs (the
    # token keys below). And the order of the request hooks: Flask runs before_request hooks
    # in the order they were added, after_request hooks in the reverse order, so that
    # observability times, logs and counts every request, those the request limits refuse
    # too, its after_request hook running last, once the limits have read a refused body.
    observability.init_app(app)
    # Keys from a JWK Set URL are fetched now, before uWSGI forks the workers from this
    # process; an identity provider that does not answer yet leaves /readyz at 503.
    app.config["TOKEN_KEYS"].load()
    request_limits.init_app(app)
    db.init_app(app)

    api = errors.JsonErrorsApi(
        app,
        version="1.0",
        title="ThoughtsBackend API",
        description="A micro-blog of thoughts. Token routes take `Authorization: Bearer <RS256 JWT>`.",
        doc="/",
    )
    auth.init_app(api)
    api.add_namespace(api_namespace, path="/api")
    api.add_namespace(admin_namespace, path="/admin")
    api.add_namespace(operations_namespace, path="/")
    errors.init_app(app, api)

    cli.init_app(app)
    schema.init_app(app)
    return app
