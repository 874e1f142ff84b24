"""Bearer tokens: JWTs (RFC 7519) checked as RFC 8725 and RFC 9068 advise.

The service validates with public keys only (token_keys.py says where they come from).
Encoding needs a private key, which only the tests and the `create-token` command hold.
"""

import binascii
import json
import threading
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .token_keys import StaticKeys, VerificationKey, algorithms_for

ALGORITHM = "RS256"
# A header longer than this is not a token we issue; refuse it before any parsing.
MAX_TOKEN_LENGTH = 4096
ADMIN_SCOPE = "admin"
# The longest user name a token may carry: thoughts store it (models.py's username column).
MAX_USERNAME_LENGTH = 50
# Tokens remembered per worker process: a client sends the same token again and again.
TOKEN_CACHE_SIZE = 1024


class TokenError(Exception):
    """The token is missing or invalid; the message is safe to show to the caller."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        # RFC 6750 §3.1: when no credentials were sent, the challenge carries no error code.
        self.missing = missing


# RFC 9068 §4 asks for at+jwt; the IdPs in use, and this service's own tokens, write JWT or nothing.
ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})

# The claims TOKEN_AUDIENCE may be checked in: RFC 7519's aud, or client_id (RFC 9068 §2.2),
# where Amazon Cognito's access tokens name their app client and which carry no aud.
AUDIENCE_CLAIMS = ("aud", "client_id")


@dataclass(frozen=True)
class TokenRules:
    """What a token must carry, from the settings (config.py); the defaults are today's."""

    username_claim: str = "username"
    issuer: str | None = None
    audience: str | None = None
    # "aud" (PyJWT's check: a string or a list containing audience) or "client_id" (equal to it).
    audience_claim: str = "aud"
    algorithms: tuple[str, ...] = (ALGORITHM,)
    admin_scope: str = ADMIN_SCOPE


DEFAULT_RULES = TokenRules()


@dataclass(frozen=True)
class Claims:
    username: str
    # Whether they open /admin/ depends on TOKEN_ADMIN_SCOPE (auth.admin_claims).
    scopes: frozenset[str]


def encode_token(
    username: str,
    private_key: rsa.RSAPrivateKey,
    admin: bool = False,
    expires_in: int = 3600,
    username_claim: str = "username",
    admin_scope: str = ADMIN_SCOPE,
    **extra_claims,
) -> str:
    """A signed token for `username` (under `username_claim`), valid for `expires_in` seconds."""
    now = int(time.time())
    payload = {username_claim: username, "iat": now, "exp": now + expires_in}
    if admin:
        payload["scope"] = admin_scope
    payload.update(extra_claims)
    return jwt.encode(payload, private_key, algorithm=ALGORITHM)


