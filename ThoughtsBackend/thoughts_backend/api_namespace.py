"""/api/thoughts/ (public reading) and /api/me/thoughts/ (the caller's own thoughts)."""

from flask_restx import Namespace, Resource

from .auth import BEARER_SECURITY, caller_claims
from .db import db
from .errors import ApiError
from .models import Thought
from .search import SEARCH_WORD, search_of
from .thoughts import (
    ALL_THOUGHTS,
    THOUGHT_TEXT,
    THOUGHTS_OF_USER,
    TOTAL_COUNT_HEADER,
    one_thought_or_404,
    page_of,
    page_parser,
    submitted_text,
    thought_model,
    thought_or_404,
)

api_namespace = Namespace("api", description="Read thoughts, and write your own")
thought = thought_model(api_namespace)
# The spec states what the routes refuse (THOUGHT_TEXT, SEARCH_WORD), so that the contract
# says which requests are valid; the views check the same declarations.
new_thought = api_namespace.model("NewThought", {"text": THOUGHT_TEXT.field()})

list_parser = page_parser()
search_parser = page_parser()


search_parser.add_argument("search", type=SEARCH_WORD, location="args", help=SEARCH_WORD.description)

PAGE_HEADERS = {TOTAL_COUNT_HEADER: "How many thoughts match, over all pages"}
TOKEN_ERRORS = {401: "No valid bearer token"}


@api_namespace.route("/thoughts/")
class ThoughtList(Resource):
    @api_namespace.expect(search_parser)
    @api_namespace.response(200, "The page of thoughts", [thought], headers=PAGE_HEADERS)
    @api_namespace.response(400, "A paging or search parameter is invalid")
    def get(self):
        """All thoughts, oldest first, a page at a time; `search` filters on the text."""
        args = search_parser.parse_args()
        if args["search"] is None:
            return page_of(ALL_THOUGHTS, args["limit"], args["offset"])
        # The engine's dialect, not the session's bind: asking the session would create one
        # for this request only to close it at the end.
        search, parameters = search_of(db.engine.dialect.name, args["search"])
        return page_of(search, args["limit"], args["offset"], **parameters)


@api_namespace.route("/thoughts/<int:thought_id>/")
@api_namespace.param("thought_id", "The thought's id")
class ThoughtItem(Resource):
    @api_namespace.response(200, "The thought", thought)
    @api_namespace.response(404, "No thought has this id")
    def get(self, thought_id: int):
        """One thought."""
        return one_thought_or_404(thought_id)


@api_namespace.route("/me/thoughts/")
class MyThoughtList(Resource):
    @api_namespace.doc(security=BEARER_SECURITY, responses=TOKEN_ERRORS)
    @api_namespace.expect(list_parser)
    @api_namespace.response(200, "The page of your thoughts", [thought], headers=PAGE_HEADERS)
    @api_namespace.response(400, "A paging parameter is invalid")
    def get(self):
        """Your thoughts, oldest first, a page at a time."""
        claims = caller_claims()
        args = list_parser.parse_args()
        return page_of(THOUGHTS_OF_USER, args["limit"], args["offset"], username=claims.username)

    @api_namespace.doc(security=BEARER_SECURITY, responses=TOKEN_ERRORS)
    @api_namespace.expect(new_thought)
    @api_namespace.response(201, "The thought, as stored", thought)
    @api_namespace.response(400, "The text is missing, empty, too long or not a string")
    @api_namespace.response(413, "The body is over the size limit")
    def post(self):
        """Write a thought as the token's user. JSON `{"text": ...}`; a form field `text` works too."""
        claims = caller_claims()
        new = Thought(username=claims.username, text=submitted_text())
        db.session.add(new)
        db.session.flush()
        # The answer is made before the commit: after it, reading the new row back could
        # fail (database gone) and answer 503 for a thought that was in fact stored.
        created = new.to_dict()
        db.session.commit()
        return created, 201


@api_namespace.route("/me/thoughts/<int:thought_id>/")
@api_namespace.param("thought_id", "The thought's id")
class MyThoughtItem(Resource):
    @api_namespace.doc(security=BEARER_SECURITY, responses=TOKEN_ERRORS)
    @api_namespace.response(204, "Deleted")
    @api_namespace.response(403, "The thought is someone else's")
    @api_namespace.response(404, "No thought has this id")
    def delete(self, thought_id: int):
        """Delete one of your own thoughts."""
        claims = caller_claims()
        thought = thought_or_404(thought_id)
        if thought.username != claims.username:
            raise ApiError(403, f"Thought {thought_id} belongs to someone else; you can delete only your own")
        db.session.delete(thought)
        db.session.commit()
        return "", 204
