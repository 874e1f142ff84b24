"""RS256 token validation (RFC 8725): every bad token is a 401 with a Bearer challenge."""

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from thoughts_backend.token_validation import (
    MAX_TOKEN_LENGTH,
    TokenError,
    decode_token,
    encode_token,
    validate_authorization_header,
)

from .support import app_with_schema


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict, payload: dict) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


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


def attack_tokens(private_key, public_pem, valid):
    """Tokens an attacker or a broken client might send, by name."""
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return {
        "alg-none": unsigned_token({"alg": "none", "typ": "JWT"}, valid),
        "hs256-with-public-key-as-secret": hs256_token(valid, public_pem),
        "rs256-other-key": jwt.encode(valid, other_key, algorithm="RS256"),
        "expired": jwt.encode({**valid, "exp": now - 3600}, private_key, algorithm="RS256"),
        "no-exp": jwt.encode({"username": "alice"}, private_key, algorithm="RS256"),
        "no-username": jwt.encode({"exp": now + 60}, private_key, algorithm="RS256"),
        "username-not-string": jwt.encode({**valid, "username": 42}, private_key, algorithm="RS256"),
        "username-empty": jwt.encode({**valid, "username": "  "}, private_key, algorithm="RS256"),
        "username-too-long": jwt.encode({**valid, "username": "u" * 51}, private_key, algorithm="RS256"),
        "scope-not-string": jwt.encode({**valid, "scope": ["admin"]}, private_key, algorithm="RS256"),
        "nbf-future": jwt.encode({**valid, "nbf": now + 3600}, private_key, algorithm="RS256"),
        "iat-future": jwt.encode({**valid, "iat": now + 3600}, private_key, algorithm="RS256"),
        "exp-not-number": jwt.encode({**valid, "exp": "tomorrow"}, private_key, algorithm="RS256"),
        "garbage": "not-a-token",
        "bad-base64": "a!b.c@d.e#f",
        "two-parts": "abc.def",
        "tampered-payload": tamper(jwt.encode(valid, private_key, algorithm="RS256")),
        "too-long": "a" * (MAX_TOKEN_LENGTH + 1),
        # Under MAX_TOKEN_LENGTH, deeper than the JSON parser recurses.
        "header-nested-deep": f"{b64(b'[' * 2500)}.{b64(json.dumps(valid).encode())}.c2ln",
        "header-not-object": f"{b64(b'[]')}.{b64(json.dumps(valid).encode())}.c2ln",
    }


def hs256_token(payload: dict, secret: str) -> str:
    """An HS256 token keyed with the public key PEM: the classic algorithm-confusion attack.

    PyJWT refuses PEM text as an HMAC key, which is the point; an attacker signs it by hand.
    """
    import hashlib
    import hmac

    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}"
    )
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def tamper(token: str) -> str:
    header, _, signature = token.split(".")
    payload = b64(json.dumps({"username": "admin", "scope": "admin", "exp": int(time.time()) + 60}).encode())
    return f"{header}.{payload}.{signature}"


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
