"""Key sources and the identity-provider rules, in-process: PEM sets, JWK Set files and URLs.

The served service against a real OpenID provider is in test_identity_provider_http.py.
"""

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import socket
import threading
import time

import jwt
import pytest

from thoughts_backend import token_keys
from thoughts_backend.token_keys import JwksFile, KeySourceError, RemoteJwks, StaticKeys
from thoughts_backend.token_validation import TokenCache, TokenError, TokenRules, decode_token

from .identity_support import JwksServer, new_key, public_jwk, self_signed_certificate, sign
from .support import pem_public, wait_for
from .tokens import b64

ISSUER = "https://idp.example"
RULES = TokenRules(issuer=ISSUER, audience="thoughts", algorithms=("RS256", "PS256", "ES256", "EdDSA"))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token(key, kid="k1", algorithm="RS256", **claims):
    return sign(key, algorithm, kid=kid, **{"iss": ISSUER, "aud": "thoughts", **claims})


def refused(source, token_text, rules=RULES) -> str:
    with pytest.raises(TokenError) as caught:
        decode_token(token_text, source, rules=rules, cache=None)
    return str(caught.value)


def jwks_source(*jwks, allowed=RULES.algorithms) -> StaticKeys:
    """A fixed key set parsed from JWKs, as a JWK Set source parses them."""
    return StaticKeys(list(token_keys.keys_from_jwks({"keys": list(jwks)}, "test", allowed).keys))


def test_a_pem_file_of_several_keys_accepts_each(tmp_path):
    old, new = new_key(), new_key()
    keys = token_keys.keys_from_pem(pem_public(old) + pem_public(new), "PUBLIC_KEY", ("RS256",))
    source = StaticKeys(keys)
    for key in (old, new):
        assert decode_token(sign(key), source, cache=None).username == "alice"
    assert "signature is invalid" in refused(source, sign(new_key()), TokenRules())


def test_issuer_and_audience_are_checked():
    key = new_key()
    source = jwks_source(public_jwk(key, kid="k1"))
    assert decode_token(token(key), source, rules=RULES, cache=None).username == "alice"
    assert decode_token(token(key, aud=["other", "thoughts"]), source, rules=RULES, cache=None)
    assert "not meant for this service" in refused(source, token(key, aud="other-api"))
    assert "issuer (iss) is not the one" in refused(source, token(key, iss="https://evil.example"))
    assert "no 'aud' claim" in refused(source, sign(key, kid="k1", iss=ISSUER))
    assert "no 'iss' claim" in refused(source, sign(key, kid="k1", aud="thoughts"))


def test_the_username_claim_and_scopes_are_mapped():
    key = new_key()
    source = jwks_source(public_jwk(key, kid="k1"))
    rules = TokenRules(issuer=ISSUER, audience="thoughts", username_claim="preferred_username")
    claims = decode_token(
        token(key, preferred_username="bob", scp=["write", "admin"]), source, rules=rules, cache=None
    )
    assert (claims.username, claims.scopes) == ("bob", frozenset({"write", "admin"}))
    claims = decode_token(
        token(key, preferred_username="bob", scp="read write"), source, rules=rules, cache=None
    )
    assert claims.scopes == {"read", "write"}
    # `scope` (RFC 9068) wins over `scp` when both are there.
    claims = decode_token(
        token(key, preferred_username="bob", scope="a b", scp=["admin"]), source, rules=rules, cache=None
    )
    assert claims.scopes == {"a", "b"}
    assert "no 'preferred_username' claim" in refused(source, token(key), rules)
    assert "preferred_username must be a string of 1 to 50" in refused(
        source, token(key, preferred_username=7), rules
    )
    assert "scp must be a list of strings" in refused(
        source, token(key, preferred_username="b", scp=[1]), rules
    )


