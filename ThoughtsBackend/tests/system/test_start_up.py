"""Starting the service: one import of the app per start, and a clear refusal when it cannot.

uWSGI's master loads wsgi.py, which checks the settings and migrates the schema to head (init_db.py's
main) before the workers are forked: start_server.sh runs no Python of its own, except once
to make a key pair when none is given or kept.
"""

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from thoughts_backend.schema import SCHEMA_LOCK_KEY, stored_revision

from ..databases import drop_schema
from ..support import wait_for
from ..uwsgi_process import CODE_DIR, ServedApp, free_port, is_alive


@pytest.fixture
def python_calls(tmp_path) -> tuple[dict, Path]:
    """A PATH whose `python` records its arguments, then runs the real interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "python-calls"
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {"PATH": path}, calls


def session_of(pid: int) -> int:
    """The session id of `pid`, from /proc; OSError if `pid` is gone."""
    # The command name, in parentheses, may hold spaces: the fields follow the last ')'.
    # After it: state, parent, process group, session.
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3])


def session_members(session: int) -> set[int]:
    """The processes of `session` alive now (zombies, already dead, are not counted)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            members.add(int(entry.name))
    return members


def recorded(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def tables(database: Path) -> set[str]:
    # closing(): sqlite3's own context manager ends the transaction but leaves the connection
    # open, which Python 3.13 reports (ResourceWarning) when it is collected.
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_the_master_creates_the_schema_and_the_script_runs_no_python(tmp_path, public_key_file, python_calls):
    path, calls = python_calls
    database = tmp_path / "new.sqlite3"
    env = {**path, "DATABASE_URL": f"sqlite:///{database}", "PUBLIC_KEY_FILE": str(public_key_file)}
    with ServedApp(env) as served:
        assert served.get("/api/thoughts/")[0] == 200
        output = served.output
    assert recorded(calls) == []
    assert "thought" in tables(database)
    assert f"init_db: schema ready in sqlite:///{database}" in output


@pytest.fixture
def code_dir_without_keys(tmp_path) -> Path:
    """The code, linked into a directory of its own, whose ./keys the test controls."""
    code = tmp_path / "code"
    code.mkdir()
    for name in ("wsgi.py", "init_db.py", "thoughts_backend"):
        (code / name).symlink_to(CODE_DIR / name)
    return code


def test_a_key_pair_is_made_once_then_kept_without_running_python(
    tmp_path, code_dir_without_keys, python_calls
):
    path, calls = python_calls
    env = {**path, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    with ServedApp(env, code_dir_without_keys) as served:
        assert served.get("/api/thoughts/")[0] == 200
    assert recorded(calls) == ["-m thoughts_backend generate-keys --if-missing --dir keys"]
    public_key = (code_dir_without_keys / "keys" / "public.pem").read_bytes()

    with ServedApp(env, code_dir_without_keys) as served:
        assert served.get("/api/thoughts/")[0] == 200
    assert len(recorded(calls)) == 1
    assert (code_dir_without_keys / "keys" / "public.pem").read_bytes() == public_key


def refused(env: dict) -> ServedApp:
    """A start that must fail: the stopped service, its output and status readable."""
    served = ServedApp(env, start_timeout=60)
    with pytest.raises(RuntimeError, match="did not start"):
        served.start()
    return served


@pytest.mark.parametrize(
    ("settings", "sentence"),
    [
        ({"PUBLIC_KEY_FILE": "/nonexistent/public.pem"}, "wsgi: Cannot read PUBLIC_KEY_FILE"),
        (
            {"DATABASE_ENGINE": "ORACLE", "DATABASE_URL": ""},
            "wsgi: DATABASE_ENGINE must be SQLITE or POSTGRESQL",
        ),
    ],
)
def test_a_bad_setting_stops_the_start_with_one_sentence(tmp_path, public_key_file, settings, sentence):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PUBLIC_KEY_FILE": str(public_key_file)}
    served = refused({**env, **settings})
    try:
        assert served.returncode == 2
        assert sentence in served.output
        assert "Traceback" not in served.output
    finally:
        served.close()


@pytest.fixture
def silent_database():
    """A port on the loopback that takes connections and never answers: a database host
    that hangs (overloaded, or half cut off) rather than refusing."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener


def test_an_unreachable_database_stops_the_start_with_one_sentence(public_key_file):
    # Port 9 (discard) has no server on the loopback: the connection is refused at once.
    served = refused(
        {"DATABASE_URL": "postgresql://postgres@127.0.0.1:9/test", "PUBLIC_KEY_FILE": str(public_key_file)}
    )
    try:
        assert served.returncode == 1
        assert (
            "init_db: cannot use the database at postgresql+psycopg://postgres@127.0.0.1:9/test"
            in served.output
        )
        assert "Traceback" not in served.output
    finally:
        served.close()


def test_a_database_that_never_answers_stops_the_start_instead_of_hanging(public_key_file, silent_database):
    """The schema step connects with the app's connect timeouts: without them the master,
    at a start or a reload, would wait for the database for ever."""
    port = silent_database.getsockname()[1]
    served = refused(
        {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/test",
            "PUBLIC_KEY_FILE": str(public_key_file),
        }
    )
    try:
        assert served.returncode == 1
        assert f"init_db: cannot use the database at postgresql+psycopg://postgres@127.0.0.1:{port}/test" in (
            served.output
        )
        assert "Traceback" not in served.output
    finally:
        served.close()


@pytest.mark.parametrize("arguments", [["create-token", "--help"], ["create-token", "alice"]])
def test_the_flask_cli_loads_wsgi_without_touching_the_database(tmp_path, silent_database, arguments):
    """`flask create-token` (FLASK_APP=wsgi in the images) only builds the app: the schema
    step is uWSGI's master's, so the command works with the database away."""
    keys = tmp_path / "keys"
    subprocess.run(
        [sys.executable, "-m", "thoughts_backend", "generate-keys", "--dir", str(keys)],
        cwd=CODE_DIR,
        capture_output=True,
        timeout=60,
        check=True,
    )
    port = silent_database.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "flask", *arguments],
        cwd=CODE_DIR,
        env={
            **os.environ,
            "FLASK_APP": "wsgi",
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/test",
            "PUBLIC_KEY_FILE": str(keys / "public.pem"),
            "PRIVATE_KEY_FILE": str(keys / "private.pem"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "init_db" not in result.stderr
    silent_database.setblocking(False)
    with pytest.raises(BlockingIOError):  # nobody connected to the database
        silent_database.accept()


@pytest.mark.postgresql
def test_instances_starting_together_on_a_new_database_all_serve(postgresql_server_url, public_key_file):
    """A new Deployment starts its pods at once: each master migrates in turn (the advisory lock), once."""
    engine = sa.create_engine(postgresql_server_url)
    drop_schema(engine)
    env = {"DATABASE_URL": postgresql_server_url, "PUBLIC_KEY_FILE": str(public_key_file)}
    with contextlib.ExitStack() as stack:
        instances = [stack.enter_context(contextlib.closing(ServedApp(env))) for _ in range(3)]
        with ThreadPoolExecutor(len(instances)) as pool:
            list(pool.map(ServedApp.start, instances))
        assert [instance.get("/api/thoughts/")[0] for instance in instances] == [200, 200, 200]
    drop_schema(engine)
    engine.dispose()


@pytest.mark.postgresql
@pytest.mark.parametrize(("signals", "status"), [(1, 0), (2, 1)])
def test_a_stop_signal_while_the_master_is_still_starting(
    postgresql_server_url, public_key_file, signals, status
):
    """The master ignores SIGINT and SIGTERM until it is ready. Held at the schema lock, it
    gets a SIGTERM: it finishes starting, then stops gracefully (0); or a second SIGTERM:
    it is killed at once (1). Either way the script exits and nothing is left running."""
    engine = sa.create_engine(postgresql_server_url)
    drop_schema(engine)  # an empty database: the start has a migration to run, under the lock
    served = ServedApp({"DATABASE_URL": postgresql_server_url, "PUBLIC_KEY_FILE": str(public_key_file)})
    try:
        with engine.connect() as lock_holder, engine.connect() as observer:
            lock_holder.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            # Launched, not start()ed: start() polls for readiness, and its connections,
            # queued until the router runs, would hold the stop back by themselves.
            served.port = free_port()
            served._launch()
            waiting = sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            wait_for(lambda: observer.scalar(waiting) > 0, 60, "the master to wait for the schema lock")
            observer.rollback()
            master = served.master_pid
            # start_server.sh runs uWSGI under setsid: the master leads a session of its own,
            # which its workers, router and anything they started belong to.
            assert session_of(master) == master
            for _ in range(signals):
                served.stop(signal.SIGTERM)
            if signals == 2:  # killed while it waits for the lock
                assert served.wait(timeout=30) == status
            lock_holder.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
            lock_holder.commit()
        assert served.wait(timeout=30) == status, served.output
        assert not is_alive(master)
        # Orphans are given to init, so the tree under the dead master is always empty: the
        # session it led finds any process of uWSGI's left running.
        assert session_members(master) == set()
        assert ("stopped by force" in served.output) == (status == 1)
    finally:
        served.close()
        drop_schema(engine)
        engine.dispose()


def test_wsgi_freezes_what_it_loaded_for_the_workers_to_share(tmp_path, public_key_file):
    """The objects loaded before the fork are kept out of the workers' garbage collections;
    none is collected while the app loads (a tenth of the start), and collection is on after."""
    # Collections that start once the app's package is being imported (in sys.modules from
    # then), until wsgi's import returns.
    program = (
        "import gc, sys\n"
        "during = []\n"
        "gc.callbacks.append(lambda phase, _: during.append(phase) if 'thoughts_backend' in sys.modules else None)\n"
        "import wsgi\n"
        "gc.callbacks.clear()\n"
        "print(gc.get_freeze_count(), during.count('start'), gc.isenabled())"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=CODE_DIR,
        env={
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "PUBLIC_KEY_FILE": str(public_key_file),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    frozen, collections_while_loading, enabled = result.stdout.split()
    assert int(frozen) > 10_000
    assert (int(collections_while_loading), enabled) == (0, "True")


def test_the_code_is_served_compiled_as_the_image_serves_it(tmp_path, public_key_file):
    """The launcher of the tests and benchmarks compiles the code to bytecode first, as the
    image's build does: a start measured here is a container's start, not one that also
    compiles every module (PYTHONDONTWRITEBYTECODE, which the image sets too, would keep
    Python from writing what it compiled, so each start would compile again)."""
    code = tmp_path / "code"
    shutil.copytree(
        CODE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "tests", "keys", "*.sqlite3*")
    )
    environment = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "PUBLIC_KEY_FILE": str(public_key_file),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with ServedApp(environment, code) as app:
        assert app.get("/api/thoughts/")[0] == 200
    modules = [code / "wsgi.py", code / "init_db.py", *(code / "thoughts_backend").glob("*.py")]
    assert len(modules) > 10
    assert [
        module.name for module in modules if not Path(importlib.util.cache_from_source(module)).is_file()
    ] == []


def test_generate_keys_imports_no_web_or_database_library(tmp_path):
    """start_server.sh runs it when it must make a key pair: it should cost a key, not the app."""
    program = (
        "import sys\n"
        "from thoughts_backend.cli import cli\n"
        f"cli(['generate-keys', '--dir', {str(tmp_path)!r}], standalone_mode=False)\n"
        "print(' '.join(name for name in ('flask', 'flask_restx', 'sqlalchemy', 'jwt') if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=CODE_DIR, capture_output=True, text=True, timeout=60, check=True
    )
    assert (tmp_path / "public.pem").is_file()
    assert result.stdout.strip() == ""


def test_migrate_on_start_false_leaves_the_database_to_the_migration_step(tmp_path, public_key_file):
    database = tmp_path / "db.sqlite3"
    environment = {"DATABASE_URL": f"sqlite:///{database}", "PUBLIC_KEY_FILE": str(public_key_file)}
    with ServedApp({**environment, "MIGRATE_ON_START": "false"}) as served:
        assert served.get("/healthz")[0] == 200
        assert "init_db" not in served.output
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        assert stored_revision(connection) is None
    engine.dispose()
    with ServedApp(environment) as served:  # the default: the master migrates
        assert served.get("/api/thoughts/")[0] == 200
        assert f"init_db: schema ready in sqlite:///{database}" in served.output
