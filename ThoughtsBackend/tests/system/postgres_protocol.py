"""A TCP relay in front of PostgreSQL that records what its clients send, message by message.

    with ProtocolRecorder("127.0.0.1", 5432) as recorder:
        url = ...port=recorder.port, sslmode=disable...
        ...
        recorder.exchanges()   # [Exchange(sql="SELECT ..."), ...] in the order sent

An *exchange* is what a client sends before it waits for the server to be ready again: a
simple Query ('Q'), or a run of extended-protocol messages (Parse, Bind, Describe, Execute)
ended by Sync ('S'). Each costs one round trip to the server. Its `sql` is the statement's
text: from the Query, from a Parse in the same run, or, for a statement prepared earlier
(psycopg prepares one after its fifth run), from the Parse that named it.

The connection must not be encrypted (sslmode=disable, gssencmode=disable): the relay reads
the messages in clear. Everything is passed on unchanged, both ways.
"""

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


@dataclass(frozen=True)
class Exchange:
    connection: int  # which client connection, numbered from 0 in the order accepted
    sql: str


class FrontendParser:
    """Splits one client's byte stream into messages; collects its exchanges."""

    def __init__(self, connection: int, record):
        self.connection = connection
        self.record = record
        self.buffer = b""
        self.started = False
        self.statements: dict[str, str] = {}  # prepared statement name -> its SQL
        self.pending_sql: str | None = None

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if not self.started:
                # Startup, SSL or cancel request: a length, then a code, no type byte.
                if len(self.buffer) < 8:
                    return
                (length,) = struct.unpack("!I", self.buffer[:4])
                if len(self.buffer) < length:
                    return
                (code,) = struct.unpack("!I", self.buffer[4:8])
                self.buffer = self.buffer[length:]
                if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
                    raise AssertionError("the client asked for encryption: connect with sslmode=disable")
                self.started = code != CANCEL_REQUEST_CODE
                continue
            if len(self.buffer) < 5:
                return
            kind = self.buffer[:1]
            (length,) = struct.unpack("!I", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                return
            body = self.buffer[5 : 1 + length]
            self.buffer = self.buffer[1 + length :]
            self.message(kind, body)

    def message(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            self.record(Exchange(self.connection, body.rstrip(b"\0").decode()))
        elif kind == b"P":  # Parse: statement name, SQL, parameter types
            name, sql = body.split(b"\0")[:2]
            self.statements[name.decode()] = sql.decode()
            self.pending_sql = sql.decode()
        elif kind == b"B" and self.pending_sql is None:  # Bind: portal, statement name, ...
            statement = body.split(b"\0")[1].decode()
            self.pending_sql = self.statements.get(statement, f"<prepared {statement}>")
        elif kind == b"C" and body[:1] == b"S":  # Close of a prepared statement
            self.statements.pop(body[1:].rstrip(b"\0").decode(), None)
        elif kind == b"S":
            self.record(Exchange(self.connection, self.pending_sql or ""))
            self.pending_sql = None


class ProtocolRecorder:
    """Listens on a free loopback port; relays each connection to `host`:`port`."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._connections = 0
        self._sockets: list[socket.socket] = []
        self._closed = False

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    def __enter__(self) -> "ProtocolRecorder":
        threading.Thread(target=self._accept, name="protocol-recorder", daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                number = self._connections
                self._connections += 1
                self._sockets += [client, server]
            parser = FrontendParser(number, self._record)
            threading.Thread(target=self._relay, args=(client, server, parser), daemon=True).start()
            threading.Thread(target=self._relay, args=(server, client, None), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, destination: socket.socket, parser: FrontendParser | None) -> None:
        try:
            while data := source.recv(65536):
                # Recorded before it is passed on: once the server has answered a message,
                # its exchange is in the record.
                if parser is not None:
                    parser.feed(data)
                destination.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, destination):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