COGNITO_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example"
COGNITO_CLIENT = "1example23456789"
COGNITO_RULES = TokenRules(issuer=COGNITO_ISSUER, audience=COGNITO_CLIENT, audience_claim="client_id")


def cognito_access_token(key, **claims):
    """Shaped as Cognito writes an access token: client_id, username, scope, token_use; no aud."""
    claims = {
        "iss": COGNITO_ISSUER,
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "client_id": COGNITO_CLIENT,
        "token_use": "access",
        "scope": "thoughts/write thoughts/admin",
        "username": "alice",
        **claims,
    }
    return sign(key, kid="k1", **{name: value for name, value in claims.items() if value is not None})


def test_a_cognito_access_token_is_accepted_by_its_client_id():
    key = new_key()
    source = jwks_source(public_jwk(key, kid="k1"))
    claims = decode_token(cognito_access_token(key), source, rules=COGNITO_RULES, cache=None)
    assert (claims.username, claims.scopes) == ("alice", frozenset({"thoughts/write", "thoughts/admin"}))
    # token_use is Cognito's; other issuers leave it out. An aud does not decide, whatever it says.
    assert decode_token(cognito_access_token(key, token_use=None, aud="other"), source, rules=COGNITO_RULES)
    # The other checks stay: issuer, expiry, the user-name claim.
    assert "issuer (iss) is not the one" in refused(
        source, cognito_access_token(key, iss="https://evil.example"), COGNITO_RULES
    )
    assert "has expired" in refused(
        source, cognito_access_token(key, exp=int(time.time()) - 60), COGNITO_RULES
    )
    assert "username must be a string of 1 to 50" in refused(
        source, cognito_access_token(key, username=""), COGNITO_RULES
    )


@pytest.mark.parametrize(
    "claims, sentence",
    [
        (
            {"client_id": "another-app-client"},
            r"not meant for this service \(its client_id is not TOKEN_AUDIENCE\)",
        ),
        (
            {"client_id": [COGNITO_CLIENT]},
            r"not meant for this service \(its client_id is not TOKEN_AUDIENCE\)",
        ),
        ({"client_id": None}, "The token has no 'client_id' claim"),
        # Its aud is the very app client: only the claims that say "access token" tell them apart.
        (
            {"token_use": "id", "client_id": None, "aud": COGNITO_CLIENT, "cognito:username": "alice"},
            r"not an access token \(its token_use is not 'access'\)",
        ),
        ({"token_use": "id"}, r"not an access token \(its token_use is not 'access'\)"),
    ],
)
def test_cognito_tokens_for_another_client_or_not_access_tokens_are_refused(claims, sentence):
    key = new_key()
    source = jwks_source(public_jwk(key, kid="k1"))
    with pytest.raises(TokenError, match=sentence):
        decode_token(cognito_access_token(key, **claims), source, rules=COGNITO_RULES, cache=None)


def test_with_aud_deciding_client_id_and_token_use_change_nothing():
    key = new_key()
    source = jwks_source(public_jwk(key, kid="k1"))
    assert decode_token(
        token(key, **{"client_id": "someone-else", "token_use": "id"}), source, rules=RULES, cache=None
    )
    assert "no 'aud' claim" in refused(source, sign(key, kid="k1", iss=ISSUER, client_id="thoughts"))
    cognito_style = dict(COGNITO_RULES.__dict__, audience_claim="aud")
    assert "no 'aud' claim" in refused(source, cognito_access_token(key), TokenRules(**cognito_style))


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt", "application/at+JWT"])
def test_access_token_types_are_accepted(typ):
    key = new_key()
    source = jwks_source(public_jwk(key, kid="k1"))
    text = token(key, headers={"typ": typ})  # None: PyJWT leaves typ out
    assert ("typ" in jwt.get_unverified_header(text)) == (typ is not None)
    assert decode_token(text, source, rules=RULES, cache=None).username == "alice"


