"""A thought as the API shows and takes it: the spec's model and the database-written JSON,
both derived from models.Thought's columns; paging, lookup, and the text inputs' checks."""

import functools
from dataclasses import dataclass

from flask import Response, request
from flask_restx import Namespace, fields, inputs, reqparse
from sqlalchemy import (
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal_column,
    null,
    or_,
    select,
    table,
)

from .db import db
from .errors import ApiError
from .models import MAX_TEXT_LENGTH, Thought, UTCDateTime

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
# Above PostgreSQL's 32-bit integer: such ids cannot exist, and such offsets are past the end.
LARGEST_ID = 2**31 - 1
TOTAL_COUNT_HEADER = "X-Total-Count"


# A timestamp as Thought.to_dict writes it (datetime.isoformat() in UTC: no fraction when
# the microseconds are zero), computed by the database. SQLAlchemy stores SQLite timestamps
# as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC; '.000000' can only be a fraction there.
ISO_TIMESTAMP_SQL = {
    "sqlite": "replace(replace({column}, ' ', 'T'), '.000000', '') || '+00:00'",
    "postgresql": (
        "replace(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '')"
        " || '+00:00'"
    ),
}


# What the API makes of a column of each type (the most specific type first): the spec's
# field, and the SQL that writes the column's value as Thought.to_dict shows it
# (models.shown_value), per database, or None where the value is shown as it is.
SHOWN_TYPES = (
    (UTCDateTime, fields.DateTime, ISO_TIMESTAMP_SQL),
    (Integer, fields.Integer, None),
    (String, fields.String, None),
)


def shown_type(column) -> tuple[type[fields.Raw], dict | None]:
    """The spec's field type and the SQL (or None) for a column of Thought."""
    for column_type, field, sql in SHOWN_TYPES:
        if isinstance(column.type, column_type):
            return field, sql
    raise TypeError(
        f"The API cannot show column {column.key} ({column.type}): add its type to SHOWN_TYPES, "
        "and its Python form to models.shown_value"
    )


def api_field(column) -> fields.Raw:
    """The spec's field for a column of Thought, described by the column's `doc`."""
    field, _sql = shown_type(column)
    return field(required=not column.nullable, description=column.doc)


def thought_model(namespace: Namespace):
    """The spec's Thought: Thought's columns, as to_dict shows them."""
    return namespace.model("Thought", {column.key: api_field(column) for column in Thought.__table__.columns})


def page_parser() -> reqparse.RequestParser:
    parser = reqparse.RequestParser(bundle_errors=True)
    parser.add_argument(
        "limit",
        type=inputs.int_range(1, MAX_PAGE_SIZE),
        default=DEFAULT_PAGE_SIZE,
        location="args",
        help=f"How many thoughts to return, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})",
    )
    parser.add_argument(
        "offset",
        type=inputs.int_range(0, LARGEST_ID),
        default=0,
        location="args",
        help="How many thoughts to skip, for paging",
    )
    return parser


def shown_column(column, dialect: str):
    """A column of Thought as to_dict shows it, computed by the database."""
    _field, sql = shown_type(column)
    if sql is None:
        return column
    return literal_column(sql[dialect].format(column=f"{column.table.name}.{column.name}")).label(column.key)


def shown_columns(dialect: str) -> list:
    """The columns the API shows of a thought, in to_dict's order, as to_dict writes them."""
    return [shown_column(column, dialect) for column in Thought.__table__.columns]


def thought_object(columns, dialect: str):
    """One thought as a JSON object made by the database (json_build_object / json_object),
    with Thought.to_dict's keys in its order, from `columns` named as Thought's."""
    names = Thought.__table__.columns.keys()
    fields = [item for name in names for item in (literal_column(f"'{name}'"), columns[name])]
    return func.json_build_object(*fields) if dialect == "postgresql" else func.json_object(*fields)


