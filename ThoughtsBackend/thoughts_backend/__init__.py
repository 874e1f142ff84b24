"""ThoughtsBackend: the REST backend of a micro-blog of thoughts.

`create_app` (thoughts_backend.app) is imported when first asked for, so that what needs
only a part of the package (`python -m thoughts_backend generate-keys`, which start_server.sh
runs when it must make a key pair) does not import Flask, flask-restx and SQLAlchemy.
"""

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