@pytest.mark.parametrize("typ", ["id+jwt", "JOSE", "logout+jwt", "dpop+jwt"])
def test_other_token_types_are_refused(typ):
    key = new_key()
    source = jwks_source(public_jwk(key, kid="k1"))
    assert "type (typ) must be at+jwt or JWT" in refused(source, token(key, headers={"typ": typ}))


def test_a_key_verifies_only_algorithms_of_its_own_type_and_alg():
    rsa_key, ec_key, ed_key = new_key(), new_key("P-256"), new_key("Ed25519")
    source = jwks_source(
        public_jwk(rsa_key, kid="rsa", alg="RS256"),
        public_jwk(ec_key, kid="ec"),
        public_jwk(ed_key, kid="ed"),
    )
    assert decode_token(token(rsa_key, kid="rsa"), source, rules=RULES, cache=None)
    assert decode_token(token(ec_key, kid="ec", algorithm="ES256"), source, rules=RULES, cache=None)
    assert decode_token(token(ed_key, kid="ed", algorithm="EdDSA"), source, rules=RULES, cache=None)
    # The RSA key's JWK says RS256: a PS256 token naming it is refused, though RSA could verify it.
    assert "No key this service trusts verifies PS256" in refused(
        source, token(rsa_key, kid="rsa", algorithm="PS256")
    )
    # An ES256 header naming the RSA key, an RS256 one naming the EC key.
    assert "No key this service trusts verifies ES256" in refused(
        source, token(ec_key, kid="rsa", algorithm="ES256")
    )
    assert "No key this service trusts verifies RS256" in refused(source, token(rsa_key, kid="ec"))
    # Allowed for the key, not by TOKEN_ALGORITHMS.
    assert "algorithm must be one of RS256, PS256" in refused(
        source, token(rsa_key, kid="rsa", algorithm="RS512")
    )


def test_keys_whose_jwk_forbids_verification_are_not_used():
    enc, ops, good = new_key(), new_key(), new_key()
    source = jwks_source(
        public_jwk(enc, kid="enc", use="enc"),
        public_jwk(ops, kid="ops", key_ops=["encrypt"]),
        public_jwk(good, kid="good", key_ops=["verify"], use="sig"),
    )
    assert decode_token(token(good, kid="good"), source, rules=RULES, cache=None)
    for key, kid in ((enc, "enc"), (ops, "ops")):
        assert "kid) is not one this service trusts" in refused(source, token(key, kid=kid))


def test_an_hs256_token_keyed_with_the_jwks_public_material_is_refused():
    key = new_key()
    jwk = public_jwk(key, kid="k1")
    source = jwks_source(jwk)
    payload = {
        "username": "admin",
        "scope": "admin",
        "iss": ISSUER,
        "aud": "thoughts",
        "exp": int(time.time()) + 60,
    }
    for secret in (jwk["n"], json.dumps(jwk), pem_public(key)):
        signing_input = (
            f"{b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}).encode())}.{b64(json.dumps(payload).encode())}"
        )
        signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        assert "algorithm must be one of" in refused(source, f"{signing_input}.{b64(signature)}")


def test_a_jwks_file_is_read_again_when_it_changes(tmp_path):
    old, new = new_key(), new_key()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(old, kid="old")]}))
    source = JwksFile(str(path), RULES.algorithms)
    assert decode_token(token(old, kid="old"), source, rules=RULES)
    # As a ConfigMap volume publishes: a new file, renamed over the old name.
    staged = tmp_path / "jwks.json.new"
    staged.write_text(json.dumps({"keys": [public_jwk(new, kid="new")]}))
    os.replace(staged, path)
    new_token = token(new, kid="new")

    def accepted():
        try:
            return decode_token(new_token, source, rules=RULES)
        except TokenError:
            return None

    wait_for(accepted, timeout=5, what="the new key of the JWK Set file was not accepted")
    assert "kid) is not one this service trusts" in refused(source, token(old, kid="old"))


