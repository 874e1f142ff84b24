"""Forged and broken tokens, by name: what an attacker or a broken client might send.

Used by test_token_validation.py (in-process), test_token_keys.py and
system/test_attacks_http.py (every route of the served service).
"""

import base64
import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from thoughts_backend.token_validation import MAX_TOKEN_LENGTH


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict, payload: dict) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


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
