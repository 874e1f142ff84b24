"""What a request may send: a request target, header fields and a chunked body, each limited.

uWSGI's HTTP router hands a request to a worker as one packet of at most 64 KiB (its length
is 16 bits): the request line and the header fields, with the query string in it twice
(REQUEST_URI and QUERY_STRING). A request that does not fit, the router drops by closing
the connection, without an answer; it has no 414 or 431 of its own. The limits below keep
every request within them well inside that packet, even with the longest target and the
most header fields at once, so that what the app refuses, it refuses with a JSON answer
(414, 431) for everything up to the router's hard maximum. uwsgi.ini lets the packet reach
the workers whole: buffer-size 65535, max-vars for the most fields a packet can hold.

Chunked bodies (Transfer-Encoding: chunked, no Content-Length): the router passes them on
undecoded (http-chunked-input in uwsgi.ini) and the app reads them through uWSGI, up to
MAX_CONTENT_LENGTH like any body (413 above).
"""

import io
import time

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import (
    BadRequest,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    RequestURITooLarge,
)

# The path and query string, as sent. Search words are at most 250 characters.
MAX_REQUEST_TARGET_BYTES = 8 * 1024
# Header fields, each counted as sent ("Name: value" and its line end), as nginx's and
# Apache's defaults allow about: long cookies and tokens fit.
MAX_HEADER_FIELDS = 100
MAX_HEADER_BYTES = 32 * 1024
# The header fields that reach the environ without the HTTP_ prefix.
FIELDS_WITHOUT_PREFIX = ("CONTENT_TYPE", "CONTENT_LENGTH")
# Set in the environ once the body needs no more reading: a chunked body read to its end,
# or a body whose reading failed (cut off, stalled), which is not waited for a second time.
BODY_DONE = "thoughts_backend.body_done"

# An error answered before the body was read (413, 401) must still reach the client. A
# worker that closes the connection with the rest of the body unread makes its router fail
# (uWSGI's fastrouter, writing the buffered body to it, gets "broken pipe" and drops the
# answer; without the fastrouter, the kernel reset the client's connection instead). So
# the rest is read and dropped first. A body with a Content-Length has already been
# received whole by the fastrouter (uwsgi.ini): it is read at the speed of a local socket
# (measured on a shared machine: 64 MiB in 35-165 ms of the worker, 256 MiB in 0.1-0.4 s),
# up to this much and for at most this long.
MAX_DISCARDED_BODY_BYTES = 256 * 1024 * 1024
MAX_DISCARD_SECONDS = 2.0
# A chunked body is not buffered by the fastrouter and streams from the client as it
# comes: less of it is waited for.
MAX_DISCARDED_CHUNKED_BYTES = 1024 * 1024


def init_app(app: Flask) -> None:
    """The limits, checked before any view; the unread rest of a refused body, read after."""
    app.before_request(enforce_request_limits)
    app.after_request(discard_unread_body)


def stop_reading_body(environ: dict) -> None:
    """The body needs no more reading (read whole, cut off or stalled)."""
    environ[BODY_DONE] = True


def request_target_length(environ: dict) -> int:
    if "REQUEST_URI" in environ:
        return len(environ["REQUEST_URI"])
    query = environ.get("QUERY_STRING", "")
    return len(environ.get("PATH_INFO", "")) + (len(query) + 1 if query else 0)


def header_fields_size(environ: dict) -> tuple[int, int]:
    """(fields, bytes) of the request's header fields, as sent: "Name: value\r\n" is the
    name and value and 4 bytes, and the environ's key is the name and "HTTP_" (5 bytes)."""
    sizes = [len(key) - 1 + len(value) for key, value in environ.items() if key[:5] == "HTTP_"]
    sizes.extend(len(environ[key]) + len(key) + 4 for key in FIELDS_WITHOUT_PREFIX if key in environ)
    return len(sizes), sum(sizes)