def test_a_broken_jwks_file_version_keeps_the_keys(tmp_path):
    key, clock = new_key(), Clock()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(key, kid="k1")]}))
    source = JwksFile(str(path), RULES.algorithms, clock=clock)
    path.write_text("{ broken")
    clock.now += token_keys.FILE_CHECK_INTERVAL_SECONDS
    assert decode_token(token(key), source, rules=RULES, cache=None).username == "alice"
    path.write_text(json.dumps({"keys": []}))  # a new version again, and still not usable
    clock.now += token_keys.FILE_CHECK_INTERVAL_SECONDS
    assert decode_token(token(key), source, rules=RULES, cache=None).username == "alice"


@pytest.fixture
def idp():
    with JwksServer() as server:
        yield server


def remote(idp, clock, refresh=60, **kwargs):
    return RemoteJwks(RULES.algorithms, refresh, jwks_url=f"{idp.url}/jwks", clock=clock, **kwargs)


def test_an_unknown_kid_fetches_at_most_once_per_interval(idp):
    clock, first, second = Clock(), new_key(), new_key()
    idp.publish("/jwks", {"keys": [public_jwk(first, kid="first")]})
    source = remote(idp, clock)
    source.load()
    assert idp.hits["/jwks"] == 1
    # A flood of made-up kids: at most one fetch in the interval.
    clock.now += token_keys.MIN_FETCH_INTERVAL_SECONDS
    for n in range(300):
        assert "kid) is not one" in refused(source, token(first, kid=f"made-up-{n}"))
    assert idp.hits["/jwks"] == 2
    # The IdP publishes a key and signs with it: accepted on the first token after the interval.
    idp.publish("/jwks", {"keys": [public_jwk(first, kid="first"), public_jwk(second, kid="second")]})
    clock.now += token_keys.MIN_FETCH_INTERVAL_SECONDS
    assert decode_token(token(second, kid="second"), source, rules=RULES, cache=None)
    assert idp.hits["/jwks"] == 3


def test_cached_keys_keep_working_while_the_idp_fails(idp):
    clock, key = Clock(), new_key()
    idp.publish("/jwks", {"keys": [public_jwk(key, kid="k1")]})
    source = remote(idp, clock, refresh=10)
    source.load()
    for answer in ((500, b"oops"), (200, b"<html>not json</html>"), (200, b'{"keys": "no"}')):
        idp.routes["/jwks"] = (answer[0], {}, answer[1])
        clock.now += 60
        assert decode_token(token(key), source, rules=RULES, cache=None).username == "alice"
        assert "kid) is not one" in refused(source, token(key, kid="unseen"))
    assert source.problem() is None


def test_a_removed_key_is_refused_after_the_refresh_period(idp):
    clock, old, new = Clock(), new_key(), new_key()
    idp.publish("/jwks", {"keys": [public_jwk(old, kid="old"), public_jwk(new, kid="new")]})
    source = remote(idp, clock, refresh=30)
    source.load()
    cache = TokenCache()
    old_token = token(old, kid="old")
    assert decode_token(old_token, source, rules=RULES, cache=cache)
    idp.publish("/jwks", {"keys": [public_jwk(new, kid="new")]})
    clock.now += 29
    assert decode_token(old_token, source, rules=RULES, cache=cache)  # within the period: still the old set
    clock.now += 1
    with pytest.raises(TokenError, match="kid"):
        decode_token(old_token, source, rules=RULES, cache=cache)  # the cached answer goes with its key


def test_an_unchanged_jwk_set_keeps_the_cache(idp, monkeypatch):
    clock, key = Clock(), new_key()
    idp.publish("/jwks", {"keys": [public_jwk(key, kid="k1")]})
    source = remote(idp, clock, refresh=10)
    source.load()
    cache, text = TokenCache(), token(key)
    decode_token(text, source, rules=RULES, cache=cache)
    clock.now += 11
    monkeypatch.setattr("jwt.decode", lambda *a, **k: pytest.fail("verified again"))
    assert decode_token(text, source, rules=RULES, cache=cache)
    assert idp.hits["/jwks"] == 2


