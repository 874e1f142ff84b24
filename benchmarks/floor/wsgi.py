"""The floors: the least a Flask app costs per request, with the ceiling's fixed JSON list.

The benchmark serves this directory like the ceiling (as CODE_DIR, under the same script and
uwsgi.ini, unchanged), once per floor, chosen by FLOOR, answering GET /floor:

- `flask`: one Flask route returning the ceiling's bytes as a Response;
- `flask-restx`: one flask-restx Resource on an Api, the same Response (as the service's get,
  list and search routes return theirs);
- `observability`: that Resource with the service's own request hooks
  (thoughts_backend.observability: request id, JSON access log line, Prometheus metrics).

No database and no JSON encoding per request: what separates a floor from the ceiling is the
framework (and the hooks), nothing the service's own routes do. Its share of the ceiling's
requests per second bounds the service's.
"""

import importlib.util
import logging
import os
import sys
from pathlib import Path

from flask import Flask, Response
from flask_restx import Api, Resource

HERE = Path(__file__).resolve().parent
FLOORS = ("flask", "flask-restx", "observability")
# Not "/": flask-restx answers 404 there for an Api without its Swagger UI.
PATH = "/floor"


def ceiling_body() -> bytes:
    """The ceiling's answer, from ceiling/wsgi.py itself, so that both serve the same bytes."""
    spec = importlib.util.spec_from_file_location("ceiling_wsgi", HERE.parent / "ceiling" / "wsgi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BODY


def create_floor(floor: str) -> Flask:
    if floor not in FLOORS:
        raise ValueError(f"FLOOR must be one of {', '.join(FLOORS)}, not {floor!r}")
    body = ceiling_body()
    app = Flask(__name__)
    if floor == "flask":

        @app.get(PATH)
        def index():
            return Response(body, mimetype="application/json")

        return app
    if floor == "observability":
        sys.path.insert(0, str(HERE.parents[1] / "ThoughtsBackend"))
        from thoughts_backend import observability
        from thoughts_backend.observability import ACCESS_LOGGER

        # A tree from before 4a377f0 (compare.py, inprocess.py --code) names it init_observability.
        init_observability = getattr(observability, "init_app", None) or observability.init_observability
        init_observability(app)
        # The service's access records are at INFO, the level of its app's logger (named
        # thoughts_backend); this app's logger has another name.
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    api = Api(app, doc=False)

    @api.route(PATH)
    class Index(Resource):
        def get(self):
            return Response(body, mimetype="application/json")

    return app


application = create_floor(os.environ.get("FLOOR", "flask"))
