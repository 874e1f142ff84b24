"""SQLite's search index (FTS5 trigram): the same answers as the plain LIKE, kept in step
with every write, made at start for a database of the previous version, and used."""

import importlib.util
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from thoughts_backend.db import Base, configure_sqlite, db
from thoughts_backend.models import MAX_TEXT_LENGTH, Thought
from thoughts_backend.schema import upgrade_schema
from thoughts_backend.search import (
    SEARCHES,
    SQLITE_INDEXED_SEARCH,
    SQLITE_SEARCH_INDEX,
    fts5_phrase,
    search_of,
    search_pattern,
)

from .support import wait_for

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CODE_DIR = os.path.dirname(os.path.dirname(__file__))

# Characters where an index could answer other than LIKE: LIKE's own wildcards and the
# pattern's escape, FTS5's quote, and letters that FTS5 folds but LIKE (ASCII only) does
# not: É/é, the Kelvin sign (FTS5 makes it k), the long s (s), dotted and dotless I.
TRICKY_ALPHABET = list("aAbBkKsS%_/\\\"' .éÉß\u212a\u017f\u0130\u0131\u6f22\U0001f600\t\n")
TRICKY_TEXTS = [
    "I like Cats a lot",
    "100% sure",
    "a_b and a%b",
    'say "hi" \\ back/slash',
    "it's 'quoted'",
    "CAFÉ au lait",
    "café crème",
    "\u212aelvin sign",
    "Kelvin letter",
    "\u017ftraße",
    "\u0130stanbul",
    "\U0001f600 emoji \u6f22\u5b57",
    "two\nlines\tand a tab",
    "x" * MAX_TEXT_LENGTH,
]
TRICKY_WORDS = [
    "cat", "CAT", "cAt", "100%", "0%", "%", "_", "a_b", "a%b", "%b", "/", "//", "\\", "back/slash",
    '"', '""', '"hi"', '"hi" \\', "'", "it's", "'quoted'", "café", "CAFÉ", "caf", "É", "é",
    "kelvin", "\u212aelvin", "elvin", "straße", "\u017ftra", "istanbul", "\u0130st", "\U0001f600",
    "\U0001f600 e", "\u6f22\u5b57", "\n", "o\nl", "\tand", "  ", "x" * MAX_TEXT_LENGTH,
    "x" * (MAX_TEXT_LENGTH - 1), "not there at all",
]  # fmt: skip


def ascii_lower(text: str) -> str:
    """What SQLite's LIKE compares: only A-Z folded. (str.lower() folds more: the Kelvin
    sign becomes a k, which LIKE does not match.)"""
    return text.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))


def random_corpus(generator: random.Random) -> tuple[list[str], list[str]]:
    """Texts of the tricky characters, and words: some cut from the texts with their ASCII
    case changed, some made at random (mostly matching nothing)."""
    texts = ["".join(generator.choices(TRICKY_ALPHABET, k=generator.randint(1, 40))) for _ in range(60)]
    texts = [text for text in texts if text.strip()]
    words = []
    for _ in range(150):
        text = generator.choice(texts)
        start = generator.randrange(len(text))
        cut = text[start : start + generator.randint(1, 6)]
        words.append("".join(c.swapcase() if c.isascii() and generator.random() < 0.5 else c for c in cut))
    words += ["".join(generator.choices(TRICKY_ALPHABET, k=generator.randint(1, 5))) for _ in range(50)]
    return texts, words


def unindexed_page(connection, word: str, limit: int, offset: int) -> tuple[str, int]:
    """The page's JSON and the total, as the plain LIKE (the search before the index) finds them."""
    plain = SEARCHES["sqlite"]
    parameters = {"pattern": search_pattern(word)}
    _, body, _ = connection.execute(
        plain.page_json("sqlite"), {**parameters, "limit": limit, "offset": offset}
    ).one()
    return body, connection.scalar(plain.count, parameters)


def store(app, texts) -> list[tuple[int, str]]:
    with app.app_context():
        thoughts = [Thought(username="corpus", text=text) for text in texts]
        db.session.add_all(thoughts)
        db.session.commit()
        return [(thought.id, thought.text) for thought in thoughts]


