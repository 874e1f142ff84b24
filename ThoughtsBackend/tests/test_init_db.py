"""init_db.py migrates the schema to head, idempotently, with the username index, on both databases."""

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from .databases import drop_schema

CODE_DIR = os.path.dirname(os.path.dirname(__file__))


def run_init_db(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "init_db.py"],
        cwd=CODE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_db_twice_keeps_data(database_url):
    first = run_init_db(DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO thought (username, text, timestamp) VALUES ('a', 'kept', CURRENT_TIMESTAMP)")
        )
    second = run_init_db(DATABASE_URL=database_url)
    assert second.returncode == 0, second.stderr
    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT text FROM thought")) == "kept"
    indexes = sa.inspect(engine).get_indexes("thought")
    assert any(index["column_names"] == ["username"] for index in indexes)
    drop_schema(engine)
    engine.dispose()


def test_init_db_sqlite_uses_wal(tmp_path):
    path = tmp_path / "wal.db"
    assert run_init_db(SQLITE_PATH=str(path), DATABASE_URL="").returncode == 0
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        assert connection.scalar(sa.text("PRAGMA journal_mode")) == "wal"
    engine.dispose()


def test_init_db_bad_setting_is_one_sentence(tmp_path):
    result = run_init_db(DATABASE_ENGINE="ORACLE", DATABASE_URL="")
    assert result.returncode == 2
    assert result.stderr.strip() == "init_db: DATABASE_ENGINE must be SQLITE or POSTGRESQL, not 'ORACLE'"


def test_init_db_unreachable_database_is_a_clear_failure():
    result = run_init_db(DATABASE_URL="postgresql://postgres@127.0.0.1:9/test")
    assert result.returncode == 1
    assert (
        "init_db: cannot use the database at postgresql+psycopg://postgres@127.0.0.1:9/test" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.postgresql
def test_several_instances_starting_at_once_all_succeed(postgresql_server_url):
    """A new Deployment starts its pods together: every init_db.py must succeed."""
    engine = sa.create_engine(postgresql_server_url)
    drop_schema(engine)
    starts = [
        subprocess.Popen(
            [sys.executable, "init_db.py"],
            cwd=CODE_DIR,
            env={**os.environ, "DATABASE_URL": postgresql_server_url},
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(start.wait(timeout=60), start.stderr.read()) for start in starts]
    for start in starts:
        start.stderr.close()
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
    drop_schema(engine)
    engine.dispose()


@pytest.mark.postgresql
def test_a_migration_the_database_refuses_stops_with_one_sentence(postgresql_server_url):
    """A table made by hand where a revision makes one: no traceback, the reason, exit 1,
    and nothing of the failed migration left (its transaction is rolled back)."""
    engine = sa.create_engine(postgresql_server_url)
    drop_schema(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE thought_total (hand_made integer)")
    try:
        result = run_init_db(DATABASE_URL=postgresql_server_url)
        assert result.returncode == 1, result.stderr
        assert "init_db: cannot migrate the database at postgresql+psycopg://" in result.stderr
        assert 'relation "thought_total" already exists' in result.stderr
        assert "Traceback" not in result.stderr
        with engine.connect() as connection:
            assert set(sa.inspect(connection).get_table_names()) == {"thought_total"}
    finally:
        drop_schema(engine)
        engine.dispose()