class Selection:
    """Which thoughts a list shows, as statements built once: one page of them, and their count.

    A page of 200 thoughts cost mostly Python work per row: ORM objects, then dicts, date
    formatting and JSON encoding. So the database writes the page's JSON itself (the same
    keys, values and order as Thought.to_dict), and the service passes it through. The
    values are bound per request (`limit`, `offset` and the selection's own parameters).
    """

    def __init__(self, *where, stored_totals: dict | None = None, source=None, order_by=None):
        """`source` and `order_by`, for a selection that reads an index table joined to the
        thoughts: what it selects from, and a column whose order is the ids' order."""
        self.where = where
        self.source = Thought.__table__ if source is None else source
        self.order_by = Thought.__table__.c.id if order_by is None else order_by
        self._page_json: dict[str, object] = {}
        # COUNT(*) on the table itself: SQLite then counts b-tree pages instead of rows. The
        # same source and filter as the page's, so that the total counts what the pages show.
        self.count = select(func.count()).select_from(self.source).where(*where)
        # Per database, a statement that reads the total kept up to date (PostgreSQL: the
        # trigger-kept thought_total of migrations/versions/0004_thought_total.py).
        self.stored_totals = stored_totals or {}

    def page_json(self, dialect: str):
        """SELECT (rows on the page, the page as a JSON array, the total or NULL) for this
        database: one statement, one round trip to the server.

        A page shorter than `limit` that is not past the end tells the total by itself
        (offset + rows on it): the third column is then NULL, and the count, whose cost
        grows with the table, is not run (both databases evaluate only the CASE branch
        taken). Otherwise it is the stored total where the database keeps one, else the
        COUNT(*).
        """
        if dialect not in self._page_json:
            page = (
                select(*shown_columns(dialect))
                .select_from(self.source)
                .where(*self.where)
                .order_by(self.order_by)
                .limit(bindparam("limit"))
                .offset(bindparam("offset"))
                .subquery("page")
            )
            thought = thought_object(page.c, dialect)
            if dialect == "postgresql":
                array = func.coalesce(
                    cast(func.json_agg(thought).aggregate_order_by(page.c.id), Text),
                    literal_column("'[]'"),
                )
            else:
                # SQLite aggregates the rows of a LIMIT subquery in the subquery's order.
                array = func.json_group_array(thought)
            on_page = func.count()
            zero = literal_column("0")
            tells_total = and_(on_page < bindparam("limit"), or_(on_page > zero, bindparam("offset") == zero))
            total = self.stored_totals.get(dialect, self.count).scalar_subquery().correlate(None)
            self._page_json[dialect] = select(
                on_page, array, case((tells_total, null()), else_=total)
            ).select_from(page)
        return self._page_json[dialect]


@functools.cache
def one_thought_json(dialect: str):
    """SELECT one thought by id, as JSON the database writes (as a page's items): built once
    per database."""
    shown = {column.name: column for column in shown_columns(dialect)}
    thought = thought_object(shown, dialect)
    if dialect == "postgresql":
        thought = cast(thought, Text)
    return select(thought).where(Thought.__table__.c.id == bindparam("id"))


# PostgreSQL's total of all thoughts, kept by a trigger (migrations/versions/0004_thought_total.py).
STORED_TOTAL = select(column("thoughts")).select_from(table("thought_total"))
ALL_THOUGHTS = Selection(stored_totals={"postgresql": STORED_TOTAL})
THOUGHTS_OF_USER = Selection(Thought.__table__.c.username == bindparam("username"))


def page_of(selection: Selection, limit: int, offset: int, **parameters):
    """One page of `selection` ordered by id, with the total in the X-Total-Count header."""
    # Reads go through a connection of their own, not the ORM session: it is cheaper to
    # take and to give back, and nothing here needs the session's unit of work.
    with db.engine.connect() as connection:
        statement = selection.page_json(connection.dialect.name)
        on_page, body, total = connection.execute(
            statement, {"limit": limit, "offset": offset, **parameters}
        ).one()
    if total is None:
        total = offset + on_page
    return json_response(body, headers={TOTAL_COUNT_HEADER: str(total)})


