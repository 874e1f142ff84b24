"""The served service (start_server.sh, uWSGI) against a real OpenID provider on loopback.

The provider is panva's oidc-provider (oidc/, the lockfile's version; `make test-idp`
installs it with `npm ci`), issuing RFC 9068 JWT access tokens by the client-credentials
grant for this API as a resource indicator, and ID tokens by the code flow. The service
finds its keys from TOKEN_ISSUER's discovery document, as in production.

Figures (rotation, fetch counts) are printed: `make test-idp` shows them (pytest -s).
"""

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.parse

import jwt
import pytest
import requests

from thoughts_backend.token_keys import MIN_FETCH_INTERVAL_SECONDS

from ..identity_support import new_key
from ..support import cannot_run, wait_for
from ..uwsgi_process import CODE_DIR, ServedApp, free_port
from .load import Load

pytestmark = pytest.mark.idp

OIDC_DIR = CODE_DIR.parent / "oidc"
AUDIENCE = "https://thoughts.example/api"
TIMEOUT = 10
REFRESH_SECONDS = 5
WORKERS = 2


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def private_jwk(key, kid: str) -> dict:
    """A signing key for the provider: PyJWT's JWK of the private key, for RS256 signatures."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk.pop("key_ops", None)  # PyJWT writes ["sign"]; the provider would publish it as is
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


class OpenIDProvider:
    """oidc/provider.mjs on 127.0.0.1:<port>; `issuer` defaults to its own URL."""

    def __init__(self, directory, keys: list[dict], issuer: str | None = None, port: int | None = None):
        if shutil.which("node") is None or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            cannot_run("the OpenID provider is not installed: run `make test-idp` (npm ci --prefix oidc)")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = issuer or self.url
        self.settings = directory / f"provider-{self.port}.json"
        self.settings.write_text(json.dumps({"port": self.port, "issuer": self.issuer, "keys": keys}))
        self.log = directory / f"provider-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "OpenIDProvider":
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["node", str(OIDC_DIR / "provider.mjs"), str(self.settings)],
                cwd=OIDC_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def answers():
            assert self.process.poll() is None, self.log.read_text()
            try:
                return requests.get(f"{self.url}/.well-known/openid-configuration", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(answers, timeout=30, what=f"the OpenID provider did not answer at {self.url}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "OpenIDProvider":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def token(self, client: str = "writer", scope: str = "write", resource: str = AUDIENCE) -> str:
        response = requests.post(
            f"{self.url}/token",
            auth=(client, f"{client}-secret"),
            data={"grant_type": "client_credentials", "scope": scope, "resource": resource},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def id_token(self) -> str:
        """Sign in as alice through the provider's development login and consent pages."""
        verifier = secrets.token_urlsafe(48)
        query = {
            "client_id": "web",
            "response_type": "code",
            "scope": "openid",
            "redirect_uri": "http://127.0.0.1:9/callback",
            "code_challenge": b64(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
            "nonce": secrets.token_urlsafe(8),
        }
        browser = requests.Session()
        response = browser.get(
            f"{self.url}/auth?{urllib.parse.urlencode(query)}", allow_redirects=False, timeout=TIMEOUT
        )
        for _step in range(10):
            location = response.headers.get("Location")
            if location and location.startswith(query["redirect_uri"]):
                break
            if location:
                response = browser.get(
                    urllib.parse.urljoin(self.url, location), allow_redirects=False, timeout=TIMEOUT
                )
                continue
            action = re.search(r'action="([^"]+)"', response.text).group(1)
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', response.text))
            response = browser.post(
                urllib.parse.urljoin(self.url, action),
                data={"login": "alice", "password": "any", **fields},
                allow_redirects=False,
                timeout=TIMEOUT,
            )
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
        answer = requests.post(
            f"{self.url}/token",
            auth=("web", "web-secret"),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": query["redirect_uri"],
                "code_verifier": verifier,
            },
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["id_token"]

    def publish(self, keys: list[dict]) -> None:
        """Serve these keys from now on; the first one signs."""
        response = requests.post(f"{self.url}/test-control/keys", json={"keys": keys}, timeout=TIMEOUT)
        assert response.status_code == 204, response.text

    def jwks_fetches(self) -> int:
        return requests.get(f"{self.url}/test-control/stats", timeout=TIMEOUT).json()["jwks"]


def service_environment(tmp_path, issuer: str, refresh: int = REFRESH_SECONDS) -> dict:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TOKEN_ISSUER": issuer,
        "TOKEN_AUDIENCE": AUDIENCE,
        "TOKEN_USERNAME_CLAIM": "preferred_username",
        "TOKEN_LEEWAY_SECONDS": "0",
        "JWKS_REFRESH_SECONDS": str(refresh),
    }


