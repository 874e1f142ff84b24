"""What the API namespaces share: the thought's API model, paging, lookup and input checks."""

from flask import request
from flask_restx import Namespace, fields, inputs, reqparse
from sqlalchemy import func, select
from sqlalchemy.sql import Select

from .db import db
from .errors import ApiError
from .models import MAX_TEXT_LENGTH, Thought

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
# Above PostgreSQL's 32-bit integer: such ids cannot exist, and such offsets are past the end.
LARGEST_ID = 2**31 - 1
TOTAL_COUNT_HEADER = "X-Total-Count"


def thought_model(namespace: Namespace):
    return namespace.model(
        "Thought",
        {
            "id": fields.Integer(required=True, description="The thought's id"),
            "username": fields.String(required=True, description="Who wrote it"),
            "text": fields.String(required=True, description="What they thought"),
            "timestamp": fields.DateTime(required=True, description="When, ISO-8601 in UTC"),
        },
    )


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


def page_of(query: Select, limit: int, offset: int):
    """One page of `query` ordered by id, with the total in the X-Total-Count header."""
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(Thought.id).limit(limit).offset(offset))
    return [thought.to_dict() for thought in rows], 200, {TOTAL_COUNT_HEADER: str(total)}


def thought_or_404(thought_id: int) -> Thought:
    thought = db.session.get(Thought, thought_id) if thought_id <= LARGEST_ID else None
    if thought is None:
        raise ApiError(404, f"Thought {thought_id} does not exist")
    return thought


def invalid_input(field: str, problem: str) -> ApiError:
    return ApiError(400, "Input payload validation failed", errors={field: problem})


def checked_text(value) -> str:
    """The `text` of a new thought, or a 400 saying what is wrong with it."""
    if value is None:
        raise invalid_input("text", "'text' is required")
    if not isinstance(value, str):
        raise invalid_input("text", "'text' must be a string")
    if not value.strip():
        raise invalid_input("text", "'text' must not be empty")
    if len(value) > MAX_TEXT_LENGTH:
        raise invalid_input("text", f"'text' must be at most {MAX_TEXT_LENGTH} characters, not {len(value)}")
    if "\x00" in value:
        raise invalid_input("text", "'text' must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_input("text", "'text' must be valid Unicode (no lone surrogates)") from None
    return value


def submitted_text() -> str:
    """`text` from a JSON body, or from a form as the original service accepted."""
    if request.is_json:
        body = request.get_json()  # malformed JSON: werkzeug answers 400
        if not isinstance(body, dict):
            raise ApiError(400, 'The JSON body must be an object such as {"text": "..."}')
        return checked_text(body.get("text"))
    return checked_text(request.form.get("text"))