def enforce_request_limits() -> None:
    """Before any view: 414, 431, then a chunked body read (413 past MAX_CONTENT_LENGTH)."""
    environ = request.environ
    refuse_oversized_head(environ)
    if "HTTP_TRANSFER_ENCODING" in environ:
        read_chunked_body(environ)


def refuse_oversized_head(environ: dict) -> None:
    target_length = request_target_length(environ)
    if target_length > MAX_REQUEST_TARGET_BYTES:
        raise RequestURITooLarge(
            f"The request target (path and query string) is {target_length} bytes; the limit is "
            f"{MAX_REQUEST_TARGET_BYTES}. Shorten the query: search words are at most 250 characters."
        )
    fields, size = header_fields_size(environ)
    if fields > MAX_HEADER_FIELDS or size > MAX_HEADER_BYTES:
        raise RequestHeaderFieldsTooLarge(
            f"The request has {fields} header fields, {size} bytes in all; the limits are "
            f"{MAX_HEADER_FIELDS} fields and {MAX_HEADER_BYTES} bytes. Send fewer or shorter headers "
            "(cookies, tokens)."
        )


def read_chunked_body(environ: dict) -> None:
    """A chunked body, read whole (it is at most MAX_CONTENT_LENGTH) and handed to Flask as
    an ordinary one, with its Content-Length: 413 past the limit, 400 if malformed."""
    encoding = environ["HTTP_TRANSFER_ENCODING"]
    if encoding.strip().lower() != "chunked":
        raise BadRequest(f"Transfer-Encoding '{encoding}' is not supported: send the body as is, or chunked")
    if "CONTENT_LENGTH" in environ:
        raise BadRequest("Content-Length and Transfer-Encoding: chunked together: send only one")
    if "uwsgi.version" not in environ:
        return  # another server (Flask's, the tests' client) decodes chunks itself
    import uwsgi  # only importable in a uWSGI worker

    limit = current_app.config["MAX_CONTENT_LENGTH"]
    body = bytearray()
    try:
        while chunk := uwsgi.chunked_read():
            body += chunk
            if len(body) > limit:
                raise RequestEntityTooLarge(
                    f"The body is over {limit} bytes (MAX_CONTENT_LENGTH); send a smaller one"
                )
    except OSError as error:
        stop_reading_body(environ)  # cut off or stalled: not to be waited for again
        raise BadRequest("The chunked body is malformed, was cut off or stopped arriving") from error
    # From here on, the body is an ordinary one (werkzeug ignores Content-Length next to
    # Transfer-Encoding: chunked, and would read nothing).
    stop_reading_body(environ)
    del environ["HTTP_TRANSFER_ENCODING"]
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def discard_unread_chunks(max_bytes: int) -> None:
    """After an error answered before a chunked body was read to its end: read the rest and
    drop it, up to max_bytes, so that the client gets the answer rather than a reset. The
    caller has checked BODY_DONE."""
    environ = request.environ
    if "uwsgi.version" not in environ:
        return
    if environ.get("HTTP_TRANSFER_ENCODING", "").strip().lower() != "chunked" or "CONTENT_LENGTH" in environ:
        return
    import uwsgi

    discarded = 0
    try:
        while discarded <= max_bytes and (chunk := uwsgi.chunked_read()):
            discarded += len(chunk)
    except OSError:
        pass  # cut off or malformed: nothing more to read


def discard_unread_body(response: Response) -> Response:
    """After an error answer: the rest of the body, read and dropped within the bounds above."""
    if response.status_code < 400 or request.environ.get(BODY_DONE):
        return response
    discard_unread_chunks(MAX_DISCARDED_CHUNKED_BYTES)
    if request.content_length:
        body = request.environ["wsgi.input"]
        remaining = min(request.content_length, MAX_DISCARDED_BODY_BYTES)
        deadline = time.monotonic() + MAX_DISCARD_SECONDS
        try:
            while remaining > 0 and time.monotonic() < deadline:
                chunk = body.read(min(remaining, 1024 * 1024))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass  # the client stopped sending or went away: the answer goes out as it is
    return response