def test_redirects_are_not_followed(idp):
    idp.publish("/jwks", {}, status=302, headers={"Location": f"{idp.url}/elsewhere"})
    idp.publish("/elsewhere", {"keys": [public_jwk(new_key(), kid="k1")]})
    source = remote(idp, Clock())
    source.load()
    assert "answered HTTP 302 (redirects are not followed)" in source.problem()
    assert "/elsewhere" not in idp.hits


def test_a_huge_answer_is_refused(idp):
    idp.publish("/jwks", b" " * (token_keys.MAX_DOCUMENT_BYTES + 1))
    source = remote(idp, Clock())
    source.load()
    assert f"answered more than {token_keys.MAX_DOCUMENT_BYTES} bytes" in source.problem()


def test_a_slow_idp_costs_one_timeout_per_refresh_period(idp):
    clock = Clock()
    idp.publish("/jwks", {"keys": [public_jwk(new_key(), kid="k1")]})
    idp.delay = 1.5
    source = remote(idp, clock, refresh=60, timeout=0.5)
    started = time.monotonic()
    source.load()
    assert time.monotonic() - started < 1.4  # gave up at the timeout, not at the answer
    assert "could not be fetched" in source.problem()
    clock.now += token_keys.MIN_FETCH_INTERVAL_SECONDS * 4
    for n in range(20):
        refused(source, token(new_key(), kid=f"unseen-{n}"))
    assert idp.hits["/jwks"] == 1  # the next try waits a whole refresh period
    clock.now += 60
    idp.delay = 0
    source.current()
    assert source.problem() is None and idp.hits["/jwks"] == 2


def test_quick_failures_back_off_doubling(idp):
    clock = Clock()
    source = remote(idp, clock, refresh=60)  # /jwks answers 404
    tries = []
    for _ in range(60):
        before = idp.hits.get("/jwks", 0)
        source.current()
        if idp.hits.get("/jwks", 0) > before:
            tries.append(clock.now)
        clock.now += 1
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert gaps == [2, 4, 8, 16]  # then 32, capped at the refresh period: beyond this test's minute


def test_discovery_finds_the_jwks_uri_and_checks_the_issuer(idp):
    key = new_key()
    idp.publish("/jwks", {"keys": [public_jwk(key, kid="k1")]})
    idp.publish("/.well-known/openid-configuration", {"issuer": idp.url, "jwks_uri": f"{idp.url}/jwks"})
    source = RemoteJwks(RULES.algorithms, 60, issuer=idp.url, clock=Clock())
    source.load()
    rules = TokenRules(issuer=idp.url, audience="thoughts")
    assert decode_token(sign(key, kid="k1", iss=idp.url, aud="thoughts"), source, rules=rules, cache=None)

    idp.publish(
        "/.well-known/openid-configuration",
        {"issuer": "https://other.example", "jwks_uri": f"{idp.url}/jwks"},
    )
    other = RemoteJwks(RULES.algorithms, 60, issuer=idp.url, clock=Clock())
    other.load()
    assert "names the issuer 'https://other.example', not TOKEN_ISSUER" in other.problem()

    idp.publish(
        "/.well-known/openid-configuration", {"issuer": idp.url, "jwks_uri": "http://keys.example/jwks"}
    )
    plain = RemoteJwks(RULES.algorithms, 60, issuer=idp.url, clock=Clock())
    plain.load()
    assert "must use https" in plain.problem()


def test_https_checks_the_certificate(tmp_path):
    with JwksServer(tls=self_signed_certificate(tmp_path)) as server:
        server.publish("/jwks", {"keys": [public_jwk(new_key(), kid="k1")]})
        assert server.url.startswith("https://127.0.0.1:")
        with pytest.raises(KeySourceError, match="CERTIFICATE_VERIFY_FAILED"):
            token_keys.fetch_json(f"{server.url}/jwks")


