"""Who is calling: the claims of the request's bearer token."""

from flask import current_app, request

from .errors import ApiError
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


def caller_claims() -> Claims:
    """The validated claims, or TokenError (answered 401) when there is no valid token."""
    return validate_authorization_header(
        request.headers.get("Authorization"),
        current_app.config["PUBLIC_KEY_OBJECT"],
        current_app.config["TOKEN_LEEWAY_SECONDS"],
    )


def admin_claims() -> Claims:
    claims = caller_claims()
    if not claims.is_admin:
        raise ApiError(403, "This route needs a token whose scope includes 'admin'")
    return claims
