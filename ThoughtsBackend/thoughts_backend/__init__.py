"""ThoughtsBackend: the REST backend of a micro-blog of thoughts.

The app comes from the factory in thoughts_backend.app (`create_app`; wsgi.py serves it).
This package imports nothing by itself, so that what needs only a part of it
(`python -m thoughts_backend generate-keys`, which start_server.sh runs when it must make a
key pair) does not import Flask, flask-restx and SQLAlchemy.
"""
