"""RS256 token validation (RFC 8725): every bad token is a 401 with a Bearer challenge."""

import time

import jwt
import pytest

from thoughts_backend.models import Thought
from thoughts_backend.token_validation import (
    MAX_USERNAME_LENGTH,
    TokenError,
    decode_token,
    encode_token,
    validate_authorization_header,
)

from .databases import app_with_schema
from .tokens import attack_tokens


@pytest.fixture
def public_key(private_key):
    return private_key.public_key()


@pytest.fixture
def valid_payload() -> dict:
    now = int(time.time())
    return {"username": "alice", "iat": now, "exp": now + 60}


def test_round_trip(private_key, public_key):
    claims = decode_token(encode_token("alice", private_key), public_key)
    assert claims.username == "alice"
    assert claims.scopes == frozenset()


def test_admin_scope(private_key, public_key):
    claims = decode_token(encode_token("root", private_key, admin=True), public_key)
    assert claims.scopes == {"admin"}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(private_key, public_key, scheme):
    header = f"{scheme} {encode_token('alice', private_key)}"
    assert validate_authorization_header(header, public_key).username == "alice"


def test_leeway_accepts_just_expired(private_key, public_key):
    token = encode_token("alice", private_key, expires_in=-5)
    assert decode_token(token, public_key, leeway=10).username == "alice"
    with pytest.raises(TokenError, match="expired"):
        decode_token(token, public_key, leeway=0)


@pytest.fixture
def attacks(private_key, public_pem, valid_payload):
    return attack_tokens(private_key, public_pem, valid_payload)


def test_every_attack_token_is_refused_by_decode(attacks, public_key):
    accepted = []
    for name, token in attacks.items():
        try:
            decode_token(token, public_key)
        except TokenError:
            continue
        accepted.append(name)
    assert accepted == []


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearerabc"],
    ids=["empty", "no-token", "blank-token", "basic", "other-scheme", "no-space"],
)
def test_bad_authorization_headers(public_key, header):
    with pytest.raises(TokenError):
        validate_authorization_header(header, public_key)


def test_missing_header_is_marked_missing(public_key):
    with pytest.raises(TokenError) as raised:
        validate_authorization_header(None, public_key)
    assert raised.value.missing


def test_kid_and_jku_headers_are_not_followed(private_key, public_key, valid_payload):
    token = jwt.encode(
        valid_payload,
        private_key,
        algorithm="RS256",
        headers={"kid": "../../etc/passwd", "jku": "http://127.0.0.1:9/keys.json"},
    )
    # Validated with the configured key alone: no lookup is attempted, so this succeeds offline.
    assert decode_token(token, public_key).username == "alice"


def test_every_attack_is_401_over_http(client, attacks):
    """The same tokens against a real route: 401 JSON with a Bearer challenge, never 500."""
    outcomes = {}
    for name, token in attacks.items():
        response = client.get("/api/me/thoughts/", headers={"Authorization": f"Bearer {token}"})
        outcomes[name] = response.status_code
        assert response.is_json, name
        assert response.json["message"], name
        assert response.headers["WWW-Authenticate"].startswith(
            'Bearer realm="thoughts", error="invalid_token"'
        )
    assert set(outcomes.values()) == {401}, outcomes


def test_header_of_10kb_is_401(client):
    response = client.get("/api/me/thoughts/", headers={"Authorization": "Bearer " + "a" * 10_000})
    assert response.status_code == 401


def test_a_service_set_up_for_cognito_answers_by_client_id_over_http(app_overrides, private_key):
    """TOKEN_AUDIENCE_CLAIM=client_id: Cognito's access token passes, its ID token and another
    app client's access token are 401s with a sentence saying why."""
    issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example"
    settings = {"TOKEN_ISSUER": issuer, "TOKEN_AUDIENCE": "1example", "TOKEN_AUDIENCE_CLAIM": "client_id"}

    def cognito(**claims) -> str:
        claims = {"iss": issuer, "client_id": "1example", "token_use": "access", "scope": "openid", **claims}
        return encode_token("alice", private_key, **{name: value for name, value in claims.items() if value})

    with app_with_schema({**app_overrides, **settings}) as app:
        client = app.test_client()
        answers = {
            name: client.get("/api/me/thoughts/", headers={"Authorization": f"Bearer {token}"})
            for name, token in {
                "access": cognito(),
                "other client": cognito(client_id="2other"),
                "no client_id": cognito(client_id=None),
                "id token": cognito(**{"client_id": None, "token_use": "id", "aud": "1example"}),
            }.items()
        }
    assert answers["access"].status_code == 200, answers["access"].json
    assert {name: answer.status_code for name, answer in answers.items() if name != "access"} == {
        "other client": 401,
        "no client_id": 401,
        "id token": 401,
    }
    assert "client_id is not TOKEN_AUDIENCE" in answers["other client"].json["message"]
    assert "no 'client_id' claim" in answers["no client_id"].json["message"]
    assert "not an access token" in answers["id token"].json["message"]


def test_the_longest_user_name_a_token_may_carry_fits_a_thought():
    """token_validation refuses longer names (401): each one it lets through can be stored."""
    assert Thought.username.type.length == MAX_USERNAME_LENGTH
