"""/healthz, /readyz and /version: for load balancers, orchestrators and people on call."""

import os

from flask import current_app
from flask_restx import Namespace, Resource, fields
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .db import db

operations_namespace = Namespace("operations", description="Health and identity of this instance")

status_model = operations_namespace.model("Status", {"status": fields.String(required=True)})
version_model = operations_namespace.model(
    "Version",
    {
        "version": fields.String(required=True, description="APP_VERSION given at build or start"),
        "commit": fields.String(required=True, description="GIT_COMMIT given at build or start"),
    },
)


@operations_namespace.route("healthz")
class Liveness(Resource):
    @operations_namespace.response(200, "The process answers", status_model)
    def get(self):
        """Liveness: answers while the worker can serve; never touches the database."""
        return {"status": "ok"}


@operations_namespace.route("readyz")
class Readiness(Resource):
    @operations_namespace.response(200, "Ready to serve", status_model)
    @operations_namespace.response(503, "The database does not answer, or no token keys are loaded")
    def get(self):
        """Readiness: token keys are loaded, and the database answers a trivial query."""
        keys = current_app.config["TOKEN_KEYS"]
        keys.current()  # a source still without keys tries again (at its bounded rate)
        if problem := keys.problem():
            return {"status": "unavailable", "message": problem}, 503
        try:
            db.session.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            db.session.rollback()
            reason = type(getattr(error, "orig", error)).__name__
            return {"status": "unavailable", "message": f"The database does not answer ({reason})"}, 503
        return {"status": "ready"}


@operations_namespace.route("version")
class Version(Resource):
    @operations_namespace.response(200, "What is running", version_model)
    def get(self):
        """The version and commit of this build."""
        return {
            "version": os.environ.get("APP_VERSION", "unknown"),
            "commit": os.environ.get("GIT_COMMIT", "unknown"),
        }