def test_indexed_search_answers_exactly_as_the_plain_like(app, client):
    generator = random.Random(20261128)  # noqa: S311 (not for secrets: a fixed seed, so a failure can be replayed)
    texts, words = random_corpus(generator)
    stored = store(app, TRICKY_TEXTS + texts)
    with app.app_context(), db.engine.connect() as connection:
        for word in TRICKY_WORDS + words:
            pages = {}
            # limit=1: whenever a word matches, the total comes from the COUNT(*) as well.
            for limit, offset in ((1000, 0), (1, 0), (1, 1)):
                response = client.get(
                    "/api/thoughts/", query_string={"search": word, "limit": limit, "offset": offset}
                )
                assert response.status_code == 200, (word, response.json)
                body, total = unindexed_page(connection, word, limit, offset)
                answer = (response.get_data(as_text=True), response.headers["X-Total-Count"])
                assert answer == (body, str(total)), word
                pages[limit, offset] = response.json
            if word.isascii():
                expected = [id_ for id_, text in stored if ascii_lower(word) in ascii_lower(text)]
                assert [thought["id"] for thought in pages[1000, 0]] == expected, word


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("café", ["café crème"]),  # the index also offers "CAFÉ au lait": LIKE folds ASCII only
        ("CAFÉ", ["CAFÉ au lait"]),
        ("kelvin", ["Kelvin letter"]),  # and "\u212aelvin sign", whose Kelvin sign FTS5 folds to k
        ("\u212aelvin", ["\u212aelvin sign"]),
        ("straße", []),  # the index folds the long s into s; LIKE does not
        ('"hi" \\ back/', ['say "hi" \\ back/slash']),
        ("a%b", ["a_b and a%b"]),
        ("a_b", ["a_b and a%b"]),
    ],
)
def test_the_index_only_narrows_the_like_decides(app, client, word, expected):
    store(app, TRICKY_TEXTS)
    response = client.get("/api/thoughts/", query_string={"search": word})
    assert [thought["text"] for thought in response.json] == expected
    assert response.headers["X-Total-Count"] == str(len(expected))


@pytest.mark.parametrize("word", ["a", "é", "%", "_", "/", "\\", '"', "ca", "É", "a_", '""'])
def test_words_shorter_than_a_trigram_read_the_table(app, client, word):
    store(app, TRICKY_TEXTS)
    selection, _ = search_of("sqlite", word)
    assert selection is SEARCHES["sqlite"]
    response = client.get("/api/thoughts/", query_string={"search": word})
    expected = [text for text in TRICKY_TEXTS if ascii_lower(word) in ascii_lower(text)]
    assert [thought["text"] for thought in response.json] == expected


def compiled_with(statement, engine, values: dict) -> tuple[str, tuple]:
    compiled = statement.compile(dialect=engine.dialect)
    parameters = compiled.construct_params(values)
    return str(compiled), tuple(parameters[name] for name in compiled.positiontup)


def query_plan(connection, statement, values: dict) -> list[str]:
    """The steps of SQLite's plan, but those of a scalar subquery (a page's total, whose plan
    is the count's, looked at by itself)."""
    sql, parameters = compiled_with(statement, connection.engine, values)
    steps, left_out = [], set()
    for step_id, parent, _, detail in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters):
        if parent in left_out or detail.startswith("SCALAR SUBQUERY"):
            left_out.add(step_id)
        else:
            steps.append(detail)
    return steps


def test_search_of_three_characters_reads_the_trigram_index(app):
    store(app, [f"thought {n} on topic" for n in range(200)] + ["at sunrise"])
    with app.app_context(), db.engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        selection, parameters = search_of("sqlite", "sun")
        assert selection is SQLITE_INDEXED_SEARCH
        page = query_plan(connection, selection.page_json("sqlite"), {**parameters, "limit": 10, "offset": 0})
        count = query_plan(connection, selection.count, parameters)
        for plan in (page, count):
            # The index first, its MATCH as the constraint (":M"), then each candidate by id.
            (index_step,) = [step for step in plan if SQLITE_SEARCH_INDEX in step]
            assert index_step.startswith(f"SCAN {SQLITE_SEARCH_INDEX} VIRTUAL TABLE INDEX ")
            assert ":M" in index_step
            assert plan.index(index_step) < plan.index("SEARCH thought USING INTEGER PRIMARY KEY (rowid=?)")
            assert "SCAN thought" not in plan
        # The index's rowid order is the page's: no sort of all the candidates.
        assert not any("TEMP B-TREE" in step for step in page)
        plain_selection, plain_parameters = search_of("sqlite", "su")
        plain = query_plan(connection, plain_selection.count, plain_parameters)
        assert plain == ["SCAN thought"]


def indexed_rowids(connection, word: str) -> list[int]:
    """What the index alone says holds `word`: a deleted row it still lists is a stale index."""
    return list(
        connection.scalars(
            sa.text("SELECT rowid FROM thought_text_trigram WHERE thought_text_trigram MATCH :phrase"),
            {"phrase": fts5_phrase(word)},
        )
    )


def index_matches_the_table(connection) -> None:
    """FTS5's own check of an external-content index against its table (raises when stale)."""
    connection.exec_driver_sql(
        "INSERT INTO thought_text_trigram (thought_text_trigram, rank) VALUES ('integrity-check', 1)"
    )


