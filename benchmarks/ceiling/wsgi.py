"""The ceiling: a WSGI app with no framework and no database, answering a small JSON list.

The benchmark serves it under the same uwsgi.ini as the service, unchanged: this directory
is given as CODE_DIR, so the ini's `module = wsgi:application` loads this file. The
service's requests per second are then a share of what uWSGI itself does on this machine.
"""

import json

BODY = json.dumps(
    [{"id": 1, "username": "alice", "text": "hello", "timestamp": "2024-01-01T00:00:00+00:00"}]
).encode()
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def application(_environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
