"""create-token for a service that checks issuer, audience and a configured user-name claim."""

from click.testing import CliRunner

from thoughts_backend import config
from thoughts_backend.cli import cli
from thoughts_backend.config import gather_settings
from thoughts_backend.token_validation import decode_token


def test_create_token_writes_the_configured_issuer_audience_claim_and_admin_scope(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["generate-keys", "--dir", str(tmp_path)]).exit_code == 0
    settings = {
        "PUBLIC_KEY_FILE": str(tmp_path / "public.pem"),
        "TOKEN_ISSUER": "https://idp.example/realms/main",
        "TOKEN_AUDIENCE": "thoughts",
        "TOKEN_USERNAME_CLAIM": "preferred_username",
        "TOKEN_ADMIN_SCOPE": "thoughts:admin",
    }
    result = runner.invoke(
        cli,
        ["create-token", "carol", "--admin", "--private-key-file", str(tmp_path / "private.pem")],
        env={name: value for name, value in settings.items() if name.startswith("TOKEN_")},
    )
    assert result.exit_code == 0, result.output
    token_config = config.token_config(gather_settings({}, settings))
    claims = decode_token(
        result.stdout.strip(), token_config["TOKEN_KEYS"], rules=token_config["TOKEN_RULES"]
    )
    assert claims.username == "carol" and "thoughts:admin" in claims.scopes


def test_create_token_without_identity_settings_writes_neither_iss_nor_aud(tmp_path):
    import jwt

    runner = CliRunner()
    runner.invoke(cli, ["generate-keys", "--dir", str(tmp_path)])
    result = runner.invoke(
        cli,
        ["create-token", "dave", "--private-key-file", str(tmp_path / "private.pem")],
        env={"TOKEN_ISSUER": None, "TOKEN_AUDIENCE": None, "TOKEN_USERNAME_CLAIM": None},
    )
    payload = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert set(payload) == {"username", "iat", "exp"} and payload["username"] == "dave"


def test_create_token_writes_the_audience_as_client_id_for_cognito(tmp_path):
    import jwt

    runner = CliRunner()
    assert runner.invoke(cli, ["generate-keys", "--dir", str(tmp_path)]).exit_code == 0
    settings = {
        "PUBLIC_KEY_FILE": str(tmp_path / "public.pem"),
        "TOKEN_ISSUER": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example",
        "TOKEN_AUDIENCE": "1example23456789",
        "TOKEN_AUDIENCE_CLAIM": "client_id",
    }
    result = runner.invoke(
        cli,
        ["create-token", "erin", "--private-key-file", str(tmp_path / "private.pem")],
        env={
            **{name: value for name, value in settings.items() if name.startswith("TOKEN_")},
            "TOKEN_USERNAME_CLAIM": None,
        },
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["client_id"] == "1example23456789" and "aud" not in payload
    token_config = config.token_config(gather_settings({}, settings))
    assert (
        decode_token(token, token_config["TOKEN_KEYS"], rules=token_config["TOKEN_RULES"]).username == "erin"
    )
