"""A TCP proxy in front of a server (the database) that can fail it on the test's word."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class TcpProxy:
    """Forwards a local port to the database, in a mode the test sets for every
    connection, open or new:

    - pass (from ``start()``, and after ``restore()``): bytes flow both ways.
    - ``cut()``: every connection is dropped and new ones are refused (a partition, a
      database restart).
    - ``pause()``: bytes are held, unread, both ways; ``release()`` delivers them in order
      and passes again, losing nothing (a database process stopped, then resumed).
    - ``blackhole()``: what is sent is read and dropped and nothing ever answers; new
      connections are accepted too (a hung pooler or sidecar: the peer's kernel
      acknowledges every byte, so no TCP timeout fires). ``restore()`` closes these
      connections, which lost bytes, and passes again.
    - ``trickle(interval)``: one byte every ``interval`` seconds (a database that
      answers, far too slowly).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._changed = threading.Condition()  # guards the mode and the connections
        self._mode = "pass"
        self._interval = 0.0
        self._connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Close the listener (new connections are refused) and every open connection."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join()
        self._set_mode("pass")
        self._close_connections()

    def restore(self) -> None:
        """Pass bytes again: listen again after ``cut()``, drop blackholed connections."""
        if self._mode == "blackhole":
            self._close_connections()
        self._set_mode("pass")
        if self._listener is None:
            self.start()

    def pause(self) -> None:
        self._set_mode("pause")

    release = restore

    def blackhole(self) -> None:
        self._set_mode("blackhole")

    def trickle(self, interval: float) -> None:
        self._set_mode("trickle", interval)

    def _set_mode(self, mode: str, interval: float = 0.0) -> None:
        with self._changed:
            self._mode, self._interval = mode, interval
            self._changed.notify_all()

    def _close_connections(self) -> None:
        with self._changed:
            for sock in self._connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._changed:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(a, selectors.EVENT_READ, b)
            selector.register(b, selectors.EVENT_READ, a)
            while True:
                for key, _ in selector.select(timeout=0.5):
                    with self._changed:
                        while self._mode == "pause":
                            self._changed.wait()
                        mode, interval = self._mode, self._interval
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(1 if mode == "trickle" else 65536)
                    if not data:
                        return
                    if mode != "blackhole":
                        key.data.sendall(data)
                    time.sleep(interval)
        except (OSError, ValueError):
            return  # cut() or restore() closed the sockets
        finally:
            selector.close()
            for sock in (a, b):
                sock.close()
