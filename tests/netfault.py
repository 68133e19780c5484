"""Loopback TCP proxies that misbehave on demand: a dropped network or a flipped byte.

Used to interrupt or corrupt a real client's PATCH deterministically (no sleeps, no luck).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class LoopbackProxy:
    """Forwards 127.0.0.1:<port> to the target port; subclasses change the upstream leg."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            if self._refused(downstream):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._opened(downstream, upstream)
            threading.Thread(target=self._up, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, downstream), daemon=True).start()

    def _refused(self, downstream: socket.socket) -> bool:
        """Whether to close a new connection at once instead of forwarding it."""
        del downstream
        return False

    def _opened(self, downstream: socket.socket, upstream: socket.socket) -> None:
        """A connection is being forwarded."""

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        """Client -> server; plain forwarding unless overridden."""
        self._down(src, dst)

    def _down(self, src: socket.socket, dst: socket.socket) -> None:
        """Server -> client: plain forwarding."""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        close(src, dst)

    def close(self) -> None:
        self.listener.close()


class CuttingProxy(LoopbackProxy):
    """The first connection that has sent more than `cut_after` request bytes upstream is
    closed abruptly (both sides). Later connections pass through untouched, so the client can
    resume through the same address."""

    def __init__(self, target_port: int, cut_after: int):
        self.cut_after = cut_after
        self.cut_done = threading.Event()
        self._cutting = threading.Lock()
        super().__init__(target_port)

    def _take_the_cut(self) -> bool:
        """True for exactly one caller: connections opened before the cut (a browser's
        keep-alive pool) must not be cut too once they pass `cut_after`."""
        with self._cutting:
            if self.cut_done.is_set():
                return False
            self.cut_done.set()
            return True

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if sent + len(data) > self.cut_after and self._take_the_cut():
                    dst.sendall(data[: self.cut_after - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        close(src, dst)


class CorruptingProxy(LoopbackProxy):
    """Flips one body byte of the n-th PATCH request (counted over connections; tuspy opens
    one per request), as a flaky network would."""

    def __init__(self, target_port: int, nth_patch: int):
        self.nth_patch = nth_patch
        self.patches = 0
        self.corrupted = threading.Event()
        super().__init__(target_port)

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        seen = b""
        corrupt_at: int | None = None
        position = 0
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if position == 0 and data.startswith(b"PATCH"):
                    self.patches += 1
                    if self.patches == self.nth_patch:
                        seen = data
                if seen and corrupt_at is None and b"\r\n\r\n" in seen:
                    corrupt_at = seen.index(b"\r\n\r\n") + 4 + 1000
                if corrupt_at is not None and position <= corrupt_at < position + len(data):
                    index = corrupt_at - position
                    data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]
                    self.corrupted.set()
                    corrupt_at = -1
                position += len(data)
                dst.sendall(data)
        close(src, dst)


class SwitchableProxy(LoopbackProxy):
    """A service behind it that goes away and comes back: while `down()`, every connection
    (open or new) is closed at once, as when the service is unreachable; `up()` ends that."""

    def __init__(self, target_port: int):
        self.outage = threading.Event()
        self.open: set[socket.socket] = set()
        super().__init__(target_port)

    def _refused(self, downstream: socket.socket) -> bool:
        if self.outage.is_set():
            close(downstream)
            return True
        return False

    def _opened(self, downstream: socket.socket, upstream: socket.socket) -> None:
        self.open.update((downstream, upstream))

    def down(self) -> None:
        self.outage.set()
        for sock in list(self.open):
            close(sock)
        self.open.clear()

    def up(self) -> None:
        self.outage.clear()


def close(*socks: socket.socket) -> None:
    """Shut both directions down and close, ignoring sockets already gone."""
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
