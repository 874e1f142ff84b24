"""One place that turns every failure into a JSON answer: {"message": ..., "errors": ...}."""

from flask import Flask, current_app, request
from flask_restx import Api
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import ClientDisconnected, HTTPException

from .request_limits import stop_reading_body
from .token_validation import TokenError

BEARER_REALM = "thoughts"
DATABASE_RETRY_AFTER_SECONDS = 1


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
    stop_reading_body(request.environ)  # not to be waited for a second time
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


def init_app(app: Flask, api: Api) -> None:
    """Every failure as JSON, from flask-restx's routes (api) and Flask's alike."""
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