class TokenCache:
    """Tokens that passed validation lately, with their claims, until they expire.

    Verifying an RS256 signature costs about 0.1 ms; looking a token up costs a dict lookup.
    Only tokens that passed every check are stored, each with the key that verified it and
    the rules it passed, and one is answered from here only while that key is still in use
    (the same key, or one of the current KeySet's), under the same rules, and only while
    `exp` (plus the leeway PyJWT allows) is still ahead. Bounded: when full, the oldest
    entry goes.
    """

    def __init__(self, max_entries: int = TOKEN_CACHE_SIZE, clock=time.time):
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[object, int, Claims, TokenRules]] = {}
        self._lock = threading.Lock()  # uWSGI may run several threads per worker

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, keys, leeway: int, rules: "TokenRules | None" = None) -> Claims | None:
        """The cached claims, if `keys` (a public key, or a KeySet) still holds the key that
        verified `token` and `rules` are those it passed."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        key, expires_at, claims, passed = entry
        rules = DEFAULT_RULES if rules is None else rules
        # PyJWT's own rule: expired once exp <= now - leeway.
        if (
            (key is keys or id(key) in getattr(keys, "key_ids", ()))
            and (passed is rules or passed == rules)
            and expires_at > self.clock() - leeway
        ):
            return claims
        with self._lock:
            self._entries.pop(token, None)
        return None

    def put(
        self, token: str, key, expires_at: int, claims: Claims, rules: "TokenRules | None" = None
    ) -> None:
        with self._lock:
            self._entries.pop(token, None)
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = (key, expires_at, claims, DEFAULT_RULES if rules is None else rules)


TOKEN_CACHE = TokenCache()


def _as_source(keys):
    """A key source (token_keys), or one public key as given by a caller: wrapped."""
    if hasattr(keys, "current"):
        return keys
    return StaticKeys([VerificationKey(keys, algorithms_for(keys))])


def decode_token(
    token: str,
    keys,
    leeway: int = 0,
    cache: TokenCache | None = TOKEN_CACHE,
    rules: "TokenRules | None" = None,
) -> Claims:
    """Verify signature, type, issuer, audience and times, and return the claims the service uses.

    `keys` is a key source of token_keys (the app's), or one public key.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("The token is too long")
    rules = DEFAULT_RULES if rules is None else rules
    source = _as_source(keys)
    key_set = source.current()
    cache_keys = keys if source is not keys else key_set
    if cache is not None and (claims := cache.get(token, cache_keys, leeway, rules)) is not None:
        return claims
    claims, expires_at, key = _verify(token, source, key_set, leeway, rules)
    if cache is not None:
        cache.put(token, keys if source is not keys else key, expires_at, claims, rules)
    return claims


def _header(token: str) -> tuple[str, str | None]:
    """The token's alg and kid, after the checks that need no key."""
    # The header segment alone: jwt.get_unverified_header would decode (and check) all three,
    # which doubled the cost of a verification; jwt.decode checks the whole token next.
    try:
        header = json.loads(jwt.utils.base64url_decode(token.partition(".")[0]))
    # RecursionError: a header of arrays nested thousands deep, as anyone may send.
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise TokenError("The token is malformed or its signature is invalid") from None
    if not isinstance(header, dict):
        raise TokenError("The token is malformed or its signature is invalid")
    algorithm, kid, token_type = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(algorithm, str) or not isinstance(kid, str | None):
        raise TokenError("The token is malformed or its signature is invalid")
    # RFC 9068 §4: an access token says at+jwt; JWT or nothing is what most issuers write.
    if token_type is not None and (
        not isinstance(token_type, str) or token_type.lower() not in ACCEPTED_TYPES
    ):
        raise TokenError("The token's type (typ) must be at+jwt or JWT")
    return algorithm, kid


def _verify(token: str, source, key_set, leeway: int, rules: "TokenRules") -> tuple[Claims, int, object]:
    algorithm, kid = _header(token)
    if algorithm not in rules.algorithms:
        # Neither "none" nor an HMAC signed with the public key as secret can pass, and
        # headers such as jku, x5u or jwk are never followed.
        raise TokenError(f"The token's algorithm must be one of {', '.join(rules.algorithms)}")
    candidates = key_set.candidates(kid, algorithm)
    if not candidates and kid is not None and not key_set.knows(kid):
        # A key the issuer may have just published: fetch again (rate-limited by the source).
        key_set = source.refresh_for_unknown_kid()
        candidates = key_set.candidates(kid, algorithm)
    if not candidates:
        if kid is not None and not key_set.knows(kid):
            raise TokenError("The token's key (kid) is not one this service trusts")
        raise TokenError(f"No key this service trusts verifies {algorithm} tokens")

    # The user-name claim is checked after the audience: a token for another API (an ID
    # token, say) is refused as that, whatever claims it lacks.
    required = ["exp"]
    required += ["iss"] if rules.issuer is not None else []
    by_aud = rules.audience_claim == "aud"
    required += ["aud"] if rules.audience is not None and by_aud else []
    for candidate in candidates:
        try:
            payload = jwt.decode(
                token,
                candidate.key,
                algorithms=[algorithm],
                leeway=leeway,
                audience=rules.audience if by_aud else None,
                issuer=rules.issuer,
                # With client_id deciding, an aud (a Cognito ID token's, say) is not checked here.
                options={"require": required, "verify_aud": by_aud},
            )
        except jwt.InvalidSignatureError:
            continue  # another candidate's, perhaps
        except jwt.ExpiredSignatureError:
            raise TokenError("The token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("The token is not valid yet") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenError(f"The token has no {error.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenError(
                "The token is not meant for this service (its aud is not TOKEN_AUDIENCE)"
            ) from None
        except jwt.InvalidIssuerError:
            raise TokenError("The token's issuer (iss) is not the one this service trusts") from None
        except jwt.InvalidTokenError:
            raise TokenError("The token is malformed or its signature is invalid") from None
        break
    else:
        raise TokenError("The token is malformed or its signature is invalid")

    issued_at = payload.get("iat")
    if isinstance(issued_at, int | float) and issued_at > time.time() + leeway:
        raise TokenError("The token was issued in the future")
    if not by_aud:
        _check_client_id(payload, rules.audience)

    claim = rules.username_claim
    if claim not in payload:
        raise TokenError(f"The token has no {claim!r} claim")
    username = payload[claim]
    if not isinstance(username, str) or not username.strip() or len(username) > MAX_USERNAME_LENGTH:
        raise TokenError(f"The token's {claim} must be a string of 1 to {MAX_USERNAME_LENGTH} characters")
    if "\x00" in username:
        raise TokenError(f"The token's {claim} contains a NUL character")
    # PyJWT checked that exp is there and a whole number of seconds.
    return Claims(username=username, scopes=_scopes(payload)), int(payload["exp"]), candidate.key


def _check_client_id(payload: dict, audience: str | None) -> None:
    """TOKEN_AUDIENCE_CLAIM=client_id: an access token (token_use, when present, says so) for
    the app client TOKEN_AUDIENCE, as Amazon Cognito writes them."""
    use = payload.get("token_use")
    if use is not None and use != "access":
        raise TokenError("The token is not an access token (its token_use is not 'access')")
    if audience is None:
        return
    if "client_id" not in payload:
        raise TokenError("The token has no 'client_id' claim")
    if payload["client_id"] != audience:
        raise TokenError("The token is not meant for this service (its client_id is not TOKEN_AUDIENCE)")


def _scopes(payload: dict) -> frozenset[str]:
    """RFC 9068's `scope` (a space-separated string), else `scp` (Entra ID, Okta: a list or string)."""
    scope = payload.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise TokenError("The token's scope must be a space-separated string")
        return frozenset(scope.split())
    scp = payload.get("scp", [])
    if isinstance(scp, str):
        return frozenset(scp.split())
    if not isinstance(scp, list) or not all(isinstance(item, str) for item in scp):
        raise TokenError("The token's scp must be a list of strings or a space-separated string")
    return frozenset(scp)


def validate_authorization_header(
    header: str | None, keys, leeway: int = 0, rules: "TokenRules | None" = None
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
    return decode_token(token, keys, leeway, rules=rules)
