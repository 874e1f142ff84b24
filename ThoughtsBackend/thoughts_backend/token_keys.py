"""The keys that verify tokens, and where they come from.

Exactly one source, chosen by the settings (config.py checks them):

- PEM (PUBLIC_KEY / PUBLIC_KEY_FILE): one or several public keys, fixed for the run;
- a JWK Set file (JWKS_FILE), read again when it changes (a mounted ConfigMap);
- a JWK Set URL (JWKS_URL), or the one that TOKEN_ISSUER's discovery document names.

Only the configured URL, or the issuer's discovery document, is ever fetched: nothing a
token says (`jku`, `x5u`, `jwk`, `kid`) leads to a request. A `kid` is only looked up
among keys already fetched; an unknown one may cause a fetch of the configured URL, at
most one per MIN_FETCH_INTERVAL_SECONDS in a process.

Why refresh in the request path, not in a thread: uWSGI's master imports wsgi.py (which
loads the keys) and then forks the workers. A thread started in the master does not exist
in a forked worker, and uWSGI runs a worker's Python threads only with `enable-threads`,
which uwsgi.ini does not set. So each worker keeps its own copy of the keys (inherited from
the master at fork), and the request that finds them due for a refresh, or that names a
`kid` not among them, fetches them itself: a bounded cost (a 2 s timeout, once per interval)
that needs no thread, no lock shared between processes and no uWSGI-only API.
"""

import hashlib
import http.client
import io
import ipaddress
import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

logger = logging.getLogger(__name__)

# The algorithms TOKEN_ALGORITHMS may list: asymmetric only. HMAC would make the public
# key a shared secret, and "none" is no signature at all.
SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
MINIMUM_RSA_KEY_BITS = 2048
# A fetch (discovery document or JWK Set) gives up after this long, in all.
FETCH_TIMEOUT_SECONDS = 2.0
# JWK Sets are a few KiB; a bigger answer is not one.
MAX_DOCUMENT_BYTES = 256 * 1024
# At most one fetch per process per this many seconds, whatever tokens arrive.
MIN_FETCH_INTERVAL_SECONDS = 2.0
# A JWKS_FILE's status is looked at no more often than this.
FILE_CHECK_INTERVAL_SECONDS = 1.0

# SHA-256 of the DER public keys whose private halves are published, so anyone can mint
# tokens for them: the key hard-coded in the original ThoughtsBackend's config.py.
PUBLISHED_KEY_FINGERPRINTS = frozenset({"b2043c0cc72b110b1663659fc6c4fe65912e33ee746d4523af55ea1b2fed4a8f"})

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {"secp256r1": frozenset({"ES256"}), "secp384r1": frozenset({"ES384"})}
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


class KeySourceError(Exception):
    """Keys could not be loaded; the message says from where and why, in one sentence."""


