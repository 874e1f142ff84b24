"""RS256 bearer tokens (RFC 7519, with the RFC 8725 best practices).

The service validates with a public key only. Encoding needs a private key, which only
the tests and the `create-token` command ever hold.
"""

import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .models import MAX_USERNAME_LENGTH

ALGORITHM = "RS256"
# A header longer than this is not a token we issue; refuse it before any parsing.
MAX_TOKEN_LENGTH = 4096
ADMIN_SCOPE = "admin"


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


def decode_token(token: str, public_key: rsa.RSAPublicKey, leeway: int = 0) -> Claims:
    """Verify signature and times, and return the claims the service uses."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("The token is too long")
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
    return Claims(username=username, scopes=frozenset(scope.split()))


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
