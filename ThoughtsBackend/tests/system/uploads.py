"""Uploads to the served service: a thought of a given size, POSTed on a connection of its own.

Used by test_large_uploads.py and test_upload_buffer_full.py.
"""

import http.client
import json

MiB = 1024 * 1024


def post(service, token: str, body: bytes) -> tuple[int, dict] | str:
    """POST body as a thought: (status, JSON answer), or the name of the error the client
    got instead of an answer (a reset, a broken pipe, an empty reply)."""
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        connection.request("POST", "/api/me/thoughts/", body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    except (ConnectionError, http.client.HTTPException) as error:
        return type(error).__name__
    finally:
        connection.close()


def thought_of_size(size: int) -> bytes:
    return b'{"text": "' + b"x" * (size - 12) + b'"}'
