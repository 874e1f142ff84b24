"""/api/thoughts/ and /api/me/thoughts/, on SQLite and on PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from thoughts_backend.models import MAX_TEXT_LENGTH


def test_empty_list(client):
    response = client.get("/api/thoughts/")
    assert response.status_code == 200
    assert response.json == []
    assert response.headers["X-Total-Count"] == "0"


def test_list_is_ordered_by_id_with_all_fields(client, post_thought):
    first = post_thought("first", username="alice")
    second = post_thought("second", username="bob")
    response = client.get("/api/thoughts/")
    assert response.status_code == 200
    assert response.json == [first, second]
    assert set(first) == {"id", "username", "text", "timestamp"}
    assert first["id"] < second["id"]


def test_timestamp_is_utc_iso_with_offset(client, post_thought):
    before = datetime.now(UTC)
    created = post_thought("when?")
    stored = client.get(f"/api/thoughts/{created['id']}/").json["timestamp"]
    assert stored.endswith("+00:00")
    parsed = datetime.fromisoformat(stored)
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= parsed <= datetime.now(UTC) + timedelta(seconds=1)


def test_pagination_with_total_count(client, post_thought):
    ids = [post_thought(f"thought {n}")["id"] for n in range(5)]
    response = client.get("/api/thoughts/?limit=2&offset=1")
    assert [t["id"] for t in response.json] == ids[1:3]
    assert response.headers["X-Total-Count"] == "5"
    past_the_end = client.get("/api/thoughts/?offset=10")
    assert past_the_end.json == []
    assert past_the_end.headers["X-Total-Count"] == "5"


def test_default_page_is_100(client, app, post_thought):
    from thoughts_backend.db import db
    from thoughts_backend.models import Thought

    with app.app_context():
        db.session.add_all(Thought(username="bulk", text=f"t{n}") for n in range(105))
        db.session.commit()
    response = client.get("/api/thoughts/")
    assert len(response.json) == 100
    assert response.headers["X-Total-Count"] == "105"


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "limit=-1", "limit=abc", "offset=-1", "offset=x", "offset=99999999999"],
)
def test_bad_paging_is_400_naming_the_parameter(client, query):
    response = client.get(f"/api/thoughts/?{query}")
    assert response.status_code == 400
    assert response.json["message"]
    assert set(response.json["errors"]) == {query.split("=")[0]}


def test_search_is_case_insensitive_substring(client, post_thought):
    match = post_thought("I like Cats a lot")
    post_thought("dogs only")
    response = client.get("/api/thoughts/?search=cAt")
    assert response.json == [match]
    assert response.headers["X-Total-Count"] == "1"


@pytest.mark.parametrize(
    "word, expected",
    [
        ("100%", ["100% sure"]),
        ("a_b", ["a_b"]),
        ("\\", ["back\\slash"]),
        ("k\\s", ["back\\slash"]),
        ("/", ["a/b"]),
        ("a/b", ["a/b"]),
        ('"', ['say "hi"']),
        ('"HI"', ['say "hi"']),
        ("it's", ["it's"]),
        ("%_", []),
    ],
)
def test_search_wildcards_and_quotes_match_themselves(client, post_thought, word, expected):
    for text in ("100% sure", "1000 sure", "a_b", "axb", "back\\slash", "a/b", 'say "hi"', "it's"):
        post_thought(text)
    response = client.get("/api/thoughts/", query_string={"search": word})
    assert [t["text"] for t in response.json] == expected


def test_search_word_of_the_maximum_length(client, post_thought):
    longest = post_thought("w" * MAX_TEXT_LENGTH)
    post_thought("w" * (MAX_TEXT_LENGTH - 1) + "x")
    response = client.get("/api/thoughts/", query_string={"search": "W" * MAX_TEXT_LENGTH})
    assert response.json == [longest]
    assert response.headers["X-Total-Count"] == "1"


def test_search_too_long_is_400(client):
    response = client.get("/api/thoughts/", query_string={"search": "x" * (MAX_TEXT_LENGTH + 1)})
    assert response.status_code == 400
    assert "search" in response.json["errors"]


def test_search_with_nul_is_400(client):
    response = client.get("/api/thoughts/", query_string={"search": "a\x00b"})
    assert response.status_code == 400


def test_get_one(client, post_thought):
    created = post_thought("just one")
    response = client.get(f"/api/thoughts/{created['id']}/")
    assert response.status_code == 200
    assert response.json == created


@pytest.mark.parametrize("thought_id", ["12345", "99999999999999999999"])
def test_get_missing_is_404_json(client, thought_id):
    response = client.get(f"/api/thoughts/{thought_id}/")
    assert response.status_code == 404
    assert response.is_json
    assert "does not exist" in response.json["message"]


def test_me_lists_only_the_callers_thoughts(client, post_thought, auth):
    mine = post_thought("mine", username="alice")
    post_thought("theirs", username="bob")
    response = client.get("/api/me/thoughts/", headers=auth("alice"))
    assert response.status_code == 200
    assert response.json == [mine]
    assert response.headers["X-Total-Count"] == "1"


def test_me_list_pages(client, post_thought, auth):
    ids = [post_thought(f"n{n}")["id"] for n in range(3)]
    response = client.get("/api/me/thoughts/?limit=1&offset=2", headers=auth("alice"))
    assert [t["id"] for t in response.json] == ids[2:]
    assert client.get("/api/me/thoughts/?limit=5000", headers=auth("alice")).status_code == 400


def test_me_needs_a_token(client):
    response = client.get("/api/me/thoughts/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_create_from_json_takes_username_from_token(client, auth):
    response = client.post(
        "/api/me/thoughts/", json={"text": "hello", "username": "mallory"}, headers=auth("alice")
    )
    assert response.status_code == 201
    assert response.json["username"] == "alice"
    assert response.json["text"] == "hello"
    assert client.get(f"/api/thoughts/{response.json['id']}/").json == response.json


def test_create_from_form(client, auth):
    response = client.post("/api/me/thoughts/", data={"text": "from a form"}, headers=auth("carol"))
    assert response.status_code == 201
    assert response.json["text"] == "from a form"
    assert response.json["username"] == "carol"


def test_create_keeps_unicode(client, post_thought):
    assert post_thought("café ☕ 思想")["text"] == "café ☕ 思想"


def test_text_of_exactly_the_limit_is_accepted(client, post_thought):
    assert len(post_thought("x" * MAX_TEXT_LENGTH)["text"]) == MAX_TEXT_LENGTH


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": None},
        {"text": 5},
        {"text": ["a"]},
        {"text": ""},
        {"text": "   \n\t"},
        {"text": "x" * (MAX_TEXT_LENGTH + 1)},
        {"text": "nul\x00byte"},
    ],
    ids=["missing", "null", "number", "list", "empty", "whitespace", "too-long", "nul"],
)
def test_bad_text_is_400_and_stores_nothing(client, auth, body):
    response = client.post("/api/me/thoughts/", json=body, headers=auth())
    assert response.status_code == 400
    assert "text" in response.json["errors"]
    assert client.get("/api/thoughts/").headers["X-Total-Count"] == "0"


def test_lone_surrogate_is_400(client, auth):
    response = client.post(
        "/api/me/thoughts/",
        data='{"text": "bad \\ud800"}',
        content_type="application/json",
        headers=auth(),
    )
    assert response.status_code == 400
    assert "text" in response.json["errors"]


def test_form_without_text_is_400(client, auth):
    response = client.post("/api/me/thoughts/", data={"other": "x"}, headers=auth())
    assert response.status_code == 400
    assert "text" in response.json["errors"]


def test_malformed_json_is_400(client, auth):
    response = client.post(
        "/api/me/thoughts/", data='{"text": "unterminated', content_type="application/json", headers=auth()
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json["message"]


@pytest.mark.parametrize("payload", ['["a list"]', '"a string"', "42"])
def test_json_that_is_not_an_object_is_400(client, auth, payload):
    response = client.post("/api/me/thoughts/", data=payload, content_type="application/json", headers=auth())
    assert response.status_code == 400
    assert "object" in response.json["message"]


def test_body_over_the_limit_is_413(client, auth, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post("/api/me/thoughts/", json={"text": "x" * limit}, headers=auth())
    assert response.status_code == 413
    assert response.is_json
    assert response.json["message"]


def test_delete_own_thought(client, post_thought, auth):
    created = post_thought("regret", username="alice")
    response = client.delete(f"/api/me/thoughts/{created['id']}/", headers=auth("alice"))
    assert response.status_code == 204
    assert response.data == b""
    assert client.get(f"/api/thoughts/{created['id']}/").status_code == 404


def test_delete_someone_elses_is_403_and_keeps_it(client, post_thought, auth):
    created = post_thought("bob's", username="bob")
    response = client.delete(f"/api/me/thoughts/{created['id']}/", headers=auth("alice"))
    assert response.status_code == 403
    assert response.json["message"]
    assert client.get(f"/api/thoughts/{created['id']}/").status_code == 200


def test_delete_missing_is_404(client, auth):
    assert client.delete("/api/me/thoughts/424242/", headers=auth()).status_code == 404


def test_delete_needs_a_token(client, post_thought):
    created = post_thought("keep me")
    assert client.delete(f"/api/me/thoughts/{created['id']}/").status_code == 401
    assert client.get(f"/api/thoughts/{created['id']}/").status_code == 200


def test_ids_of_deleted_thoughts_are_not_reused(client, post_thought, auth):
    first = post_thought("first")
    client.delete(f"/api/me/thoughts/{first['id']}/", headers=auth())
    assert post_thought("second")["id"] > first["id"]