def algorithms_for(key) -> frozenset[str]:
    """The algorithms that can use a key of this type (RSA, the EC curve, EdDSA)."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC_ALGORITHMS.get(key.curve.name, frozenset())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def key_type_name(key) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removeprefix("_").removesuffix("PublicKey") or "unknown"


def fingerprint(key) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, eq=False)
class VerificationKey:
    """A public key, the algorithms it may verify, and its `kid` (None for a PEM key)."""

    key: object
    algorithms: frozenset[str]
    kid: str | None = None


@dataclass(eq=False)
class KeySet:
    """The keys in use at one moment; replaced as a whole, never changed."""

    keys: tuple[VerificationKey, ...] = ()
    # The document the keys came from, to tell an unchanged JWK Set from a new one.
    document: object = None
    by_kid: dict = field(init=False)
    without_kid: tuple = field(init=False)
    key_ids: frozenset = field(init=False)

    def __post_init__(self):
        by_kid: dict[str, list[VerificationKey]] = {}
        for key in self.keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        self.by_kid = by_kid
        self.without_kid = tuple(key for key in self.keys if key.kid is None)
        # The token cache holds the key that verified a token; the token is answered from
        # there only while that key is still one of these.
        self.key_ids = frozenset(id(key.key) for key in self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def knows(self, kid: str) -> bool:
        return kid in self.by_kid

    def candidates(self, kid: str | None, algorithm: str) -> list[VerificationKey]:
        """The keys that may verify a token with this header: its `kid`'s, or, for a token
        without one, every key; keys without a `kid` (PEM) are always candidates."""
        pool = self.keys if kid is None else (*self.by_kid.get(kid, ()), *self.without_kid)
        return [key for key in pool if algorithm in key.algorithms]


def _refuse_published(key, source: str) -> None:
    if fingerprint(key) in PUBLISHED_KEY_FINGERPRINTS:
        raise KeySourceError(
            f"{source} is the original ThoughtsBackend's example key, whose private key is public: "
            "anyone could sign tokens for it. Make your own pair with `python -m thoughts_backend generate-keys`"
        )


def _is_weak(key) -> bool:
    return isinstance(key, rsa.RSAPublicKey) and key.key_size < MINIMUM_RSA_KEY_BITS


def _check_key(key, source: str, allowed: tuple[str, ...]) -> frozenset[str]:
    """The allowed algorithms this key may verify; a published or weak key is an error."""
    _refuse_published(key, source)
    if _is_weak(key):
        raise KeySourceError(
            f"{source} is a {key.key_size}-bit RSA key; use at least {MINIMUM_RSA_KEY_BITS} bits"
        )
    return algorithms_for(key) & frozenset(allowed)


def keys_from_pem(text: str, source: str, allowed: tuple[str, ...]) -> list[VerificationKey]:
    """Every public key of a PEM text (one or several blocks), each checked."""
    if "PRIVATE KEY" in text:
        raise KeySourceError(
            f"{source} holds a private key; give the service only the public key "
            "(`openssl rsa -in private.pem -pubout`)"
        )
    blocks = [match.group(0) for match in _PEM_BLOCK.finditer(text)]
    if not blocks:
        raise KeySourceError(f"{source} is not a PEM-encoded public key")
    keys = []
    for number, block in enumerate(blocks, 1):
        where = source if len(blocks) == 1 else f"{source} (key {number})"
        try:
            key = serialization.load_pem_public_key(block.encode())
        except ValueError:
            raise KeySourceError(f"{where} is not a PEM-encoded public key") from None
        algorithms = _check_key(key, where, allowed)
        if not algorithms:
            needed = "an RSA public key" if set(allowed) <= _RSA_ALGORITHMS else "a public key"
            raise KeySourceError(
                f"{where} must be {needed} for TOKEN_ALGORITHMS ({', '.join(allowed)}); "
                f"it is a {key_type_name(key)} key"
            )
        keys.append(VerificationKey(key, algorithms))
    return keys


def keys_from_jwks(document, source: str, allowed: tuple[str, ...]) -> KeySet:
    """The usable keys of a JWK Set (RFC 7517 §5), parsed by PyJWT.

    A key is skipped when its `use` is not "sig", its `key_ops` lack "verify", its `alg` is
    not allowed, or it is a type PyJWT or TOKEN_ALGORITHMS cannot use (an encryption key
    beside the signing keys is normal). None usable, or private material, is an error.
    """
    if isinstance(document, bytes | str):
        try:
            document = json.loads(document)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise KeySourceError(f"{source} is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySourceError(f'{source} is not a JWK Set: expected a JSON object with a "keys" array')
    keys = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        if any(member in jwk for member in ("d", "p", "q", "k")):
            raise KeySourceError(
                f"{source} holds private or symmetric key material; publish only the public keys"
            )
        if jwk.get("use", "sig") != "sig":
            continue
        key_ops = jwk.get("key_ops")
        if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
            continue
        declared = jwk.get("alg")
        if declared is not None and declared not in allowed:
            continue
        try:
            key = jwt.PyJWK(jwk).key
        except jwt.PyJWTError:  # a type or curve PyJWT does not support
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        _refuse_published(key, f"{source} key {kid!r}")
        if _is_weak(key):
            continue  # an IdP's set may still list an old short key: never used
        algorithms = algorithms_for(key) & frozenset(allowed)
        if declared is not None:
            algorithms &= {declared}
        if algorithms:
            keys.append(VerificationKey(key, algorithms, kid))
    if not keys:
        raise KeySourceError(
            f"{source} has no signing key usable with TOKEN_ALGORITHMS ({', '.join(allowed)})"
        )
    return KeySet(tuple(keys), document)


# --- Fetching ----------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, name: str) -> str:
    """`url` if it may be fetched: https, or plain http to a loopback address only."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None or parts.scheme not in ("https", "http"):
        raise KeySourceError(f"{name} must be an https:// URL, not {url!r}")
    if parts.username or parts.password:
        raise KeySourceError(f"{name} must not carry a user name or password, not {url!r}")
    if parts.scheme == "http" and not is_loopback(host):
        raise KeySourceError(
            f"{name} must use https (plain http is allowed only to a loopback address such as 127.0.0.1), "
            f"not {url!r}"
        )
    return url


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # Following a redirect would fetch a URL nobody configured: the 3xx is an error.
    def redirect_request(self, *args, **kwargs):
        return None