def test_the_index_follows_creates_deletes_and_updates(app, client, post_thought, auth):
    mine = post_thought("needle of mine", username="erin")
    theirs = post_thought("needle of theirs", username="fred")
    kept = post_thought("needle kept")
    with app.app_context(), db.engine.connect() as connection:
        assert indexed_rowids(connection, "needle") == [mine["id"], theirs["id"], kept["id"]]
    assert client.delete(f"/api/me/thoughts/{mine['id']}/", headers=auth("erin")).status_code == 204
    assert (
        client.delete(f"/admin/thoughts/{theirs['id']}/", headers=auth("root", admin=True)).status_code == 204
    )
    with app.app_context(), db.engine.begin() as connection:
        assert indexed_rowids(connection, "needle") == [kept["id"]]
        index_matches_the_table(connection)
        # The service never changes a text; an operator might.
        connection.execute(sa.update(Thought).where(Thought.id == kept["id"]).values(text="haystack now"))
        assert indexed_rowids(connection, "needle") == []
        assert indexed_rowids(connection, "haystack") == [kept["id"]]
        index_matches_the_table(connection)
    assert client.get("/api/thoughts/?search=needle").json == []
    assert [t["id"] for t in client.get("/api/thoughts/?search=HAYSTACK").json] == [kept["id"]]


def previous_version_database(url: str, texts) -> None:
    """A database as the previous version made it: the table, its rows, no search index."""
    engine = sa.create_engine(url)
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(sa.insert(Thought), [{"username": "old", "text": text} for text in texts])
    finally:
        engine.dispose()


def run_init_db(url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "init_db.py"],
        cwd=CODE_DIR,
        env={**os.environ, "DATABASE_URL": url},
        stderr=subprocess.PIPE,
        text=True,
    )


def test_database_of_the_previous_version_is_indexed_at_start(database_url):
    previous_version_database(database_url, [f"old thought {n}" for n in range(500)] + ["an old needle"])
    # Several instances starting on the one file at once: all start, the index is whole.
    starts = [run_init_db(database_url) for _ in range(3)]
    outcomes = [(start.wait(timeout=60), start.communicate()[1]) for start in starts]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            assert indexed_rowids(connection, "NEEDLE") == [501]
            assert len(indexed_rowids(connection, "old thought")) == 500
            index_matches_the_table(connection)
    finally:
        engine.dispose()


def search_index_migration():
    """migrations/versions/0003_search_index.py, as a module (its name starts with a digit)."""
    path = Path(CODE_DIR) / "migrations" / "versions" / "0003_search_index.py"
    spec = importlib.util.spec_from_file_location("search_index_migration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_start_waiting_for_another_starts_migration_does_not_build_again(database_url):
    """Two starts on a database of the previous version: the second waits for the write lock
    that the first's migration holds, then finds the migration done, and neither builds the
    index twice nor sees it half made. (The first is played by hand, in this process:
    Alembic's `context` is one per process, so two migrations cannot run in two threads.)"""
    previous_version_database(database_url, ["an old needle"])
    first = sa.create_engine(database_url)
    second = sa.create_engine(database_url)
    configure_sqlite(first, 5000)
    configure_sqlite(second, 5000)
    statements_of_the_second = []
    waiting_for_the_lock = threading.Event()

    def record(_connection, _cursor, statement, *_args):
        statements_of_the_second.append(statement)
        if statement == "BEGIN IMMEDIATE":
            waiting_for_the_lock.set()

    sa.event.listen(second, "before_cursor_execute", record)
    failures = []

    def start_second():
        try:
            upgrade_schema(second)
        except Exception as error:  # reported by the test's thread below
            failures.append(error)

    try:
        with first.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            for statement in search_index_migration().SQLITE_UPGRADE:
                connection.exec_driver_sql(statement)
            connection.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
            connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('0004')")
            # Made, not committed: the second start sees no revision, and waits.
            starter = threading.Thread(target=start_second)
            starter.start()
            wait_for(
                waiting_for_the_lock.is_set, timeout=30, what="the second start asked for the write lock"
            )
            connection.commit()
        starter.join(timeout=60)
        assert not starter.is_alive()
        assert failures == []
        assert not [statement for statement in statements_of_the_second if SQLITE_SEARCH_INDEX in statement]
        with second.begin() as connection:
            assert indexed_rowids(connection, "needle") == [1]
            index_matches_the_table(connection)
            # The app's busy timeout is back on the connection the migration used.
            assert connection.scalar(sa.text("PRAGMA busy_timeout")) == 5000
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.parametrize(
    ("version", "has_fts5", "problem"),
    [
        ("3.33.0", 1, "this SQLite (3.33.0, with FTS5) cannot index the search"),
        ("3.40.1", 0, "this SQLite (3.40.1, without FTS5) cannot index the search"),
    ],
)
def test_a_sqlite_that_cannot_index_the_search_stops_the_start(database_url, version, has_fts5, problem):
    engine = sa.create_engine(database_url)

    @sa.event.listens_for(engine, "connect")
    def pretend_to_be_another_build(dbapi_connection, _record):
        dbapi_connection.create_function("sqlite_version", 0, lambda: version)
        dbapi_connection.create_function("sqlite_compileoption_used", 1, lambda _option: has_fts5)

    try:
        with pytest.raises(sa.exc.OperationalError) as raised:
            upgrade_schema(engine)
        assert str(raised.value.orig).startswith(problem)
        assert "trigram tokenizer, in SQLite 3.34.0 or later built with FTS5" in str(raised.value.orig)
        assert sa.inspect(engine).get_table_names() == []  # nothing made
    finally:
        engine.dispose()
