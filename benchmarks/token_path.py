"""CPU per call of the token check alone (auth.caller_claims), for before/after comparisons.

    .venv/bin/python benchmarks/token_path.py [--code DIR] [--calls 20000]

A request context with one bearer token, checked again and again: the token cache's path
(a token seen before, as a client sends it again and again), and the full verification
(the cache emptied before each call). process_time, best of 7 rounds, so the load of other
processes on the machine counts little. Point --code at another checkout's ThoughtsBackend/
(`git archive <commit> ThoughtsBackend | tar -x -C /tmp/old`) to compare.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def best_of(rounds: int, calls: int, function, before_each=None) -> float:
    """The fastest round's CPU microseconds per call."""
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            if before_each:
                before_each()
            function()
        results.append((time.process_time() - started) / calls * 1e6)
    return min(results)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, default=HERE.parent / "ThoughtsBackend")
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from thoughts_backend.app import create_app
    from thoughts_backend.auth import caller_claims
    from thoughts_backend.token_validation import TOKEN_CACHE, encode_token

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with tempfile.TemporaryDirectory() as scratch:
        app = create_app({"DATABASE_URL": f"sqlite:///{scratch}/db.sqlite3", "PUBLIC_KEY": pem.decode()})
        token = encode_token("alice", key)
        with app.test_request_context(headers={"Authorization": f"Bearer {token}"}):
            caller_claims()
            cached = best_of(7, args.calls, caller_claims)
            verified = best_of(7, max(args.calls // 20, 50), caller_claims, TOKEN_CACHE._entries.clear)
    print(f"{args.code}: CPU microseconds per token check: cached {cached:.2f}, verified {verified:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
