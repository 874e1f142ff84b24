"""Development key pairs and tokens, so a first-time user can call the `me` routes.

    python -m thoughts_backend generate-keys     # keys/private.pem + keys/public.pem
    python -m thoughts_backend create-token alice [--admin]

Both also run as `flask generate-keys` / `flask create-token` once the app can start
(cli.init_app adds them to the app's commands).
"""

import sys
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import development_keys


@click.command("generate-keys")
@click.option(
    "--dir",
    "keys_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=development_keys.KEYS_DIR,
    show_default=True,
)
@click.option("--if-missing", is_flag=True, help="Keep an existing pair instead of refusing to overwrite it.")
def generate_keys(keys_dir: Path, if_missing: bool):
    """Make an RSA key pair: the service needs public.pem; keep private.pem to mint tokens."""
    private_path, public_path = keys_dir / "private.pem", keys_dir / "public.pem"
    if if_missing and private_path.exists() and public_path.exists():
        click.echo(f"Keeping the key pair in {keys_dir}", err=True)
        return
    try:
        development_keys.write_pair(keys_dir)
    except FileExistsError:
        raise click.ClickException(
            f"{keys_dir} already holds a key; remove it first to make a new pair"
        ) from None
    click.echo(f"Wrote {private_path} (keep it secret) and {public_path} (give it to the service)", err=True)


@click.command("create-token")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Add the 'admin' scope, for the /admin/ routes.")
@click.option(
    "--expires-in", type=click.IntRange(1), default=3600, show_default=True, help="Lifetime in seconds."
)
@click.option(
    "--private-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=development_keys.KEYS_DIR / "private.pem",
    show_default=True,
    envvar="PRIVATE_KEY_FILE",
)
@click.option("--issuer", envvar="TOKEN_ISSUER", help="Write this `iss` (default: TOKEN_ISSUER, when set).")
@click.option(
    "--audience",
    envvar="TOKEN_AUDIENCE",
    help="Write this audience under --audience-claim (default: TOKEN_AUDIENCE, when set).",
)
@click.option(
    "--audience-claim",
    envvar="TOKEN_AUDIENCE_CLAIM",
    type=click.Choice(["aud", "client_id"]),
    default="aud",
    show_default=True,
    help="The claim --audience goes in (default: TOKEN_AUDIENCE_CLAIM, when set).",
)
@click.option(
    "--username-claim",
    envvar="TOKEN_USERNAME_CLAIM",
    default="username",
    show_default=True,
    help="The claim that holds USERNAME (default: TOKEN_USERNAME_CLAIM, when set).",
)
@click.option(
    "--admin-scope",
    envvar="TOKEN_ADMIN_SCOPE",
    default="admin",
    show_default=True,
    help="The scope --admin writes (default: TOKEN_ADMIN_SCOPE, when set).",
)
def create_token(
    username: str,
    admin: bool,
    expires_in: int,
    private_key_file: Path,
    issuer: str | None,
    audience: str | None,
    audience_claim: str,
    username_claim: str,
    admin_scope: str,
):
    """Print a signed token for USERNAME on standard output.

    With TOKEN_ISSUER and TOKEN_AUDIENCE set, as the service has them, the token carries
    them (the audience under TOKEN_AUDIENCE_CLAIM), so that a service checking issuer and
    audience accepts it.
    """
    # PyJWT is imported here, for this command only: generate-keys, which start_server.sh
    # runs when it must make a key pair, needs none of it.
    from .token_validation import encode_token

    try:
        key = serialization.load_pem_private_key(private_key_file.read_bytes(), password=None)
    except FileNotFoundError:
        raise click.ClickException(
            f"No private key at {private_key_file}: run `python -m thoughts_backend generate-keys` "
            "or pass --private-key-file"
        ) from None
    except ValueError:
        raise click.ClickException(f"{private_key_file} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise click.ClickException(f"{private_key_file} is not an RSA private key")
    claims = {name: value for name, value in (("iss", issuer), (audience_claim, audience)) if value}
    click.echo(
        encode_token(
            username,
            key,
            admin=admin,
            expires_in=expires_in,
            username_claim=username_claim or "username",
            admin_scope=admin_scope or "admin",
            **claims,
        )
    )


@click.group()
def cli():
    """ThoughtsBackend key and token tools."""


cli.add_command(generate_keys)
cli.add_command(create_token)


def init_app(app) -> None:
    """The same commands under `flask` (FLASK_APP=wsgi)."""
    app.cli.add_command(generate_keys)
    app.cli.add_command(create_token)


def main() -> None:
    sys.exit(cli())
