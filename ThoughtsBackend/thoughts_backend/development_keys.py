"""A development key pair: where `generate-keys` (cli.py) writes it, and where the service
finds its public key when no key source is set (config.py), so that `flask create-token`
works in a shell or `docker exec` beside a server that start_server.sh gave a generated key.

Light on purpose: start_server.sh runs generate-keys when it must make a pair, and that
should cost a key, not the app's imports (nor PyJWT's).
"""

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEYS_DIR = Path(__file__).resolve().parent.parent / "keys"
KEY_BITS = 3072


def public_key_file() -> Path | None:
    """The public key of the pair in KEYS_DIR, if there is one."""
    path = KEYS_DIR / "public.pem"
    return path if path.is_file() else None


def write_pair(keys_dir: Path) -> tuple[Path, Path]:
    """Make an RSA pair in keys_dir: (private.pem, readable by its owner only, and public.pem).

    Raises FileExistsError when either file exists: a pair is never overwritten.
    """
    private_path, public_path = keys_dir / "private.pem", keys_dir / "public.pem"
    if private_path.exists() or public_path.exists():
        raise FileExistsError(private_path if private_path.exists() else public_path)
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Only the owner may read the private key, from the moment it exists.
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as private_file:
        private_file.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path
