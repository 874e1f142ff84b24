"""One place that turns every failure into a JSON answer: {"message": ..., "errors": ...}."""

import time

from flask import Flask, Response, current_app, request
from flask_restx import Api
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from werkzeug.exceptions import ClientDisconnected, HTTPException

from .db import db
from .request_limits import BODY_DONE, discard_unread_chunks, enforce_request_limits
from .token_validation import TokenError

BEARER_REALM = "thoughts"
DATABASE_RETRY_AFTER_SECONDS = 1
# An error answered before the body was read (413, 401) must still reach the client. A
# worker that closes the connection with the rest of the body unread makes its router fail
# (uWSGI's fastrouter, writing the buffered body to it, gets "broken pipe" and drops the
# answer; without the fastrouter, the kernel reset the client's connection instead). So
# the rest is read and dropped first. A body with a Content-Length has already been
# received whole by the fastrouter (uwsgi.ini): it is read at the speed of a local socket
# (measured on a shared machine: 64 MiB in 35-165 ms of the worker, 256 MiB in 0.1-0.4 s),
# up to this much and for at most this long.
MAX_DISCARDED_BODY_BYTES = 256 * 1024 * 1024
MAX_DISCARD_SECONDS = 2.0
# A chunked body is not buffered by the fastrouter and streams from the client as it
# comes: less of it is waited for.
MAX_DISCARDED_CHUNKED_BYTES = 1024 * 1024


class ApiError(Exception):
    """An expected failure with the status and message to answer with."""

    def __init__(self, status: int, message: str, errors: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> dict:
        body = {"message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class JsonErrorsApi(Api):
    def unauthorized(self, response):
        # flask-restx would replace our Bearer challenge with a Basic one.
        return response


def bearer_challenge(error: TokenError) -> str:
    if error.missing:
        return f'Bearer realm="{BEARER_REALM}"'
    description = str(error).replace('"', "'")
    return f'Bearer realm="{BEARER_REALM}", error="invalid_token", error_description="{description}"'


def api_error_answer(error: ApiError):
    return error.body(), error.status, error.headers


def token_error_answer(error: TokenError):
    return {"message": str(error)}, 401, {"WWW-Authenticate": bearer_challenge(error)}


def database_unavailable_answer(error: OperationalError):
    current_app.logger.error("database unavailable: %s", error.orig)
    message = "The database is unavailable; retry in a moment"
    return {"message": message}, 503, {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}


def http_error_answer(error: HTTPException):
    """Routing and protocol errors (404, 405, 413, ...) as JSON, outside flask-restx routes too."""
    headers = {
        k: v
        for k, v in error.get_response().headers.items()
        if k.lower() not in ("content-type", "content-length")
    }
    return {"message": error.description or error.name}, error.code, headers


def body_stalled_answer(_error: ClientDisconnected):
    """The body stopped arriving while a worker read it, waiting socket-timeout (uwsgi.ini)
    for each piece. Under uwsgi.ini the fastrouter hands workers only whole bodies with a
    Content-Length, so this answers where a body streams to the worker: a server set up
    without the fastrouter. Werkzeug calls it a disconnection; for a client still there,
    it is a request that timed out."""
    request.environ[BODY_DONE] = True  # not to be waited for a second time
    message = (
        "The request body stopped arriving before the Content-Length it announced; "
        "send the whole body without pausing"
    )
    return {"message": message}, 408


def unexpected_error_answer(_error: Exception):
    return {"message": "Internal server error; it has been logged"}, 500


def logged_unexpected_error_answer(error: Exception):
    # flask-restx logs the errors of its own routes; Flask does not log handled ones.
    current_app.logger.error("unexpected error", exc_info=error)
    return unexpected_error_answer(error)


def end_database_session(_error: BaseException | None) -> None:
    """Close the request's session, tolerating a database that died since the view ran.

    Closing rolls back the open transaction. If the database went away meanwhile, that
    rollback fails, and the answer, already decided and handed to the server, would be cut
    off after its headers. Instead the connection is dropped (the server rolls back an
    orphaned transaction itself) and the answer goes out whole.
    """
    try:
        db.session.remove()
    except SQLAlchemyError as error:
        current_app.logger.warning("database session closed with an error: %s", error)
        db.session().invalidate()
        db.session.remove()


def discard_unread_body(response: Response) -> Response:
    if response.status_code < 400 or request.environ.get(BODY_DONE):
        return response
    discard_unread_chunks(MAX_DISCARDED_CHUNKED_BYTES)
    if request.content_length:
        body = request.environ["wsgi.input"]
        remaining = min(request.content_length, MAX_DISCARDED_BODY_BYTES)
        deadline = time.monotonic() + MAX_DISCARD_SECONDS
        try:
            while remaining > 0 and time.monotonic() < deadline:
                chunk = body.read(min(remaining, 1024 * 1024))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass  # the client stopped sending or went away: the answer goes out as it is
    return response


def register_error_handlers(app: Flask, api: Api) -> None:
    # Limits on the request itself come before any view: after the observability hooks
    # (registered earlier), so that a refused request is logged and counted like any other.
    app.before_request(enforce_request_limits)
    app.after_request(discard_unread_body)
    # Teardown functions run newest first: this one runs before Flask-SQLAlchemy's own,
    # which db.init_app registered earlier and which then finds the session closed.
    app.teardown_appcontext(end_database_session)
    for exception, answer in (
        (ApiError, api_error_answer),
        (TokenError, token_error_answer),
        (OperationalError, database_unavailable_answer),
        (ClientDisconnected, body_stalled_answer),
    ):
        api.errorhandler(exception)(answer)
        app.register_error_handler(exception, answer)
    app.register_error_handler(HTTPException, http_error_answer)
    api.errorhandler(unexpected_error_answer)
    app.register_error_handler(Exception, logged_unexpected_error_answer)