def one_thought_or_404(thought_id: int) -> Response:
    """One thought as JSON, written by the database as the pages' are, or a 404."""
    body = None
    if thought_id <= LARGEST_ID:
        with db.engine.connect() as connection:
            body = connection.scalar(one_thought_json(connection.dialect.name), {"id": thought_id})
    if body is None:
        raise ApiError(404, f"Thought {thought_id} does not exist")
    return json_response(body)


def json_response(body: str, status: int = 200, headers: dict | None = None) -> Response:
    """An answer already encoded: flask-restx passes a Response through untouched."""
    return Response(body, status, headers, mimetype="application/json")


def thought_or_404(thought_id: int) -> Thought:
    thought = db.session.get(Thought, thought_id) if thought_id <= LARGEST_ID else None
    if thought is None:
        raise ApiError(404, f"Thought {thought_id} does not exist")
    return thought


def invalid_input(field: str, problem: str) -> ApiError:
    return ApiError(400, "Input payload validation failed", errors={field: problem})


# What the spec says a text may not be: a NUL character anywhere, and (unless blank is
# allowed) only whitespace.
NO_NUL_PATTERN = r"^[^\x00]*$"
NOT_BLANK_NO_NUL_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"


@dataclass(frozen=True)
class TextInput:
    """One declaration of a text the API takes: the spec's limits (a body's field, or the
    schema of a query argument, whose type this is) and the checks that enforce them with a
    400 saying what is wrong (check) come from here."""

    name: str
    max_length: int
    description: str
    blank_allowed: bool = False

    @property
    def pattern(self) -> str:
        return NO_NUL_PATTERN if self.blank_allowed else NOT_BLANK_NO_NUL_PATTERN

    def field(self) -> fields.String:
        """The field of a JSON body's model."""
        return fields.String(
            required=True,
            min_length=None if self.blank_allowed else 1,
            max_length=self.max_length,
            pattern=self.pattern,
            description=self.description,
        )

    @property
    def __schema__(self) -> dict:
        """The JSON schema of a query argument: reqparse puts a type's __schema__ in the spec."""
        schema = {"type": "string", "maxLength": self.max_length, "pattern": self.pattern}
        return schema if self.blank_allowed else {**schema, "minLength": 1}

    def __call__(self, value: str, *_argument) -> str:
        """As a reqparse type: the argument as given. The view checks it (check), so that it
        gets the 400 of every invalid input; reqparse would put its help text in front."""
        return value

    def check(self, value) -> str:
        """`value`, or a 400 saying what is wrong with it."""
        name = self.name
        if value is None:
            raise invalid_input(name, f"'{name}' is required")
        if not isinstance(value, str):
            raise invalid_input(name, f"'{name}' must be a string")
        if not self.blank_allowed and not value.strip():
            raise invalid_input(name, f"'{name}' must not be empty")
        if len(value) > self.max_length:
            raise invalid_input(
                name, f"'{name}' must be at most {self.max_length} characters, not {len(value)}"
            )
        if "\x00" in value:
            raise invalid_input(name, f"'{name}' must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid_input(name, f"'{name}' must be valid Unicode (no lone surrogates)") from None
        return value


THOUGHT_TEXT = TextInput("text", MAX_TEXT_LENGTH, "What you think: not blank, no NUL character")


def submitted_text() -> str:
    """`text` from a JSON body, or from a form as the original service accepted."""
    if request.is_json:
        body = request.get_json()  # malformed JSON: werkzeug answers 400
        if not isinstance(body, dict):
            raise ApiError(400, 'The JSON body must be an object such as {"text": "..."}')
        return THOUGHT_TEXT.check(body.get("text"))
    return THOUGHT_TEXT.check(request.form.get("text"))
