"""Readiness probe for the stack's Kafka broker, standard library only.

Sends one Metadata request (API key 3, version 4: Kafka 4 removed v0-v3) over a plain
socket and succeeds when the broker answers with at least one broker in the cluster.
scripts/stack runs this before any virtualenv exists, so it cannot use confluent-kafka.

Usage: python3 kafka_ready.py HOST PORT   (exit 0 = ready)
"""

from __future__ import annotations

import socket
import struct
import sys


def metadata_request(correlation_id: int) -> bytes:
    client_id = b"cdc-recon-stack"
    body = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i?", -1, False)  # all topics, no auto-creation
    return struct.pack(">i", len(body)) + body


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def broker_count(host: str, port: int, timeout: float = 2.0) -> int:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(metadata_request(7))
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        payload = read_exact(sock, size)
    correlation_id, _throttle, brokers = struct.unpack(">iii", payload[:12])
    if correlation_id != 7:
        raise ValueError(f"unexpected correlation id {correlation_id}")
    return int(brokers)


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        return 0 if broker_count(host, port) >= 1 else 1
    except (OSError, ValueError, struct.error):
        return 1


if __name__ == "__main__":
    sys.exit(main())