def test_an_rsa_jwk_without_alg_verifies_every_allowed_rsa_algorithm():
    rsa_key, p384 = new_key(), new_key("P-384")
    rules = TokenRules(issuer=ISSUER, audience="thoughts", algorithms=("PS256", "RS512", "ES384"))
    source = jwks_source(
        public_jwk(rsa_key, kid="rsa"), public_jwk(p384, kid="p384"), allowed=rules.algorithms
    )
    for algorithm in ("PS256", "RS512"):
        assert decode_token(token(rsa_key, kid="rsa", algorithm=algorithm), source, rules=rules, cache=None)
    assert decode_token(token(p384, kid="p384", algorithm="ES384"), source, rules=rules, cache=None)
    assert "algorithm must be one of PS256, RS512, ES384" in refused(source, token(rsa_key, kid="rsa"), rules)


def test_https_with_a_trusted_certificate_fetches(tmp_path, monkeypatch):
    certificate, key_file = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", certificate)  # the README's way to trust a private CA
    with JwksServer(tls=(certificate, key_file)) as server:
        server.publish("/jwks", {"keys": [public_jwk(new_key(), kid="k1")]})
        assert token_keys.fetch_json(f"{server.url}/jwks")["keys"][0]["kid"] == "k1"


@contextlib.contextmanager
def raw_http(*pieces: bytes, pause: float = 0.0):
    """A loopback server that answers one request with `pieces`, `pause` seconds apart."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer():
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            for piece in pieces:
                connection.sendall(piece)
                time.sleep(pause)  # the slow server is the point

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/jwks"
    finally:
        listener.close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
    ids=["not-http", "bad-chunk", "header-line-too-long"],
)
def test_an_answer_that_is_not_http_is_a_failed_fetch(answer):
    with raw_http(answer) as url:
        source = RemoteJwks(RULES.algorithms, 60, jwks_url=url, clock=Clock())
        source.load()  # no exception: the request that fetches must still get its 401
    assert "could not be fetched" in source.problem()


def test_a_jwk_set_nested_thousands_deep_is_not_json(idp):
    idp.publish("/jwks", b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    source = remote(idp, Clock())
    source.load()
    assert "did not answer JSON" in source.problem()
    with pytest.raises(KeySourceError, match="is not JSON"):
        token_keys.keys_from_jwks(
            b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "test", RULES.algorithms
        )


def test_an_answer_trickling_in_gives_up_at_the_timeout():
    # Each header line comes within the timeout; the whole answer would take 3 s.
    lines = [b"HTTP/1.1 200 OK\r\n", *[b"X-Slow: yes\r\n"] * 10, b"Content-Length: 2\r\n\r\n{}"]
    with raw_http(*lines, pause=0.25) as url:
        source = RemoteJwks(RULES.algorithms, 60, jwks_url=url, clock=Clock(), timeout=0.5)
        started = time.monotonic()
        source.load()
        waited = time.monotonic() - started
    assert "could not be fetched" in source.problem()
    assert waited < 1.5  # the timeout is for the whole answer, not for each line


def test_discovery_and_the_jwk_set_share_one_timeout(idp):
    idp.publish("/jwks", {"keys": [public_jwk(new_key(), kid="k1")]})
    idp.publish("/.well-known/openid-configuration", {"issuer": idp.url, "jwks_uri": f"{idp.url}/jwks"})
    idp.delay = 0.6  # each answer within the 1 s timeout, both together not
    source = RemoteJwks(RULES.algorithms, 60, issuer=idp.url, clock=Clock(), timeout=1.0)
    source.load()
    assert "could not be fetched" in source.problem()
    assert idp.hits["/jwks"] == 1