class _DeadlineReader(io.RawIOBase):
    """A response's socket, each wait for data cut at the fetch's deadline.

    A socket timeout bounds one wait only: a server that sends its status line, headers or
    body a byte at a time would hold the request for as long as it likes.
    """

    def __init__(self, file, sock, deadline: float):
        # `file` is the socket's own reader, kept open so that the socket stays open too.
        self._file, self._sock, self._deadline = file, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the fetch's time is up")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


def _until(connection_class, deadline: float):
    """`connection_class` whose responses are read no later than `deadline`."""

    class Response(http.client.HTTPResponse):
        def __init__(self, sock, *args, **kwargs):
            super().__init__(sock, *args, **kwargs)
            self.fp = io.BufferedReader(_DeadlineReader(self.fp, sock, deadline))

    class Connection(connection_class):
        response_class = Response

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline

    def http_open(self, request):
        return self.do_open(_until(http.client.HTTPConnection, self.deadline), request)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float):
        self.deadline, self.context = deadline, ssl.create_default_context()
        super().__init__(context=self.context)

    def https_open(self, request):
        return self.do_open(_until(http.client.HTTPSConnection, self.deadline), request, context=self.context)


def _opener(url: str, deadline: float) -> urllib.request.OpenerDirector:
    handlers: list = [_RefuseRedirects(), _HTTPHandler(deadline), _HTTPSHandler(deadline)]
    if is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # a proxy would not reach our loopback
    return urllib.request.build_opener(*handlers)


def fetch_json(url: str, deadline: float | None = None) -> object:
    """GET `url` as JSON: no redirects, certificates checked, done by `deadline` (a
    time.monotonic() value; default FETCH_TIMEOUT_SECONDS from now), size capped."""
    if deadline is None:
        deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise KeySourceError(f"{url} was not fetched: the time for the fetch ran out before it")
    # check_url let only https, or http to loopback, into the settings and the discovered jwks_uri.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with _opener(url, deadline).open(request, timeout=remaining) as response:
            chunks, size = [], 0
            while chunk := response.read(16384):
                size += len(chunk)
                if size > MAX_DOCUMENT_BYTES:
                    raise KeySourceError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
                chunks.append(chunk)
    except urllib.error.HTTPError as error:
        raise KeySourceError(f"{url} answered HTTP {error.code} (redirects are not followed)") from None
    except urllib.error.URLError as error:
        raise KeySourceError(f"{url} could not be fetched ({error.reason})") from None
    except TimeoutError:
        raise KeySourceError(f"{url} could not be fetched in the {remaining:.1f} s left") from None
    # OSError: resets, refusals; HTTPException: not HTTP (a bad status line, chunk or header).
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise KeySourceError(f"{url} could not be fetched ({type(error).__name__})") from None
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise KeySourceError(f"{url} did not answer JSON") from None


