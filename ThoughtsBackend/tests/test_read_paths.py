"""The fast read paths: exact totals without a COUNT(*) when the page tells, and the search index."""

import logging
import uuid
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa

from thoughts_backend.db import db
from thoughts_backend.models import Thought
from thoughts_backend.schema import downgrade_schema, upgrade_schema
from thoughts_backend.search import SEARCH_INDEX_NAME
from thoughts_backend.thoughts import ALL_THOUGHTS, THOUGHTS_OF_USER


@pytest.fixture
def five_thoughts(app):
    with app.app_context():
        db.session.add_all(Thought(username="bulk", text=f"t{n}") for n in range(5))
        db.session.commit()


@pytest.fixture
def statements(app):
    """Every statement the database receives while the test runs, but the statement timeout
    that each transaction sets behind a transaction pooler (postgresql_timeouts.py)."""
    seen = []
    with app.app_context():
        engine = db.engine

    def record(_conn, _cursor, statement, *_args):
        if not statement.startswith("SET LOCAL statement_timeout"):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize(
    ("query", "page_length"),
    [
        ("limit=10", 5),  # a short first page is the whole list
        ("limit=3&offset=3", 2),  # a short page after others ends the list
        ("limit=5", 5),  # a full page: more may follow
        ("limit=2&offset=1", 2),
        ("offset=5", 0),  # past the end: only a count can tell
        ("offset=50", 0),
    ],
)
def test_a_page_and_its_exact_total_come_from_one_statement(
    client, five_thoughts, statements, query, page_length
):
    response = client.get(f"/api/thoughts/?{query}")
    assert response.status_code == 200
    assert len(response.json) == page_length
    assert response.headers["X-Total-Count"] == "5"
    assert len(statements) == 1, statements


def test_total_of_an_empty_list(client, statements):
    response = client.get("/api/thoughts/")
    assert response.headers["X-Total-Count"] == "0"
    assert len(statements) == 1


def total_lookups(app, selection, limit: int, offset: int, **parameters) -> int:
    """How many times PostgreSQL ran the page statement's total lookup (its InitPlan), by
    EXPLAIN ANALYZE: 0 when the page told the total by itself."""
    with app.app_context(), db.engine.connect() as connection:
        statement = selection.page_json("postgresql").compile(dialect=connection.dialect)
        plan = connection.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}",
            statement.construct_params({"limit": limit, "offset": offset, **parameters}),
        ).scalar()
    nodes, loops = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        if node.get("Parent Relationship") in ("InitPlan", "SubPlan"):
            loops.append(node["Actual Loops"])
        nodes.extend(node.get("Plans", []))
    assert len(loops) == 1, plan
    return loops[0]


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("limit", "offset", "looked_up"), [(10, 0, 0), (3, 3, 0), (5, 0, 1), (2, 1, 1), (100, 5, 1)]
)
def test_postgresql_looks_the_total_up_only_when_the_page_cannot_tell(
    app, five_thoughts, limit, offset, looked_up
):
    assert total_lookups(app, ALL_THOUGHTS, limit, offset) == looked_up
    assert total_lookups(app, THOUGHTS_OF_USER, limit, offset, username="bulk") == looked_up


def test_my_total_counts_only_my_thoughts(client, five_thoughts, post_thought, auth):
    post_thought("mine", username="dora")
    post_thought("mine too", username="dora")
    response = client.get("/api/me/thoughts/?limit=1", headers=auth("dora"))
    assert [t["text"] for t in response.json] == ["mine"]
    assert response.headers["X-Total-Count"] == "2"


def test_search_total_when_the_page_is_full(client, post_thought):
    for n in range(3):
        post_thought(f"Cats {n}")
    post_thought("dogs")
    response = client.get("/api/thoughts/?search=CAT&limit=2")
    assert [t["text"] for t in response.json] == ["Cats 0", "Cats 1"]
    assert response.headers["X-Total-Count"] == "3"


def test_one_thought_is_the_same_as_in_the_list(client, post_thought):
    created = post_thought("single")
    assert client.get(f"/api/thoughts/{created['id']}/").json == created
    assert client.get("/api/thoughts/").json == [created]


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),  # no fraction: isoformat writes none
        datetime(2024, 1, 1, 0, 0, 0, 5, tzinfo=UTC),  # leading zeros of the microseconds
        datetime(1999, 12, 31, 12, 30, 1, 123456, tzinfo=UTC),
        datetime(2030, 6, 1, 8, 0, 0, 500000, tzinfo=timezone(timedelta(hours=-7))),  # stored in UTC
    ],
)
def test_the_page_the_database_writes_is_what_to_dict_writes(app, client, timestamp):
    """The list's and the single thought's JSON come from SQL: they are what Thought.to_dict writes."""
    texts = [
        "Caf\u00e9 \u6f22\u5b57 \U0001f600",
        'say "hi" \\ back/slash',
        "two\nlines\tand a tab",
        "\x01 control",
    ]
    with app.app_context():
        thoughts = [Thought(username="\u00e9lodie", text=text, timestamp=timestamp) for text in texts]
        db.session.add_all(thoughts)
        db.session.commit()
        expected = [thought.to_dict() for thought in thoughts]
    response = client.get("/api/thoughts/")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == expected
    assert [client.get(f"/api/thoughts/{t['id']}/").json for t in expected] == expected
    assert response.json[0]["timestamp"] == timestamp.astimezone(UTC).isoformat()


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_search_reads_the_trigram_index(app, post_thought):
    post_thought("a needle in the haystack")
    with app.app_context():
        indexes = {index["name"] for index in sa.inspect(db.engine).get_indexes("thought")}
        assert SEARCH_INDEX_NAME in indexes
        # Twice: the migration runs on every start, and does nothing at head.
        assert upgrade_schema(db.engine) is False
        from thoughts_backend.search import SEARCHES

        page = SEARCHES["postgresql"].page_json("postgresql")
        # In a transaction (the engine runs in autocommit): SET LOCAL ends with it, and the
        # pooled connection goes back as it was.
        with db.engine.connect().execution_options(isolation_level="READ COMMITTED") as connection:
            # A few rows make a sequential scan cheapest; forbid it to see if the index can serve.
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            sql = str(page.compile(db.engine))
            parameters = {"pattern": "%NeEdLe%", "limit": 10, "offset": 0}
            plan = connection.exec_driver_sql("EXPLAIN " + sql, parameters).scalars()
            assert SEARCH_INDEX_NAME in "\n".join(plan)


