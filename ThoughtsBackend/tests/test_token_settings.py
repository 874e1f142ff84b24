"""The identity-provider settings: each bad value stops the start with one clear sentence."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from thoughts_backend import config, development_keys
from thoughts_backend.app import create_app
from thoughts_backend.config import ConfigError, gather_settings
from thoughts_backend.token_keys import JwksFile, RemoteJwks, StaticKeys
from thoughts_backend.token_validation import DEFAULT_RULES

from .identity_support import new_key, public_jwk
from .support import pem_public


def token_config(tmp_path, values: dict):
    return config.token_config(gather_settings({}, {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", **values}))


@pytest.fixture
def jwks_file(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(new_key(), kid="k1")]}))
    return str(path)


ISSUER = "https://idp.example/realms/main"


@pytest.mark.parametrize(
    "values, sentence",
    [
        (
            {"TOKEN_ALGORITHMS": "HS256"},
            "TOKEN_ALGORITHMS may not list HS256: tokens must be signed with a private key",
        ),
        ({"TOKEN_ALGORITHMS": "RS256,none"}, "TOKEN_ALGORITHMS may not list none"),
        ({"TOKEN_ALGORITHMS": "RS257"}, "TOKEN_ALGORITHMS lists 'RS257'; choose from RS256, RS384"),
        ({"TOKEN_ALGORITHMS": " , "}, "TOKEN_ALGORITHMS is empty; choose from"),
        (
            {"TOKEN_USERNAME_CLAIM": "user name"},
            "TOKEN_USERNAME_CLAIM must name the claim that holds the user name",
        ),
        ({"TOKEN_USERNAME_CLAIM": "exp"}, "TOKEN_USERNAME_CLAIM must name the claim .* not 'exp'"),
        ({"TOKEN_ADMIN_SCOPE": "admin write"}, "TOKEN_ADMIN_SCOPE must be one scope name"),
        (
            {"TOKEN_AUDIENCE_CLAIM": "azp", "TOKEN_AUDIENCE": "api"},
            "TOKEN_AUDIENCE_CLAIM must be aud, or client_id for Amazon Cognito access tokens, not 'azp'",
        ),
        ({"TOKEN_AUDIENCE_CLAIM": "Client_ID", "TOKEN_AUDIENCE": "api"}, "not 'Client_ID'"),
        (
            {"TOKEN_AUDIENCE_CLAIM": "client_id"},
            "TOKEN_AUDIENCE_CLAIM=client_id needs TOKEN_AUDIENCE: set it to the app client id",
        ),
        ({"TOKEN_ADMIN_SCOPE": 'ad"min'}, "TOKEN_ADMIN_SCOPE must be one scope name"),
        (
            {"JWKS_URL": "https://idp.example/jwks"},
            "Keys from JWKS_URL need both TOKEN_ISSUER and TOKEN_AUDIENCE",
        ),
        (
            {"JWKS_URL": "https://idp.example/jwks", "TOKEN_ISSUER": ISSUER},
            "Keys from JWKS_URL need both TOKEN_ISSUER and TOKEN_AUDIENCE",
        ),
        ({"TOKEN_ISSUER": ISSUER}, r"Keys from TOKEN_ISSUER \(its discovery document\) need both"),
        (
            {"JWKS_URL": "http://idp.example/jwks", "TOKEN_ISSUER": ISSUER, "TOKEN_AUDIENCE": "api"},
            r"JWKS_URL must use https \(plain http is allowed only to a loopback address",
        ),
        (
            {"JWKS_URL": "file:///etc/passwd", "TOKEN_ISSUER": ISSUER, "TOKEN_AUDIENCE": "api"},
            "JWKS_URL must be an https:// URL, not 'file:///etc/passwd'",
        ),
        (
            {"JWKS_URL": "https://u:p@idp.example/jwks", "TOKEN_ISSUER": ISSUER, "TOKEN_AUDIENCE": "api"},
            "JWKS_URL must not carry a user name or password",
        ),
        ({"TOKEN_ISSUER": "idp.example", "TOKEN_AUDIENCE": "api"}, "TOKEN_ISSUER must be an https:// URL"),
        (
            {"TOKEN_ISSUER": "http://10.0.0.5/realms/main", "TOKEN_AUDIENCE": "api"},
            "TOKEN_ISSUER must use https",
        ),
        (
            {
                "JWKS_URL": "https://idp.example/jwks",
                "TOKEN_ISSUER": ISSUER,
                "TOKEN_AUDIENCE": "api",
                "JWKS_REFRESH_SECONDS": "1",
            },
            "JWKS_REFRESH_SECONDS must be at least 5 and at most 86400, not 1",
        ),
        (
            {
                "JWKS_URL": "https://idp.example/jwks",
                "TOKEN_ISSUER": ISSUER,
                "TOKEN_AUDIENCE": "api",
                "JWKS_REFRESH_SECONDS": "hourly",
            },
            "JWKS_REFRESH_SECONDS must be a whole number, not 'hourly'",
        ),
    ],
)
def test_bad_token_settings_stop_the_start(tmp_path, public_pem, values, sentence):
    with pytest.raises(ConfigError, match=sentence):
        remote = "JWKS_URL" in values or "TOKEN_ISSUER" in values
        token_config(tmp_path, {**({} if remote else {"PUBLIC_KEY": public_pem}), **values})


def test_two_key_sources_are_refused(tmp_path, public_pem, jwks_file):
    cases = [
        ({"PUBLIC_KEY": public_pem, "JWKS_FILE": jwks_file}, "PUBLIC_KEY and JWKS_FILE"),
        ({"JWKS_FILE": jwks_file, "JWKS_URL": "https://idp.example/jwks"}, "JWKS_FILE and JWKS_URL"),
        (
            {"PUBLIC_KEY_FILE": "x.pem", "JWKS_URL": "https://idp.example/jwks"},
            "PUBLIC_KEY_FILE and JWKS_URL",
        ),
    ]
    for values, names in cases:
        with pytest.raises(ConfigError, match=f"^Set only one source of token keys, not {names}$"):
            token_config(tmp_path, {"TOKEN_ISSUER": ISSUER, "TOKEN_AUDIENCE": "api", **values})


def test_no_key_source_says_every_way_to_give_one(tmp_path, monkeypatch):
    monkeypatch.setattr(development_keys, "KEYS_DIR", tmp_path / "absent")
    with pytest.raises(
        ConfigError, match=r"No public key to validate tokens: .*JWKS_FILE, JWKS_URL, or TOKEN_ISSUER"
    ):
        token_config(tmp_path, {})


@pytest.mark.parametrize(
    "document, sentence",
    [
        ("not json", "is not JSON"),
        ('{"kid": "k1"}', 'is not a JWK Set: expected a JSON object with a "keys" array'),
        ('{"keys": []}', r"has no signing key usable with TOKEN_ALGORITHMS \(RS256\)"),
        ('{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "enc"}]}', "has no signing key usable"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "holds private or symmetric key material"),
    ],
    ids=["not-json", "not-a-set", "empty", "encryption-only", "symmetric"],
)
def test_bad_jwks_files_stop_the_start(tmp_path, document, sentence):
    path = tmp_path / "jwks.json"
    path.write_text(document)
    with pytest.raises(ConfigError, match=f"^JWKS_FILE \\({path}\\) {sentence}"):
        token_config(tmp_path, {"JWKS_FILE": str(path)})


def test_a_jwks_file_with_a_private_key_or_absent_is_refused(tmp_path):
    key = new_key()
    private = public_jwk(key, kid="k1", d="AQAB")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [private]}))
    with pytest.raises(
        ConfigError, match="holds private or symmetric key material; publish only the public keys"
    ):
        token_config(tmp_path, {"JWKS_FILE": str(path)})
    with pytest.raises(ConfigError, match=r"^Cannot read JWKS_FILE .*: No such file or directory$"):
        token_config(tmp_path, {"JWKS_FILE": str(tmp_path / "absent.json")})


def test_a_pem_key_of_another_type_than_the_algorithms_is_refused(tmp_path):
    ec_pem = pem_public(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(
        ConfigError, match=r"must be an RSA public key for TOKEN_ALGORITHMS \(RS256\); it is a EC"
    ):
        token_config(tmp_path, {"PUBLIC_KEY": ec_pem})
    with pytest.raises(
        ConfigError, match=r"must be a public key for TOKEN_ALGORITHMS \(ES384\); it is a EC secp256r1"
    ):
        token_config(tmp_path, {"PUBLIC_KEY": ec_pem, "TOKEN_ALGORITHMS": "ES384"})
    assert isinstance(
        token_config(tmp_path, {"PUBLIC_KEY": ec_pem, "TOKEN_ALGORITHMS": "ES256"})["TOKEN_KEYS"], StaticKeys
    )


def test_good_settings_choose_the_source_and_rules(tmp_path, public_pem, jwks_file):
    default = token_config(tmp_path, {"PUBLIC_KEY": public_pem})
    assert isinstance(default["TOKEN_KEYS"], StaticKeys) and default["TOKEN_RULES"] is DEFAULT_RULES
    assert [key.key.key_size for key in default["TOKEN_KEYS"].current().keys] == [2048]

    from_file = token_config(tmp_path, {"JWKS_FILE": jwks_file, "TOKEN_ISSUER": ISSUER})
    assert isinstance(from_file["TOKEN_KEYS"], JwksFile) and from_file["TOKEN_RULES"].issuer == ISSUER

    discovered = token_config(
        tmp_path,
        {
            "TOKEN_ISSUER": ISSUER,
            "TOKEN_AUDIENCE": "thoughts",
            "TOKEN_USERNAME_CLAIM": "preferred_username",
            "TOKEN_ADMIN_SCOPE": "thoughts:admin",
            "TOKEN_ALGORITHMS": "RS256, PS256 ES256",
        },
    )
    assert isinstance(discovered["TOKEN_KEYS"], RemoteJwks) and discovered["TOKEN_KEYS"].issuer == ISSUER
    rules = discovered["TOKEN_RULES"]
    assert (rules.audience, rules.username_claim, rules.admin_scope) == (
        "thoughts",
        "preferred_username",
        "thoughts:admin",
    )
    assert rules.algorithms == ("RS256", "PS256", "ES256")
    assert rules.audience_claim == "aud"

    cognito_issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example"
    cognito = token_config(
        tmp_path,
        {
            "TOKEN_ISSUER": cognito_issuer,
            "TOKEN_AUDIENCE": "1example23456789",
            "TOKEN_AUDIENCE_CLAIM": "client_id",
        },
    )
    assert cognito["TOKEN_KEYS"].issuer == cognito_issuer
    assert (cognito["TOKEN_RULES"].audience, cognito["TOKEN_RULES"].audience_claim) == (
        "1example23456789",
        "client_id",
    )

    loopback = token_config(
        tmp_path, {"JWKS_URL": "http://127.0.0.1:9/jwks", "TOKEN_ISSUER": ISSUER, "TOKEN_AUDIENCE": "api"}
    )
    assert loopback["TOKEN_KEYS"].jwks_url == "http://127.0.0.1:9/jwks"


def test_an_unreachable_identity_provider_does_not_stop_the_start(tmp_path):
    """The keys come later: /readyz says so (test_identity_provider_http.py serves it for real)."""
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
            "JWKS_URL": "http://127.0.0.1:9/jwks",  # the discard port: nothing listens
            "TOKEN_ISSUER": ISSUER,
            "TOKEN_AUDIENCE": "api",
        }
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["message"].startswith(
        "No token keys are loaded yet from JWKS_URL (http://127.0.0.1:9/jwks)"
    )
    assert app.test_client().get("/healthz").status_code == 200
