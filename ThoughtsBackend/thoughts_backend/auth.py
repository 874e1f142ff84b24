"""Who is calling: the claims of the request's bearer token."""

from flask import current_app, request
from flask_restx import Api

from .errors import BEARER_REALM, ApiError
from .token_validation import Claims, validate_authorization_header

BEARER_SECURITY = "bearer"
SWAGGER_AUTHORIZATIONS = {
    BEARER_SECURITY: {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "An RS256 token, written as: `Bearer <token>`",
    }
}


def init_app(api: Api) -> None:
    """The spec declares the bearer scheme that the token routes name (BEARER_SECURITY)."""
    api.authorizations = SWAGGER_AUTHORIZATIONS


def caller_claims() -> Claims:
    """The validated claims, or TokenError (answered 401) when there is no valid token."""
    config = current_app.config
    return validate_authorization_header(
        request.headers.get("Authorization"),
        config["TOKEN_KEYS"],
        config["TOKEN_LEEWAY_SECONDS"],
        config["TOKEN_RULES"],
    )


def admin_claims() -> Claims:
    claims = caller_claims()
    admin_scope = current_app.config["TOKEN_RULES"].admin_scope
    if admin_scope not in claims.scopes:
        # RFC 6750 §3.1: the token is valid, its scope is not enough; the scope says which
        # (config.py let no quote or backslash into it).
        challenge = f'Bearer realm="{BEARER_REALM}", error="insufficient_scope", scope="{admin_scope}"'
        raise ApiError(
            403,
            f"This route needs a token whose scope includes {admin_scope!r}",
            headers={"WWW-Authenticate": challenge},
        )
    return claims
