"""A TCP relay that holds every chunk it forwards a fixed time, in each direction.

    python delay_relay.py LISTEN_HOST TARGET_HOST TARGET_PORT DELAY_MS

The latency group's stand-in for `tc netem` on a kernel built without it
(CONFIG_NET_SCH_NETEM): run in the database's network namespace, in front of PostgreSQL, it
delays what each side sends by DELAY_MS, as netem on each end of the link would. It listens
on a free port of LISTEN_HOST and prints that port on a line once it accepts connections.

Each direction of a connection is a reader thread and a writer thread: the reader stamps each
chunk with when it is due, the writer sleeps until then (time.sleep, finer than an event
loop's millisecond timeouts) and sends it, so the order is kept and the delay does not add
up along a stream. Nagle's algorithm is off on both sockets, as libpq has it on its own.
"""

import queue
import socket
import sys
import threading
import time

CHUNK_BYTES = 65536


def tuned(connection: socket.socket) -> socket.socket:
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def forward(source: socket.socket, destination: socket.socket, delay_seconds: float) -> None:
    """Copy `source` to `destination`, each chunk `delay_seconds` after it came; then shut
    `destination` for writing, so that the other end sees the close, late too."""
    due: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        try:
            while chunk := source.recv(CHUNK_BYTES):
                due.put((time.monotonic() + delay_seconds, chunk))
        except OSError:
            pass
        due.put((time.monotonic() + delay_seconds, b""))

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            when, chunk = due.get()
            wait = when - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not chunk:
                destination.shutdown(socket.SHUT_WR)
                return
            destination.sendall(chunk)
    except OSError:
        # The other side has gone: end this side's connection too.
        for end in (source, destination):
            end.close()


def relay(client: socket.socket, target: tuple[str, int], delay_seconds: float) -> None:
    try:
        server = tuned(socket.create_connection(target, timeout=10))
    except OSError:
        client.close()
        return
    server.settimeout(None)
    directions = [
        threading.Thread(target=forward, args=pair, daemon=True)
        for pair in ((client, server, delay_seconds), (server, client, delay_seconds))
    ]
    for direction in directions:
        direction.start()
    for direction in directions:
        direction.join()
    client.close()
    server.close()


def main() -> int:
    listen_host, target_host, target_port, delay_ms = sys.argv[1:]
    target = (target_host, int(target_port))
    delay_seconds = float(delay_ms) / 1000
    listener = socket.create_server((listen_host, 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _address = listener.accept()
        threading.Thread(target=relay, args=(tuned(client), target, delay_seconds), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