@pytest.fixture
def database_without_trigram_rights(postgresql_server_url):
    """A fresh database, and a role that may create tables there but not extensions."""
    server = sa.make_url(postgresql_server_url).set(drivername="postgresql")
    name, role = f"thoughts_notrgm_{uuid.uuid4().hex[:8]}", f"limited_{uuid.uuid4().hex[:8]}"
    # A password, for servers that ask for one (docker-compose's db); trust ignores it.
    password = uuid.uuid4().hex
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    database = server.set(database=name)
    with psycopg.connect(database.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"')
    try:
        yield database.set(drivername="postgresql+psycopg", username=role, password=password)
    finally:
        with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.postgresql
def test_schema_without_the_extension_right_warns_once_and_search_still_works(
    database_without_trigram_rights, caplog
):
    engine = sa.create_engine(database_without_trigram_rights)
    try:
        with caplog.at_level(logging.WARNING, logger="thoughts_backend.schema"):
            upgrade_schema(engine)
        (warning,) = caplog.records
        assert "pg_trgm" in warning.getMessage()
        assert "CREATE EXTENSION pg_trgm" in warning.getMessage()
        assert f"CREATE INDEX {SEARCH_INDEX_NAME} ON thought USING gin" in warning.getMessage()
        assert "permission denied" in warning.getMessage()
        with engine.begin() as connection:
            connection.execute(sa.insert(Thought.__table__).values(username="u", text="Hay and needle"))
            found = connection.scalar(
                sa.select(sa.func.count()).where(Thought.text.ilike("%NEEDLE%", escape="/"))
            )
        assert found == 1
        assert SEARCH_INDEX_NAME not in {i["name"] for i in sa.inspect(engine).get_indexes("thought")}
    finally:
        engine.dispose()


def stored_and_counted(connection) -> tuple[int, int]:
    return (
        connection.scalar(sa.text("SELECT thoughts FROM thought_total")),
        connection.scalar(sa.text("SELECT count(*) FROM thought")),
    )


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_list_total_is_the_stored_one_not_a_count(client, five_thoughts, statements):
    response = client.get("/api/thoughts/?limit=2")
    assert response.headers["X-Total-Count"] == "5"
    assert len(statements) == 1
    total = statements[0].partition(" ELSE ")[2].partition(" END ")[0]
    assert "thought_total" in total
    assert "count(" not in total.lower()


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_stored_total_follows_every_write(app, client, post_thought, auth, five_thoughts):
    first = post_thought("mine", username="erin")
    post_thought("mine too", username="erin")
    assert client.delete(f"/api/me/thoughts/{first['id']}/", headers=auth("erin")).status_code == 204
    assert client.delete("/admin/thoughts/1/", headers=auth("root", admin=True)).status_code == 204
    with app.app_context(), db.engine.begin() as connection:
        assert stored_and_counted(connection) == (5, 5)
        # Bulk statements, as an operator might run them: one trigger call each.
        connection.execute(
            sa.text(
                "INSERT INTO thought (username, text, timestamp) SELECT 'bulk', 't', now() FROM generate_series(1, 50)"
            )
        )
        connection.execute(sa.text("DELETE FROM thought WHERE id % 3 = 0"))
        assert stored_and_counted(connection)[0] == stored_and_counted(connection)[1]
        connection.execute(sa.text("TRUNCATE thought"))
        assert stored_and_counted(connection) == (0, 0)


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_stored_total_starts_from_the_rows_already_there(app):
    with app.app_context():
        engine = db.engine
        # A database from before the stored total (revision 0003), with rows.
        downgrade_schema(engine, "0003")
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO thought (username, text, timestamp) SELECT 'old', 't', now() FROM generate_series(1, 7)"
                )
            )
        assert upgrade_schema(engine) is True
        assert upgrade_schema(engine) is False  # again, as on every start: nothing changes
        with engine.connect() as connection:
            assert stored_and_counted(connection) == (7, 7)
        # Taken back to before the total and forward again: counted afresh.
        downgrade_schema(engine, "0003")
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM thought WHERE id > 3")
        upgrade_schema(engine)
        with engine.connect() as connection:
            assert stored_and_counted(connection) == (3, 3)
