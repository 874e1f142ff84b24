"""Which requests waited, and when: each request's time to its answer, read from a packet capture.

    tcpdump -i lo -s 96 -w /tmp/capture.pcap "tcp port 18020" &    # while the load runs
    .venv/bin/python benchmarks/pauses.py /tmp/capture.pcap --port 18020 [--slower-than-ms 100]

wrk corrects its percentiles for coordinated omission: one pause of every client for 0.7 s
shows as a p99 of hundreds of ms for the whole run, just as many slow requests would. The
capture tells the two apart. Each TCP connection to --port is followed from its SYN (the
service closes every connection after its answer, so one connection is one request); its
time is from the client's first data byte to the server's first data byte. Prints how many
there were, their p50, p99 and maximum, and the slow ones by the tenth of a second of the
capture in which they were sent: a pause is many of them in one tenth.
docs/performance.md ("Where the tails come from") shows what it found.

Reads the classic pcap format (what tcpdump -w writes), Ethernet or Linux cooked frames,
IPv4.
"""

import argparse
import collections
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

PCAP_MICROSECONDS = 0xA1B2C3D4
PCAP_NANOSECONDS = 0xA1B23C4D
# The link types tcpdump writes for lo or any: the bytes before the IPv4 header.
LINK_HEADER_BYTES = {1: 14, 113: 16, 276: 20}
SYN, ACK = 0x02, 0x10


@dataclass(frozen=True)
class Segment:
    seconds: float
    source_port: int
    destination_port: int
    flags: int
    payload_bytes: int


@dataclass(frozen=True, order=True)
class Exchange:
    """One connection's request: when its first byte was sent, and how long until the answer's."""

    sent_at: float
    seconds: float


def segments(path: Path):
    """The TCP segments of an IPv4 capture, in the capture's order, read a frame at a time (a
    capture of a loaded minute is hundreds of MB)."""
    with path.open("rb") as capture:
        header = capture.read(24).ljust(24, b"\0")  # a short file: no magic, refused below
        magic = struct.unpack_from("<I", header, 0)[0]
        if magic not in (PCAP_MICROSECONDS, PCAP_NANOSECONDS):
            raise ValueError(f"{path} is not a little-endian pcap file (tcpdump -w writes one)")
        fraction = 1e-9 if magic == PCAP_NANOSECONDS else 1e-6
        link_type = struct.unpack_from("<I", header, 20)[0]
        if link_type not in LINK_HEADER_BYTES:
            raise ValueError(f"link type {link_type} is not one of {sorted(LINK_HEADER_BYTES)}")
        while len(record := capture.read(16)) == 16:
            whole, part, captured, _original = struct.unpack("<IIII", record)
            frame = capture.read(captured)
            yield from _tcp_segment(frame[LINK_HEADER_BYTES[link_type] :], whole + part * fraction)


def _tcp_segment(ip: bytes, seconds: float):
    """The segment an IPv4 packet carries, if it is TCP (nothing otherwise)."""
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:  # IPv4, TCP
        return
    ip_header = (ip[0] & 0x0F) * 4
    total_length = struct.unpack_from(">H", ip, 2)[0]
    tcp = ip[ip_header:]
    source, destination = struct.unpack_from(">HH", tcp, 0)
    tcp_header = (tcp[12] >> 4) * 4
    yield Segment(seconds, source, destination, tcp[13], total_length - ip_header - tcp_header)


def exchanges(captured, port: int) -> list[Exchange]:
    """Request-to-answer times of the connections to `port`, in the order they were sent.

    A connection is keyed by the client's port from its SYN on: a port that comes back in a
    later connection starts a new one."""
    open_connections: dict[int, dict] = {}
    finished: list[dict] = []
    for segment in captured:
        if segment.destination_port == port:
            client = segment.source_port
            if segment.flags & SYN and not segment.flags & ACK:
                if client in open_connections:
                    finished.append(open_connections[client])
                open_connections[client] = {}
            elif segment.payload_bytes and client in open_connections:
                open_connections[client].setdefault("request", segment.seconds)
        elif segment.source_port == port and segment.payload_bytes:
            connection = open_connections.get(segment.destination_port)
            if connection is not None and "request" in connection:
                connection.setdefault("answer", segment.seconds)
    finished.extend(open_connections.values())
    return sorted(
        Exchange(c["request"], c["answer"] - c["request"])
        for c in finished
        if "request" in c and "answer" in c
    )


def nearest_rank(sorted_values: list[float], share: float) -> float:
    """The percentile by nearest rank, as latency.summary takes its p99."""
    return sorted_values[max(0, math.ceil(share * len(sorted_values)) - 1)]


def report(found: list[Exchange], slower_than: float) -> str:
    if not found:
        return "no request with an answer in the capture"
    times = sorted(exchange.seconds for exchange in found)
    start = found[0].sent_at
    slow = [exchange for exchange in found if exchange.seconds > slower_than]
    by_tenth = collections.Counter(int((exchange.sent_at - start) * 10) / 10 for exchange in slow)
    lines = [
        f"{len(found)} requests: p50 {nearest_rank(times, 0.5) * 1000:.2f} ms, "
        f"p99 {nearest_rank(times, 0.99) * 1000:.2f} ms, max {times[-1] * 1000:.2f} ms",
        f"{len(slow)} slower than {slower_than * 1000:g} ms",
    ]
    lines += [f"  sent {tenth:.1f} s into the capture: {count}" for tenth, count in sorted(by_tenth.items())]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("capture", type=Path)
    parser.add_argument("--port", type=int, required=True, help="the server's port")
    parser.add_argument("--slower-than-ms", type=float, default=100.0)
    args = parser.parse_args()
    print(report(exchanges(segments(args.capture), args.port), args.slower_than_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
