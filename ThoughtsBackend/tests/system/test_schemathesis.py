"""Fuzz every route against the service's own contract, /swagger.json, over real HTTP.

schemathesis reads the spec the running service publishes and generates requests from it
(boundary values, wrong types, random data, sequences that create then read or delete),
then checks each answer: no 5xx, every status code and response body as documented,
JSON where JSON is promised, tokens enforced. It runs three times: with no token, with a
user's token and with an admin's, so that the token routes are exercised past the 401.

The run is bounded and repeatable: a fixed number of examples per route, generated in
schemathesis' deterministic mode (the same cases every run). Each failure in the report
comes with a curl command; the whole run by hand, against `make run`:
    st run http://127.0.0.1:8000/swagger.json --checks all -n 25 --generation-deterministic
"""

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from thoughts_backend.token_validation import encode_token

from ..databases import drop_schema
from ..uwsgi_process import ServedApp

# Minutes, not seconds: with the long fault tests in `make test-faults`, which CI runs too.
pytestmark = pytest.mark.faults

MAX_EXAMPLES_PER_ROUTE = 25
RUN_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def service(request, tmp_path_factory, public_key_file):
    directory = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite:///{directory / 'db.sqlite3'}"
    else:
        database_url = request.getfixturevalue("postgresql_server_url")
    with ServedApp({"DATABASE_URL": database_url, "PUBLIC_KEY_FILE": str(public_key_file)}) as app:
        yield app
    if request.param == "postgresql":
        # The test database is shared by the run: leave it as the other tests expect it.
        engine = sa.create_engine(database_url)
        drop_schema(engine)
        engine.dispose()


def run_schemathesis(base_url: str, authorization: str | None, directory, excluded_checks=()) -> dict:
    report_path = directory / "report.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base_url}/swagger.json",
        "--checks=all",
        f"--max-examples={MAX_EXAMPLES_PER_ROUTE}",
        "--generation-deterministic",
        "--workers=1",
        "--request-timeout=10",
        "--no-color",
        "--report=json",
        f"--report-json-path={report_path}",
    ]
    if authorization:
        command += ["--header", f"Authorization: {authorization}"]
    if excluded_checks:
        command.append(f"--exclude-checks={','.join(excluded_checks)}")
    completed = subprocess.run(
        command, cwd=directory, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    assert report_path.exists(), completed.stdout + completed.stderr
    report = json.loads(report_path.read_text())
    report["output"] = completed.stdout + completed.stderr
    return report


@pytest.mark.parametrize("caller", ["anonymous", "user", "admin"])
def test_every_route_keeps_its_contract(service, caller, private_key, tmp_path):
    authorization = None
    if caller != "anonymous":
        token = encode_token(f"fuzz-{caller}", private_key, admin=caller == "admin", expires_in=3600)
        authorization = f"Bearer {token}"

    # An admin may delete a thought through /admin/ and then, as its author, get 404 from
    # /api/me/: right, but schemathesis' "created resource not found" check takes that 404
    # for a lost resource, since it does not know the two routes name the same thought.
    excluded = ["ensure_resource_availability"] if caller == "admin" else []
    report = run_schemathesis(service.url, authorization, tmp_path, excluded)

    output = report["output"]
    assert report["failures"] == [], output
    assert report["errors"] == [], output
    assert report["exit_code"] == 0, output
    operations = report["operations"]
    assert operations["tested"] == operations["total"] > 0, output
    generated = report["test_cases"]["generated"]
    assert generated > 0
    print(f"\nschemathesis ({caller}): {operations['tested']} operations, {generated} test cases, 0 failures")
