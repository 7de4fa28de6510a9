"""A raw HTTP/2 client for the attack and log tests: frames (hyperframe) and HPACK (hpack).

A gRPC client library behaves; an attacker does not. This client sends what the attack
tests need and nothing more: it advertises any flow-control window (zero included), opens
streams and never sends their message, ignores the server's MAX_CONCURRENT_STREAMS,
resets streams the moment it opens them, floods PINGs and sends header values (control
characters) that gRPC libraries refuse to send. It speaks plaintext HTTP/2 with
prior knowledge, as gRPC does without TLS, and only to loopback.

It is polite where politeness costs the attack nothing: it acknowledges the server's
SETTINGS and PINGs and keeps within the server's flow-control window for what it sends.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

LOOPBACK = "127.0.0.1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: RST_STREAM / GOAWAY error codes (RFC 9113, section 7).
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB
#: What a peer may send in one frame until it says otherwise (SETTINGS_MAX_FRAME_SIZE).
DEFAULT_MAX_FRAME = 16_384
DEFAULT_WINDOW = 65_535

Headers = Sequence[tuple[str, str]]


def grpc_message(payload: bytes, *, compressed: bool = False) -> bytes:
    """``payload`` with gRPC's 5-byte prefix: the compressed flag and the length."""
    return struct.pack(">BI", int(compressed), len(payload)) + payload


def grpc_request_headers(path: str, port: int, extra: Headers = ()) -> list[tuple[str, str]]:
    """The headers of a gRPC call as a conforming client sends them (pseudo-headers first)."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"{LOOPBACK}:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


@dataclass
class Stream:
    """What the server sent on one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    #: The server's RST_STREAM error code, if it reset the stream.
    reset: int | None = None
    #: True once the server has closed its side (END_STREAM) or reset the stream.
    ended: bool = False

    @property
    def grpc_status(self) -> int | None:
        """grpc-status from the trailers (or from a trailers-only answer's headers)."""
        value = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if value is None else int(value)

    @property
    def code(self) -> str:
        """The gRPC status code's name (``OK``, ``INTERNAL``, ...), or ``no status``."""
        status = self.grpc_status
        if status is None:
            return "no status"
        return next((c.name for c in grpc.StatusCode if c.value[0] == status), str(status))

    def messages(self) -> list[bytes]:
        """The length-prefixed messages in the stream's DATA."""
        found, offset = [], 0
        while offset + 5 <= len(self.data):
            _, length = struct.unpack_from(">BI", self.data, offset)
            found.append(bytes(self.data[offset + 5 : offset + 5 + length]))
            offset += 5 + length
        return found


