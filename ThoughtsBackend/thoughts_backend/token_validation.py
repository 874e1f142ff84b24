"""RS256 bearer tokens (RFC 7519, with the RFC 8725 best practices).

The service validates with a public key only. Encoding needs a private key, which only
the tests and the `create-token` command ever hold.
"""

import threading
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .models import MAX_USERNAME_LENGTH

ALGORITHM = "RS256"
# A header longer than this is not a token we issue; refuse it before any parsing.
MAX_TOKEN_LENGTH = 4096
ADMIN_SCOPE = "admin"
# Tokens remembered per worker process: a client sends the same token again and again.
TOKEN_CACHE_SIZE = 1024


class TokenError(Exception):
    """The token is missing or invalid; the message is safe to show to the caller."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        # RFC 6750 §3.1: when no credentials were sent, the challenge carries no error code.
        self.missing = missing


@dataclass(frozen=True)
class Claims:
    username: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def encode_token(
    username: str,
    private_key: rsa.RSAPrivateKey,
    admin: bool = False,
    expires_in: int = 3600,
    **extra_claims,
) -> str:
    """A signed token for `username`, valid for `expires_in` seconds."""
    now = int(time.time())
    payload = {"username": username, "iat": now, "exp": now + expires_in}
    if admin:
        payload["scope"] = ADMIN_SCOPE
    payload.update(extra_claims)
    return jwt.encode(payload, private_key, algorithm=ALGORITHM)


class TokenCache:
    """Tokens that passed validation lately, with their claims, until they expire.

    Verifying an RS256 signature costs about 0.1 ms; looking a token up costs a dict lookup.
    Only tokens that passed every check are stored, each with the key that verified it, and
    one is answered from here only for that same key and only while `exp` (plus the leeway
    PyJWT allows) is still ahead. Bounded: when full, the oldest entry goes.
    """

    def __init__(self, max_entries: int = TOKEN_CACHE_SIZE, clock=time.time):
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[rsa.RSAPublicKey, int, Claims]] = {}
        self._lock = threading.Lock()  # uWSGI may run several threads per worker

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, public_key: rsa.RSAPublicKey, leeway: int) -> Claims | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        key, expires_at, claims = entry
        # PyJWT's own rule: expired once exp <= now - leeway.
        if key is public_key and expires_at > self.clock() - leeway:
            return claims
        with self._lock:
            self._entries.pop(token, None)
        return None

    def put(self, token: str, public_key: rsa.RSAPublicKey, expires_at: int, claims: Claims) -> None:
        with self._lock:
            self._entries.pop(token, None)
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = (public_key, expires_at, claims)


TOKEN_CACHE = TokenCache()


def decode_token(
    token: str, public_key: rsa.RSAPublicKey, leeway: int = 0, cache: TokenCache | None = TOKEN_CACHE
) -> Claims:
    """Verify signature and times, and return the claims the service uses."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("The token is too long")
    if cache is not None and (claims := cache.get(token, public_key, leeway)) is not None:
        return claims
    claims, expires_at = _verify(token, public_key, leeway)
    if cache is not None:
        cache.put(token, public_key, expires_at, claims)
    return claims


def _verify(token: str, public_key: rsa.RSAPublicKey, leeway: int) -> tuple[Claims, int]:
    try:
        # Only RS256 is allowed, so neither "none" nor an HMAC signed with the public
        # key as secret can pass; headers such as kid or jku are never followed.
        payload = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            leeway=leeway,
            options={"require": ["exp", "username"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("The token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("The token is not valid yet") from None
    except jwt.MissingRequiredClaimError as error:
        raise TokenError(f"The token has no {error.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise TokenError("The token is malformed or its signature is invalid") from None

    issued_at = payload.get("iat")
    if isinstance(issued_at, int | float) and issued_at > time.time() + leeway:
        raise TokenError("The token was issued in the future")

    username = payload["username"]
    if not isinstance(username, str) or not username.strip() or len(username) > MAX_USERNAME_LENGTH:
        raise TokenError(f"The token's username must be a string of 1 to {MAX_USERNAME_LENGTH} characters")
    if "\x00" in username:
        raise TokenError("The token's username contains a NUL character")

    scope = payload.get("scope", "")
    if not isinstance(scope, str):
        raise TokenError("The token's scope must be a space-separated string")
    # PyJWT checked that exp is there and a whole number of seconds.
    return Claims(username=username, scopes=frozenset(scope.split())), int(payload["exp"])


def validate_authorization_header(
    header: str | None, public_key: rsa.RSAPublicKey, leeway: int = 0
) -> Claims:
    """Claims from an `Authorization: Bearer <token>` value (the scheme is case-insensitive)."""
    if not header:
        raise TokenError("Authentication required: send 'Authorization: Bearer <token>'", missing=True)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise TokenError("The Authorization header must use the Bearer scheme")
    token = token.strip()
    if not token:
        raise TokenError("The Authorization header has no token after 'Bearer'")
    return decode_token(token, public_key, leeway)
