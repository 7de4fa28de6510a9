"""Unary gRPC calls over a hand-written HTTP/2 connection, for header bytes that no gRPC
library sends: grpcio and grpc-js refuse control characters in metadata, an attacker's
client does not.

Only what a unary call needs: the connection preface, HPACK literal header fields (no
Huffman coding, no dynamic table), one DATA frame per request, and reading frames until
the server ends the stream. Responses are not decoded.
"""

from __future__ import annotations

import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def _integer(value: int, prefix_bits: int) -> bytes:
    """An HPACK integer (RFC 7541, 5.1) with an all-zero flag part."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    encoded = [limit]
    value -= limit
    while value >= 0x80:
        encoded.append(value % 0x80 + 0x80)
        value //= 0x80
    return bytes([*encoded, value])


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, no Huffman (RFC 7541, 6.2.2)."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    header = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)
    return header + payload


class RawGrpcConnection:
    """One HTTP/2 connection to a gRPC server on loopback; ``call()`` runs a unary call."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self._port = port
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._socket.sendall(PREFACE + _frame(SETTINGS, 0, 0))
        self._next_stream = 1
        self._buffer = b""

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> RawGrpcConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, path: bytes, message: bytes, headers: list[tuple[bytes, bytes]]) -> str:
        """Send one call; returns how the server ended it: "end_stream" (a gRPC status,
        whatever it is), "rst_stream", "goaway" or "closed"."""
        stream = self._next_stream
        self._next_stream += 2
        fields = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", f"127.0.0.1:{self._port}".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *headers,
        ]
        block = b"".join(_literal(name, value) for name, value in fields)
        body = b"\x00" + struct.pack(">I", len(message)) + message
        self._socket.sendall(
            _frame(HEADERS, END_HEADERS, stream, block) + _frame(DATA, END_STREAM, stream, body)
        )
        while True:
            frame = self._read_frame()
            if frame is None:
                return "closed"
            kind, flags, on_stream, payload = frame
            if kind == SETTINGS and not flags & ACK:
                self._socket.sendall(_frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self._socket.sendall(_frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                return "goaway"
            elif on_stream == stream and kind == RST_STREAM:
                return "rst_stream"
            elif on_stream == stream and kind in (HEADERS, DATA) and flags & END_STREAM:
                return "end_stream"

    def _read_frame(self) -> tuple[int, int, int, bytes] | None:
        while True:
            if len(self._buffer) >= 9:
                length = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) >= 9 + length:
                    kind, flags = self._buffer[3], self._buffer[4]
                    stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
                    payload = self._buffer[9 : 9 + length]
                    self._buffer = self._buffer[9 + length :]
                    return kind, flags, stream, payload
            chunk = self._socket.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