class Connection:
    """One client connection. Send with the methods below; :meth:`receive` reads replies."""

    def __init__(self, sock: socket.socket, port: int, *, initial_window: int, decode: bool):
        self.sock = sock
        self.port = port
        #: The window this client advertised: 0 means the server may send no DATA at all.
        self.initial_window = initial_window
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        #: Decode the server's header blocks (off for floods that only watch for GOAWAY).
        self.decode = decode
        self.streams: dict[int, Stream] = {}
        self.peer_settings: dict[int, int] = {}
        self.got_settings = False
        #: (last_stream_id, error_code, debug data) of the server's GOAWAY, if any.
        self.goaway: tuple[int, int, bytes] | None = None
        self.closed = False
        self.next_stream_id = 1
        self.send_window = DEFAULT_WINDOW
        self._stream_windows: dict[int, int] = {}
        self._buffer = bytearray()
        self._header_block: tuple[int, bytearray, bool] | None = None

    # -- sending -----------------------------------------------------------------------

    def write(self, frames: Iterable[Frame | bytes]) -> None:
        """Serialize and send ``frames`` in one write (bytes are sent as they are)."""
        chunks = [f if isinstance(f, bytes) else f.serialize() for f in frames]
        self.sock.sendall(b"".join(chunks))

    def headers_frames(self, stream_id: int, headers: Headers, *, end_stream: bool) -> list[Frame]:
        """A HEADERS frame (plus CONTINUATIONs if the block is large) for ``headers``."""
        block = self.encoder.encode(list(headers))
        pieces = [block[i : i + DEFAULT_MAX_FRAME] for i in range(0, len(block), DEFAULT_MAX_FRAME)]
        first: Frame = HeadersFrame(stream_id, pieces[0] if pieces else b"")
        frames = [first, *(ContinuationFrame(stream_id, piece) for piece in pieces[1:])]
        frames[-1].flags.add("END_HEADERS")
        if end_stream:
            first.flags.add("END_STREAM")
        return frames

    def new_stream_id(self) -> int:
        """The next client stream id, whatever the server's MAX_CONCURRENT_STREAMS."""
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        self.streams[stream_id] = Stream()
        self._stream_windows[stream_id] = self.peer_settings.get(
            SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW
        )
        return stream_id

    def call_frames(
        self,
        path: str,
        message: bytes | None = None,
        *,
        extra_headers: Headers = (),
        end_stream: bool = True,
        reset: bool = False,
    ) -> tuple[int, list[Frame]]:
        """The frames of a call on a new stream, to :meth:`write`: HEADERS, then ``message``
        length-prefixed if given (closing our side when ``end_stream``), then RST_STREAM
        CANCEL if ``reset``. Its DATA is counted against the server's windows: the caller
        must know them to be open enough (see :meth:`window`)."""
        stream_id = self.new_stream_id()
        headers = grpc_request_headers(path, self.port, extra_headers)
        frames = self.headers_frames(stream_id, headers, end_stream=end_stream and message is None)
        if message is not None:
            frames += self.data_frames(stream_id, grpc_message(message), end_stream=end_stream)
        if reset:
            frames.append(RstStreamFrame(stream_id, error_code=CANCEL))
        return stream_id, frames

    def open_stream(
        self, path: str, extra_headers: Headers = (), *, end_stream: bool = False
    ) -> int:
        """Send a gRPC call's HEADERS on a new stream, whatever the server's stream limit."""
        stream_id, frames = self.call_frames(
            path, extra_headers=extra_headers, end_stream=end_stream
        )
        self.write(frames)
        return stream_id

    def data_frames(self, stream_id: int, data: bytes, *, end_stream: bool) -> list[Frame]:
        """``data`` in DATA frames as large as the server allows, counted against its windows."""
        limit = self.peer_settings.get(SettingsFrame.MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)
        pieces = [data[i : i + limit] for i in range(0, len(data), limit)] or [b""]
        self.send_window -= len(data)
        self._stream_windows[stream_id] = self._stream_windows.get(stream_id, 0) - len(data)
        frames: list[Frame] = [DataFrame(stream_id, piece) for piece in pieces]
        if end_stream:
            frames[-1].flags.add("END_STREAM")
        return frames

    def window(self, stream_id: int = 0) -> int:
        """How many bytes of DATA the server lets us send now (on ``stream_id``, if given)."""
        if stream_id == 0:
            return self.send_window
        return min(self.send_window, self._stream_windows.get(stream_id, 0))

    def wait_for_window(self, size: int, stream_id: int = 0, timeout: float = 5.0) -> None:
        """Read until the server's windows admit ``size`` bytes of DATA."""
        deadline = time.monotonic() + timeout
        while self.window(stream_id) < size and not self.closed:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server's window stayed below {size} bytes")
            self.receive(0.05)

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = True) -> None:
        """Send ``data`` as it is, once the server's windows admit it."""
        self.wait_for_window(len(data), stream_id)
        self.write(self.data_frames(stream_id, data, end_stream=end_stream))

    def send_message(self, stream_id: int, payload: bytes, *, end_stream: bool = True) -> None:
        """Send one length-prefixed gRPC message (and, by default, close our side)."""
        self.send_data(stream_id, grpc_message(payload), end_stream=end_stream)

    def call(
        self, path: str, body: bytes | None, *, headers: Headers = (), timeout: float = 5.0
    ) -> Stream:
        """One call on a new stream of this connection: HEADERS, then ``body`` as raw DATA
        (None: no DATA, END_STREAM on the HEADERS), then whatever the server answers within
        ``timeout``."""
        stream_id = self.open_stream(path, headers, end_stream=body is None)
        if body is not None:
            self.send_data(stream_id, body)
        return self.wait(stream_id, timeout)

    def ping(self, opaque: bytes = b"attacker") -> None:
        self.write([PingFrame(0, opaque_data=opaque)])

    # -- receiving ---------------------------------------------------------------------

    def receive(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for bytes from the server, then handle what came.

        Returns False when nothing came (or the server closed the connection)."""
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0))
        try:
            chunk = self.sock.recv(1 << 20)
        except (TimeoutError, BlockingIOError):
            return False
        except ConnectionError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self._buffer += chunk
        self._handle_buffer()
        return True

    def listen(self, seconds: float) -> None:
        """Handle whatever the server sends during the next ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self.receive(min(0.05, max(deadline - time.monotonic(), 0)))

    def drain(self) -> None:
        """Handle what the server has sent so far, without waiting."""
        while self.receive(0):
            pass

    def wait(self, stream_id: int, timeout: float) -> Stream:
        """Read until the server ends the stream, sends GOAWAY or closes; at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        stream = self.streams[stream_id]
        while not stream.ended and not self.closed and time.monotonic() < deadline:
            if self.goaway is not None and stream_id > self.goaway[0]:
                break  # the server will not process this stream
            self.receive(min(0.1, max(deadline - time.monotonic(), 0)))
        return stream

    def wait_for_settings(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.got_settings and not self.closed and time.monotonic() < deadline:
            self.receive(0.1)
        if not self.got_settings:
            raise TimeoutError(f"no SETTINGS from the server on port {self.port}")

    @property
    def max_concurrent_streams(self) -> int | None:
        """The server's advertised MAX_CONCURRENT_STREAMS (None: it advertised none)."""
        return self.peer_settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self.closed = True

    def _handle_buffer(self) -> None:
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                return
            body = bytes(self._buffer[9 : 9 + length])
            del self._buffer[: 9 + length]
            frame.parse_body(memoryview(body))
            self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        stream = self.streams.get(frame.stream_id)
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self._apply_settings(frame.settings)
                self.write([SettingsFrame(0, flags=["ACK"])])
        elif isinstance(frame, PingFrame):
            if "ACK" not in frame.flags:
                self.write([PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"])])
        elif isinstance(frame, WindowUpdateFrame):
            if frame.stream_id == 0:
                self.send_window += frame.window_increment
            elif frame.stream_id in self._stream_windows:
                self._stream_windows[frame.stream_id] += frame.window_increment
        elif isinstance(frame, GoAwayFrame):
            self.goaway = (frame.last_stream_id, frame.error_code, bytes(frame.additional_data))
        elif isinstance(frame, HeadersFrame | ContinuationFrame):
            self._collect_headers(frame)
        elif isinstance(frame, DataFrame):
            if stream is not None:
                stream.data += frame.data
                stream.ended = stream.ended or "END_STREAM" in frame.flags
            if self.initial_window > 0 and frame.flow_controlled_length:
                increment = frame.flow_controlled_length
                self.write(
                    [WindowUpdateFrame(0, increment), WindowUpdateFrame(frame.stream_id, increment)]
                )
        elif isinstance(frame, RstStreamFrame) and stream is not None:
            stream.reset = frame.error_code
            stream.ended = True

    def _apply_settings(self, settings: dict[int, int]) -> None:
        new_window = settings.get(SettingsFrame.INITIAL_WINDOW_SIZE)
        if new_window is not None:
            delta = new_window - self.peer_settings.get(
                SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW
            )
            for stream_id in self._stream_windows:
                self._stream_windows[stream_id] += delta
        self.peer_settings.update(settings)
        self.got_settings = True

    def _collect_headers(self, frame: HeadersFrame | ContinuationFrame) -> None:
        if isinstance(frame, HeadersFrame):
            self._header_block = (
                frame.stream_id,
                bytearray(frame.data),
                "END_STREAM" in frame.flags,
            )
        elif self._header_block is not None:
            self._header_block[1].extend(frame.data)
        if "END_HEADERS" not in frame.flags or self._header_block is None:
            return
        stream_id, block, end_stream = self._header_block
        self._header_block = None
        stream = self.streams.get(stream_id)
        if not self.decode or stream is None:
            return
        decoded = {str(name): str(value) for name, value in self.decoder.decode(bytes(block))}
        if stream.headers:
            stream.trailers.update(decoded)
        else:
            stream.headers.update(decoded)
        stream.ended = stream.ended or end_stream


def connect(port: int, *, initial_window: int = DEFAULT_WINDOW, decode: bool = True) -> Connection:
    """Open a connection and send the preface with ``initial_window`` as our stream window.

    Waits for the server's SETTINGS, so :attr:`Connection.max_concurrent_streams` is known.
    """
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connection = Connection(sock, port, initial_window=initial_window, decode=decode)
    settings = {SettingsFrame.INITIAL_WINDOW_SIZE: initial_window, SettingsFrame.ENABLE_PUSH: 0}
    connection.write([PREFACE, SettingsFrame(0, settings=settings)])
    connection.wait_for_settings()
    return connection


@contextlib.contextmanager
def connected(port: int, **options: int | bool) -> Iterator[Connection]:
    """:func:`connect` for a ``with`` block; the connection is closed at its end."""
    connection = connect(port, **options)  # type: ignore[arg-type]
    try:
        yield connection
    finally:
        connection.close()


def unary_call(
    port: int, path: str, body: bytes | None, *, headers: Headers = (), timeout: float = 5.0
) -> Stream:
    """One call on a fresh connection: HEADERS, then ``body`` as raw DATA (None: no DATA,
    END_STREAM on the HEADERS), then whatever the server answers within ``timeout``."""
    with connected(port) as connection:
        return connection.call(path, body, headers=headers, timeout=timeout)


@contextlib.contextmanager
def idle_connections(port: int, count: int, per_second: float) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections that never send a byte, opened at ``per_second``.

    Connecting is left to the kernel (non-blocking connects, SYNs retried as usual), so a
    server that accepts slowly or not at all slows nothing here. All are closed at the end.
    """
    sockets: list[socket.socket] = []
    started = time.monotonic()
    try:
        for number in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.setblocking(False)
            sock.connect_ex((LOOPBACK, port))
            pause = started + (number + 1) / per_second - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