def call(
    service, token: str, method: str = "GET", path: str = "/api/me/thoughts/", **kwargs
) -> requests.Response:
    return requests.request(
        method, service.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT, **kwargs
    )


def assert_refused(response: requests.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="thoughts", error="invalid_token"'), challenge
    assert reason in response.json()["message"], response.json()


def forged(key, kid: str, issuer: str, **claims) -> str:
    now = int(time.time())
    payload = {"preferred_username": "mallory", "iss": issuer, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return jwt.encode({**payload, **claims}, key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})


@pytest.fixture(scope="module")
def signing_key():
    return new_key()


@pytest.fixture(scope="module")
def idp(tmp_path_factory, signing_key):
    with OpenIDProvider(tmp_path_factory.mktemp("idp"), [private_jwk(signing_key, "key-1")]) as provider:
        yield provider


@pytest.fixture(scope="module")
def service(tmp_path_factory, idp):
    directory = tmp_path_factory.mktemp("service")
    with ServedApp(
        service_environment(directory, idp.issuer), processes=WORKERS, ready_path="/readyz"
    ) as app:
        yield app


def test_a_provider_token_writes_under_the_configured_claim(service, idp):
    response = call(service, idp.token("writer"), "POST", json={"text": "from an identity provider"})
    assert response.status_code == 201, response.text
    assert response.json()["username"] == "svc-writer"  # preferred_username, not sub ("writer")


def test_an_admin_scoped_token_deletes_through_admin(service, idp):
    thought = call(service, idp.token("writer"), "POST", json={"text": "to be moderated"}).json()
    path = f"/admin/thoughts/{thought['id']}/"
    refused = call(service, idp.token("writer"), "DELETE", path)
    assert refused.status_code == 403 and "'admin'" in refused.json()["message"]
    assert call(service, idp.token("moderator", scope="write admin"), "DELETE", path).status_code == 204
    assert requests.get(f"{service.url}/api/thoughts/{thought['id']}/", timeout=TIMEOUT).status_code == 404


def test_tokens_not_for_this_service_are_refused(service, idp, signing_key, tmp_path):
    assert_refused(
        call(service, idp.token(resource="https://other.example/api")), "not meant for this service"
    )
    # An ID token is for the client that signed the user in (aud: "web"), not for this API.
    assert_refused(call(service, idp.id_token()), "not meant for this service")

    # Another issuer with the very same keys: only `iss` tells its tokens apart.
    with OpenIDProvider(tmp_path, [private_jwk(signing_key, "key-1")]) as other_issuer:
        assert_refused(call(service, other_issuer.token()), "issuer (iss) is not the one")
    # A second instance that claims our issuer and kid, with keys of its own.
    with OpenIDProvider(tmp_path, [private_jwk(new_key(), "key-1")], issuer=idp.issuer) as impostor:
        assert_refused(call(service, impostor.token()), "signature is invalid")

    assert_refused(call(service, forged(new_key(), "never-published", idp.issuer)), "kid) is not one")

    # HS256 keyed with what the JWK Set publishes: the modulus, the JWK, the whole set.
    jwks = requests.get(f"{idp.url}/jwks", timeout=TIMEOUT).json()
    payload = {
        "preferred_username": "mallory",
        "iss": idp.issuer,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 600,
    }
    for secret in (jwks["keys"][0]["n"], json.dumps(jwks["keys"][0]), json.dumps(jwks)):
        header = {"alg": "HS256", "typ": "at+jwt", "kid": "key-1"}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
        signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        assert_refused(call(service, f"{signing_input}.{b64(signature)}"), "algorithm must be one of RS256")


def test_an_expired_provider_token_is_refused(service, idp):
    token = idp.token("short")  # the provider gives this client 2-second tokens
    assert call(service, token).status_code == 200
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    wait_for(lambda: time.time() > expires_at, timeout=5, what="the token did not reach its exp")
    assert_refused(call(service, token), "expired")


class TokenLoad(Load):
    """Clients (load.Load's threads) calling GET /api/me/thoughts/ with `token` (changed as
    they run) until the `with` block ends."""

    def __init__(self, service, token: str, clients: int = 3):
        self.token = token
        super().__init__(service.url, [self._request] * clients, cap=None, timeout=TIMEOUT)

    def _request(self, _n, _previous):
        return "GET", "/api/me/thoughts/", {"headers": {"Authorization": f"Bearer {self.token}"}}

    @property
    def failures(self) -> list[str]:
        """Every request not answered 200: its status (or what happened instead) and body."""
        return [
            f"{o.status or o.error} {o.body.decode(errors='replace')}"
            for o in self.snapshot()
            if o.status != 200
        ]


def accepted_after(service, token: str, timeout: float) -> float:
    """Seconds until `token` is accepted (polled every 50 ms)."""
    started = time.monotonic()
    wait_for(
        lambda: call(service, token).status_code == 200, timeout, "the token of the new key was not accepted"
    )
    return time.monotonic() - started


def test_key_rotation_under_load_fails_no_request(service, idp, signing_key):
    """Publish, then sign with the new key, then withdraw the old one, all under load."""
    old, new = private_jwk(signing_key, "key-1"), private_jwk(new_key(), "key-2")
    old_token = idp.token()
    with TokenLoad(service, old_token) as load:
        started = time.monotonic()
        idp.publish([old, new])  # the new key is published; the old one still signs
        # As an IdP does it (days ahead, usually): the new key is out before it signs, here by
        # more than the interval between two fetches of a worker.
        time.sleep(MIN_FETCH_INTERVAL_SECONDS + 1)
        idp.publish([new, old])  # the new key signs
        new_token = idp.token()
        assert jwt.get_unverified_header(new_token)["kid"] == "key-2"
        new_key_seconds = accepted_after(service, new_token, timeout=10)
        load.token = new_token
        assert call(service, old_token).status_code == 200  # the old key's tokens live on until exp
        time.sleep(1)  # the load runs on the new key's token for a while
        withdrawn = time.monotonic()
        idp.publish([new])  # the old key is withdrawn
        wait_for(
            lambda: call(service, old_token).status_code == 401,
            timeout=REFRESH_SECONDS + MIN_FETCH_INTERVAL_SECONDS + 5,
            what="the withdrawn key's token was still accepted",
        )
        withdrawn_seconds = time.monotonic() - withdrawn
        total = time.monotonic() - started
    requests_made = len(load.snapshot())
    print(
        f"\nrotation: {requests_made} requests in {total:.1f} s, {len(load.failures)} failed; the new key's first "
        f"token accepted after {new_key_seconds:.2f} s; the withdrawn key's token refused after {withdrawn_seconds:.1f} s "
        f"(JWKS_REFRESH_SECONDS={REFRESH_SECONDS})"
    )
    assert load.failures == [] and requests_made > 50
    assert withdrawn_seconds <= REFRESH_SECONDS + MIN_FETCH_INTERVAL_SECONDS + 1


def test_a_key_that_signs_as_soon_as_it_is_published_is_accepted_within_the_fetch_interval(service, idp):
    """No publication ahead at all, the worst case: bounded by MIN_FETCH_INTERVAL_SECONDS."""
    idp.publish([private_jwk(new_key(), "key-3")])
    published = time.monotonic()
    token = idp.token()
    accepted_after(service, token, timeout=MIN_FETCH_INTERVAL_SECONDS + 5)
    seconds = time.monotonic() - published
    print(f"\nimmediate rotation: the new key's token accepted {seconds:.2f} s after its publication")
    assert seconds <= MIN_FETCH_INTERVAL_SECONDS + 2


def test_a_flood_of_random_kids_causes_bounded_fetches(service, idp):
    before = idp.jwks_fetches()
    _header, payload, signature = forged(new_key(), "random", idp.issuer).split(".")

    def flood(_n, _previous):
        # A new kid each time: the header is re-written, the signature no longer matters.
        header = b64(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": secrets.token_hex(8)}).encode())
        return (
            "GET",
            "/api/me/thoughts/",
            {"headers": {"Authorization": f"Bearer {header}.{payload}.{signature}"}},
        )

    started = time.monotonic()
    with Load(service.url, [flood] * 4, cap=250, timeout=TIMEOUT) as load:
        load.wait()
    seconds = time.monotonic() - started
    statuses: dict[int | str, int] = {}
    for outcome in load.snapshot():  # what happened instead of a status, if anything did
        status = outcome.status if outcome.status is not None else (outcome.error or outcome.kind)
        statuses[status] = statuses.get(status, 0) + 1
    fetches = idp.jwks_fetches() - before
    bound = WORKERS * (math.ceil(seconds / MIN_FETCH_INTERVAL_SECONDS) + 1)
    print(
        f"\nflood: 1000 requests with random kids in {seconds:.1f} s: {statuses}; {fetches} JWKS fetches (bound {bound})"
    )
    assert statuses == {401: 1000}
    assert fetches <= bound


def test_with_the_provider_stopped_cached_keys_serve_and_unseen_kids_fail_fast(tmp_path):
    key = new_key()
    with OpenIDProvider(tmp_path, [private_jwk(key, "key-1")]) as provider:
        environment = service_environment(tmp_path, provider.issuer, refresh=30)
        with ServedApp(environment, processes=WORKERS, ready_path="/readyz") as service:
            used, unused = provider.token(), provider.token()
            assert call(service, used).status_code == 200

            # Not answering (stopped, its socket still open): the fetch waits for its timeout,
            # once per worker, then not again before the refresh period.
            provider.process.send_signal(signal.SIGSTOP)
            stopped, durations = time.monotonic(), []
            stranger = new_key()
            # Long enough for every worker's fetch interval to pass, so that each may try.
            while time.monotonic() - stopped < 2 * MIN_FETCH_INTERVAL_SECONDS + 2:
                started = time.monotonic()
                unseen = forged(stranger, f"unseen-{len(durations)}", provider.issuer)
                assert_refused(call(service, unseen), "kid) is not one")
                durations.append(time.monotonic() - started)
            slow = [seconds for seconds in durations if seconds > 1]
            assert 1 <= len(slow) <= WORKERS, durations  # the 2 s timeout, once per worker
            assert call(service, used).status_code == 200
            assert call(service, unused).status_code == 200  # never seen, verified with a cached key

            # Gone (refused connections): the same, and fast.
            provider.stop()
            for n in range(10):
                started = time.monotonic()
                assert_refused(
                    call(service, forged(new_key(), f"gone-{n}", provider.issuer)), "kid) is not one"
                )
                assert time.monotonic() - started < 1
            assert call(service, used).status_code == 200
            print(
                f"\nprovider not answering: {len(durations)} unseen-kid requests, {len(slow)} waited for the "
                f"timeout ({', '.join(f'{seconds:.2f}' for seconds in slow)} s), the others at most "
                f"{max(seconds for seconds in durations if seconds <= 1):.2f} s"
            )


def test_a_start_with_the_provider_unreachable_serves_once_it_answers(tmp_path):
    key, port = new_key(), free_port()
    issuer = f"http://127.0.0.1:{port}"
    with ServedApp(service_environment(tmp_path, issuer), processes=WORKERS) as service:
        status, body = service.get("/readyz")
        assert status == 503 and json.loads(body)["message"].startswith("No token keys are loaded yet")
        assert service.get("/healthz")[0] == 200
        with OpenIDProvider(tmp_path, [private_jwk(key, "key-1")], port=port) as provider:
            wait_for(
                lambda: service.get("/readyz")[0] == 200, timeout=40, what="/readyz did not become ready"
            )
            response = call(service, provider.token(), "POST", json={"text": "after the provider came up"})
            assert response.status_code == 201, response.text
