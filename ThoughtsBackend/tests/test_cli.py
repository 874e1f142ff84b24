"""The key and token commands a first-time user runs."""

import os
import stat
import subprocess
import sys

from click.testing import CliRunner

from thoughts_backend.cli import cli
from thoughts_backend.config import gather_settings, load_public_key
from thoughts_backend.token_validation import decode_token

CODE_DIR = os.path.dirname(os.path.dirname(__file__))


def test_generate_keys_then_create_token(tmp_path):
    runner = CliRunner()
    keys = tmp_path / "keys"
    result = runner.invoke(cli, ["generate-keys", "--dir", str(keys)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((keys / "private.pem").stat().st_mode) == 0o600

    result = runner.invoke(cli, ["create-token", "alice", "--private-key-file", str(keys / "private.pem")])
    assert result.exit_code == 0, result.output
    public_key = load_public_key(gather_settings({}, {"PUBLIC_KEY_FILE": str(keys / "public.pem")}))
    claims = decode_token(result.stdout.strip(), public_key)
    assert claims.username == "alice"
    assert "admin" not in claims.scopes


def test_create_admin_token(tmp_path):
    runner = CliRunner()
    runner.invoke(cli, ["generate-keys", "--dir", str(tmp_path)])
    result = runner.invoke(
        cli, ["create-token", "root", "--admin", "--private-key-file", str(tmp_path / "private.pem")]
    )
    public_key = load_public_key(gather_settings({}, {"PUBLIC_KEY_FILE": str(tmp_path / "public.pem")}))
    assert decode_token(result.stdout.strip(), public_key).scopes == {"admin"}


def test_generate_keys_refuses_to_overwrite_but_if_missing_keeps(tmp_path):
    runner = CliRunner()
    runner.invoke(cli, ["generate-keys", "--dir", str(tmp_path)])
    before = (tmp_path / "public.pem").read_text()
    refused = runner.invoke(cli, ["generate-keys", "--dir", str(tmp_path)])
    assert refused.exit_code != 0
    assert "already holds a key" in refused.output
    kept = runner.invoke(cli, ["generate-keys", "--dir", str(tmp_path), "--if-missing"])
    assert kept.exit_code == 0
    assert (tmp_path / "public.pem").read_text() == before


def test_create_token_without_private_key_says_what_to_do(tmp_path):
    result = CliRunner().invoke(
        cli, ["create-token", "alice", "--private-key-file", str(tmp_path / "none.pem")]
    )
    assert result.exit_code != 0
    assert "generate-keys" in result.output


def test_flask_cli_has_create_token(tmp_path):
    """`flask create-token` (as in the README and `docker exec`) runs against the real app."""
    CliRunner().invoke(cli, ["generate-keys", "--dir", str(tmp_path)])
    env = {
        **os.environ,
        "FLASK_APP": "wsgi",
        "PUBLIC_KEY_FILE": str(tmp_path / "public.pem"),
        "PRIVATE_KEY_FILE": str(tmp_path / "private.pem"),
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "create-token", "bob"],
        cwd=CODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    public_key = load_public_key(gather_settings({}, {"PUBLIC_KEY_FILE": str(tmp_path / "public.pem")}))
    assert decode_token(result.stdout.strip(), public_key).username == "bob"