def discover_jwks_uri(issuer: str, deadline: float | None = None) -> str:
    """The `jwks_uri` of the issuer's OpenID discovery document, whose `issuer` must be ours."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    document = fetch_json(url, deadline)
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        found = document.get("issuer") if isinstance(document, dict) else None
        raise KeySourceError(f"{url} names the issuer {found!r}, not TOKEN_ISSUER ({issuer!r})")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise KeySourceError(f"{url} has no jwks_uri")
    return check_url(jwks_uri, f"the jwks_uri of {url}")


# --- Sources -----------------------------------------------------------------------------


class StaticKeys:
    """PEM keys: the same for the whole run."""

    description = "PEM"

    def __init__(self, keys: list[VerificationKey]):
        self._keys = KeySet(tuple(keys))

    def load(self) -> None:
        pass

    def current(self) -> KeySet:
        return self._keys

    def refresh_for_unknown_kid(self) -> KeySet:
        return self._keys

    def problem(self) -> str | None:
        """Why no keys are loaded, or None when some are."""
        return None


class JwksFile:
    """A JWK Set in a file, read again when its inode, size or modification time change.

    A Kubernetes ConfigMap volume swaps a symlink to publish a new version, so the path
    names a new inode then. A version that cannot be used leaves the keys as they were.
    """

    def __init__(self, path: str, allowed: tuple[str, ...], clock=time.monotonic):
        self.path, self.allowed, self.clock = path, allowed, clock
        self.description = f"JWKS_FILE ({path})"
        self._stamp = self._status()
        self._keys = self._read()
        self._next_check = clock() + FILE_CHECK_INTERVAL_SECONDS

    def _status(self):
        try:
            status = os.stat(self.path)
        except OSError as error:
            raise KeySourceError(f"Cannot read {self.description}: {error.strerror}") from None
        return status.st_ino, status.st_size, status.st_mtime_ns

    def _read(self) -> KeySet:
        try:
            with open(self.path, "rb") as file:
                text = file.read(MAX_DOCUMENT_BYTES + 1)
        except OSError as error:
            raise KeySourceError(f"Cannot read {self.description}: {error.strerror}") from None
        if len(text) > MAX_DOCUMENT_BYTES:
            raise KeySourceError(f"{self.description} is larger than {MAX_DOCUMENT_BYTES} bytes")
        return keys_from_jwks(text, self.description, self.allowed)

    def load(self) -> None:
        pass  # read in __init__, so that a bad file stops the start

    def current(self) -> KeySet:
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + FILE_CHECK_INTERVAL_SECONDS
            try:
                stamp = self._status()
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._keys = self._read()
                    logger.info("token keys re-read from %s: %d keys", self.description, len(self._keys))
            except KeySourceError as error:
                logger.warning("token keys kept as they were: %s", error)
        return self._keys

    def refresh_for_unknown_kid(self) -> KeySet:
        return self.current()

    def problem(self) -> str | None:
        return None


class RemoteJwks:
    """A JWK Set fetched from JWKS_URL, or from the jwks_uri of TOKEN_ISSUER's discovery.

    Fetched at start (before uWSGI forks), again when older than `refresh_seconds`, and when
    a token names an unknown `kid`; never more than once per MIN_FETCH_INTERVAL_SECONDS.
    A failed fetch keeps the keys already held. After one that waited for the timeout (an
    IdP that does not answer), the next try waits a whole refresh period, so that no more
    than one request per period waits; after a quick failure (refused, an error status,
    garbage) tries back off from 2 s, doubling up to the refresh period.
    """

    def __init__(
        self,
        allowed: tuple[str, ...],
        refresh_seconds: float,
        jwks_url: str | None = None,
        issuer: str | None = None,
        clock=time.monotonic,
        timeout: float = FETCH_TIMEOUT_SECONDS,
    ):
        self.allowed, self.refresh_seconds, self.clock, self.timeout = (
            allowed,
            refresh_seconds,
            clock,
            timeout,
        )
        self.jwks_url, self.issuer = jwks_url, issuer
        self.description = f"JWKS_URL ({jwks_url})" if jwks_url else f"the discovery document of {issuer}"
        self._keys = KeySet()
        self._refresh_due = 0.0
        self._next_attempt = 0.0
        self._failures = 0
        self._last_error: str | None = "not fetched yet"
        self._lock = threading.Lock()  # uWSGI may run several threads per worker
        self.fetch_count = 0

    def load(self) -> None:
        """The first fetch, at start-up; a failure is logged, and the service starts anyway."""
        self._try_fetch()

    def current(self) -> KeySet:
        if self.clock() >= self._refresh_due:
            self._try_fetch()
        return self._keys

    def refresh_for_unknown_kid(self) -> KeySet:
        self._try_fetch()
        return self._keys

    def problem(self) -> str | None:
        if len(self._keys):
            return None
        return f"No token keys are loaded yet from {self.description}: {self._last_error}"

    def _try_fetch(self) -> None:
        if self.clock() < self._next_attempt or not self._lock.acquire(blocking=False):
            return  # too soon, or another thread of this process is fetching
        try:
            started = self.clock()
            if started < self._next_attempt:
                return
            self._next_attempt = started + MIN_FETCH_INTERVAL_SECONDS
            self.fetch_count += 1
            waiting_since = time.monotonic()  # real time, whatever clock the tests give
            # One timeout for the discovery document and the JWK Set together.
            deadline = waiting_since + self.timeout
            try:
                jwks_url = self.jwks_url or discover_jwks_uri(self.issuer, deadline)
                document = fetch_json(jwks_url, deadline)
                if document == self._keys.document:
                    keys = self._keys  # unchanged: tokens in the cache stay valid
                else:
                    keys = keys_from_jwks(document, jwks_url, self.allowed)
            except KeySourceError as error:
                self._failures += 1
                self._last_error = str(error)
                if time.monotonic() - waiting_since >= self.timeout / 2:
                    backoff = self.refresh_seconds
                else:
                    backoff = min(
                        self.refresh_seconds, MIN_FETCH_INTERVAL_SECONDS * 2 ** (self._failures - 1)
                    )
                self._next_attempt = started + max(MIN_FETCH_INTERVAL_SECONDS, backoff)
                logger.warning(
                    "token keys not refreshed (%d keys kept; next try in %.0f s): %s",
                    len(self._keys),
                    self._next_attempt - started,
                    error,
                )
                return
            if keys is not self._keys:
                logger.info("token keys loaded from %s: %d keys", jwks_url, len(keys))
            self._keys = keys
            self._failures = 0
            self._last_error = None
            self._refresh_due = started + self.refresh_seconds
        finally:
            self._lock.release()
