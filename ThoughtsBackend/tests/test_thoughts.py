"""One description of a thought (models.Thought's columns) and one declaration of each text
input (thoughts.TextInput): what is derived from them agrees, and a change that the
derivation cannot follow fails here, not in production."""

import json
import random
import re
from datetime import datetime

import pytest
import sqlalchemy as sa

from thoughts_backend.api_namespace import api_namespace
from thoughts_backend.errors import ApiError
from thoughts_backend.models import Thought
from thoughts_backend.search import SEARCH_WORD
from thoughts_backend.thoughts import THOUGHT_TEXT, TextInput, api_field, shown_column

SPEC_TYPES = {"integer": int, "string": str}


def test_the_spec_model_is_what_to_dict_shows(client, post_thought):
    created = post_thought("one description")
    spec = client.get("/swagger.json").json["definitions"]["Thought"]
    assert list(spec["properties"]) == list(created) == [column.key for column in Thought.__table__.columns]
    assert sorted(spec["required"]) == sorted(created)
    for name, value in created.items():
        field = spec["properties"][name]
        assert isinstance(value, SPEC_TYPES[field["type"]]), (name, value, field)
        assert field["description"] == getattr(Thought, name).doc
        if field.get("format") == "date-time":
            assert datetime.fromisoformat(value).utcoffset().total_seconds() == 0


def test_the_json_the_database_writes_keeps_to_dict_key_order(client, post_thought):
    created = post_thought("in order")
    page = json.loads(client.get("/api/thoughts/").data)
    one = json.loads(client.get(f"/api/thoughts/{created['id']}/").data)
    assert list(page[0]) == list(one) == list(created)


@pytest.mark.parametrize("column_type", [sa.LargeBinary(), sa.Boolean(), sa.Numeric()])
def test_a_column_the_api_cannot_show_stops_the_start(column_type):
    """A column added to Thought with a type that neither the spec nor the database's JSON
    knows fails at import, when the model and the statements are built, saying what to do."""
    column = sa.Column("extra", column_type, nullable=False)
    sa.Table("thought_with_extra", sa.MetaData(), column)
    for derived in (api_field, lambda column: shown_column(column, "sqlite")):
        with pytest.raises(
            TypeError, match=r"The API cannot show column extra .*add its type to SHOWN_TYPES"
        ):
            derived(column)


def spec_accepts(schema: dict, value: str) -> bool:
    """Whether a JSON Schema string constraint (as the spec publishes it) accepts `value`."""
    return (
        schema.get("minLength", 0) <= len(value) <= schema["maxLength"]
        and re.search(schema["pattern"], value) is not None
    )


def check_accepts(text_input: TextInput, value: str) -> bool:
    try:
        assert text_input.check(value) == value
    except ApiError as error:
        assert error.status == 400
        assert list(error.errors) == [text_input.name]
        return False
    return True


def samples(max_length: int) -> list[str]:
    """Edge cases of each rule, then random strings of blanks, NULs and letters around the
    length limit (seeded: the same every run)."""
    edges = ["", " ", "\t\n", "\u2003", "\x00", "a\x00b", "a", " a ", "\u00e9", "\U0001f600"]
    edges += ["a" * max_length, "a" * (max_length + 1), " " * max_length, "\x00" * max_length]
    alphabet = [
        " ",
        "\t",
        "\n",
        "\x00",
        "\x1c",
        "\u2003",
        "a",
        "Z",
        "\u00e9",
        "\u6f22",
        "\U0001f600",
        "%",
        "_",
    ]
    generator = random.Random(15)  # noqa: S311 (test samples, not secrets)
    lengths = [0, 1, 2, 3, max_length - 1, max_length, max_length + 1, max_length + 40]
    randoms = [
        "".join(generator.choices(alphabet, weights=[8, 2, 2, 1, 1, 1, 10, 4, 2, 2, 2, 1, 1], k=length))
        for length in lengths
        for _ in range(40)
    ]
    return edges + randoms


@pytest.mark.parametrize("text_input", [THOUGHT_TEXT, SEARCH_WORD], ids=lambda each: each.name)
def test_a_text_input_refuses_exactly_what_its_spec_declares(text_input):
    schema = text_input.field().__schema__ if not text_input.blank_allowed else text_input.__schema__
    disagreements = [
        value
        for value in samples(text_input.max_length)
        if spec_accepts(schema, value) != check_accepts(text_input, value)
    ]
    assert disagreements == []


def test_the_served_spec_declares_the_text_inputs(client):
    spec = client.get("/swagger.json").json
    text = spec["definitions"]["NewThought"]["properties"]["text"]
    assert {name: text[name] for name in ("minLength", "maxLength", "pattern")} == {
        "minLength": 1,
        "maxLength": THOUGHT_TEXT.max_length,
        "pattern": THOUGHT_TEXT.pattern,
    }
    parameters = {
        parameter["name"]: parameter for parameter in spec["paths"]["/api/thoughts/"]["get"]["parameters"]
    }
    search = parameters["search"]
    assert (search["maxLength"], search["pattern"]) == (SEARCH_WORD.max_length, SEARCH_WORD.pattern)
    assert "minLength" not in search
    assert api_namespace.models["NewThought"]["text"].max_length == THOUGHT_TEXT.max_length


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "'text' is required"),
        ({"text": 5}, "'text' must be a string"),
        ({"text": " \n"}, "'text' must not be empty"),
        ({"text": "x" * 251}, "'text' must be at most 250 characters, not 251"),
        ({"text": "a\x00"}, "'text' must not contain NUL characters"),
    ],
)
def test_a_refused_text_says_what_is_wrong(client, auth, body, problem):
    response = client.post("/api/me/thoughts/", json=body, headers=auth())
    assert response.status_code == 400
    assert response.json == {"message": "Input payload validation failed", "errors": {"text": problem}}


@pytest.mark.parametrize(
    ("word", "problem"),
    [
        ("x" * 251, "'search' must be at most 250 characters, not 251"),
        ("a\x00", "'search' must not contain NUL characters"),
    ],
)
def test_a_refused_search_word_says_what_is_wrong(client, word, problem):
    response = client.get("/api/thoughts/", query_string={"search": word})
    assert response.status_code == 400
    assert response.json == {"message": "Input payload validation failed", "errors": {"search": problem}}
