"""The search of /api/thoughts/?search=: which index each database reads, and its statements.

A case-insensitive substring search, `LIKE '%word%'` with the word's own % and _ escaped.
Each database narrows the candidates down with an index that the migrations make
(migrations/versions/0003_search_index.py):
- PostgreSQL: a pg_trgm GIN index on thought.text (SEARCH_INDEX_NAME), which ILIKE reads
  by itself. Without the extension (a role that may not install it) the same ILIKE reads
  the whole table.
- SQLite: an FTS5 table with the trigram tokenizer (SQLITE_SEARCH_INDEX), external-content:
  it keeps the trigrams only and reads the text from thought, and triggers keep it in step
  with every write, the service's and an operator's. It folds case beyond ASCII, more than
  LIKE does, so it only finds the candidates; the same LIKE as the plain search decides.
"""

import sqlite3

import sqlalchemy as sa
from sqlalchemy import bindparam, column, table

from .models import MAX_TEXT_LENGTH, Thought
from .thoughts import Selection, TextInput

# A word longer than any text cannot be in one.
SEARCH_WORD = TextInput(
    "search",
    MAX_TEXT_LENGTH,
    f"Only thoughts whose text contains this, ignoring case (at most {MAX_TEXT_LENGTH} characters)",
    blank_allowed=True,
)
# PostgreSQL's trigram index (made by migration 0003 when pg_trgm can be installed).
SEARCH_INDEX_NAME = "ix_thought_text_trgm"
# SQLite's FTS5 trigram table and the triggers that keep it in step (migration 0003).
SQLITE_SEARCH_INDEX = "thought_text_trigram"
SQLITE_SEARCH_TRIGGERS = (
    "thought_text_trigram_insert",
    "thought_text_trigram_delete",
    "thought_text_trigram_update",
)
# The trigram tokenizer came with SQLite 3.34.0.
SQLITE_TRIGRAM_SINCE = (3, 34, 0)
# FTS5's trigram tokenizer indexes every run of 3 characters: a shorter word has none to
# look up (FTS5 would find nothing), so SQLite reads the whole table for it.
TRIGRAM_LENGTH = 3

# Without an index to narrow them down: every row's text, compared. PostgreSQL's ILIKE can
# use the trigram index. SQLite's LIKE already ignores case, for ASCII letters only, exactly
# as lower() does there; a lower() on the column would only cost a call per row.
SEARCHES = {
    "postgresql": Selection(Thought.text.ilike(bindparam("pattern"), escape="/")),
    "sqlite": Selection(Thought.text.like(bindparam("pattern"), escape="/")),
}

trigram_index = table(SQLITE_SEARCH_INDEX, column("rowid"), column(SQLITE_SEARCH_INDEX))
# SQLite, words of 3 characters or more: the trigram index finds the candidates, and the
# same LIKE as the plain search keeps exactly its matches. The index hands out its rows in
# rowid order, which is the ids' order, so a page stops reading at its last row instead of
# collecting every candidate and sorting them.
SQLITE_INDEXED_SEARCH = Selection(
    trigram_index.c[SQLITE_SEARCH_INDEX].op("MATCH")(bindparam("phrase")),
    Thought.text.like(bindparam("pattern"), escape="/"),
    source=trigram_index.join(Thought.__table__, Thought.__table__.c.id == trigram_index.c.rowid),
    order_by=trigram_index.c.rowid,
)


def search_pattern(word: str) -> str:
    """The LIKE pattern for `word`, or a 400 saying what is wrong with it."""
    SEARCH_WORD.check(word)
    # % and _ in the word match themselves, not any character.
    escaped = word.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def fts5_phrase(word: str) -> str:
    """The word as one FTS5 string: inside double quotes nothing is query syntax, and a
    double quote is written twice."""
    return '"' + word.replace('"', '""') + '"'


def search_of(dialect: str, word: str) -> tuple[Selection, dict]:
    """The selection that searches for `word` on this database, and its parameters."""
    parameters = {"pattern": search_pattern(word)}
    if dialect == "sqlite" and len(word) >= TRIGRAM_LENGTH:
        return SQLITE_INDEXED_SEARCH, {**parameters, "phrase": fts5_phrase(word)}
    return SEARCHES[dialect], parameters


def require_trigram_support(connection: sa.Connection) -> None:
    """Stop the start, in one sentence, when this SQLite cannot keep the search index.

    Not a fallback to reading the whole table: once a database has the index, its triggers
    make every write to thought go through FTS5, so a process without FTS5 could not write
    there at all. Failing at the start says so before any request does.
    """
    version, has_fts5 = connection.execute(
        sa.text("SELECT sqlite_version(), sqlite_compileoption_used('ENABLE_FTS5')")
    ).one()
    if has_fts5 and tuple(int(part) for part in version.split(".")) >= SQLITE_TRIGRAM_SINCE:
        return
    needed = ".".join(str(part) for part in SQLITE_TRIGRAM_SINCE)
    problem = (
        f"this SQLite ({version}, {'with' if has_fts5 else 'without'} FTS5) cannot index the search: "
        f"it needs FTS5 and its trigram tokenizer, in SQLite {needed} or later built with FTS5"
    )
    # An OperationalError, as for a database that cannot be used: init_db.py reports its
    # sentence and the start stops.
    raise sa.exc.OperationalError(
        "-- the search index needs FTS5 trigram", None, sqlite3.OperationalError(problem)
    )
