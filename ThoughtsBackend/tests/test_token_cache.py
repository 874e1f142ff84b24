"""The cache of validated tokens: never answers for an expired, failed or foreign-key token; bounded."""

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from thoughts_backend.token_validation import (
    TOKEN_CACHE,
    Claims,
    TokenCache,
    TokenError,
    decode_token,
    encode_token,
)

from .support import wait_for


@pytest.fixture
def public_key(private_key):
    return private_key.public_key()


@pytest.fixture
def cache():
    return TokenCache(max_entries=4)


def test_a_repeated_token_is_verified_once(private_key, public_key, cache, monkeypatch):
    token = encode_token("alice", private_key)
    verifications = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: verifications.append(1) or real_decode(*a, **k))
    first = decode_token(token, public_key, cache=cache)
    second = decode_token(token, public_key, cache=cache)
    assert first == second == Claims(username="alice", scopes=frozenset())
    assert len(verifications) == 1


def test_a_cached_token_is_refused_once_it_expires(private_key, public_key, cache):
    expires_at = int(time.time()) + 1
    token = encode_token("alice", private_key, exp=expires_at)
    assert decode_token(token, public_key, cache=cache).username == "alice"
    assert len(cache) == 1
    # Wait for the real clock to pass exp: PyJWT, behind the cache, reads it too.
    wait_for(lambda: time.time() >= expires_at, timeout=5, what="the real clock reaching the token's exp")
    with pytest.raises(TokenError, match="expired"):
        decode_token(token, public_key, cache=cache)
    assert len(cache) == 0


def test_the_cache_applies_the_leeway_as_pyjwt_does(public_key):
    now = 1_000_000.0
    cache = TokenCache(clock=lambda: now)
    claims = Claims(username="alice", scopes=frozenset())
    cache.put("token", public_key, int(now) + 5, claims)
    assert cache.get("token", public_key, leeway=0) == claims
    now += 5  # exp <= now: expired without leeway...
    assert cache.get("token", public_key, leeway=10) == claims  # ...but within a 10 s leeway
    assert cache.get("token", public_key, leeway=0) is None
    assert len(cache) == 0


def test_a_token_cached_for_one_key_is_verified_again_for_another(private_key, public_key, cache):
    token = encode_token("alice", private_key)
    decode_token(token, public_key, cache=cache)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(TokenError, match="signature"):
        decode_token(token, other_key, cache=cache)


def test_failures_are_never_cached(private_key, public_key, cache):
    expired = encode_token("alice", private_key, exp=int(time.time()) - 60)
    tampered = encode_token("alice", private_key)[:-4] + "AAAA"
    for token in (expired, tampered, expired, tampered):
        with pytest.raises(TokenError):
            decode_token(token, public_key, cache=cache)
    assert len(cache) == 0


def test_the_cache_is_bounded_and_drops_the_oldest(public_key, cache):
    far_future = int(time.time()) + 3600
    for n in range(10):
        cache.put(f"token-{n}", public_key, far_future, Claims(username=f"user{n}", scopes=frozenset()))
    assert len(cache) == cache.max_entries == 4
    assert cache.get("token-0", public_key, leeway=0) is None
    assert cache.get("token-9", public_key, leeway=0).username == "user9"


def test_the_service_validates_through_the_shared_cache(app, client, auth):
    headers = auth("carol")
    token = headers["Authorization"].removeprefix("Bearer ")
    assert client.get("/api/me/thoughts/", headers=headers).status_code == 200
    cached = TOKEN_CACHE.get(token, app.config["TOKEN_KEYS"].current(), leeway=0)
    assert cached == Claims(username="carol", scopes=frozenset())
