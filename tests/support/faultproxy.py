"""A TCP proxy in front of a real server that injects real network faults, with nothing mocked:

- the first N connections are answered ``503 SlowDown`` (S3's throttling reply);
- every connection is cut once a byte budget has been forwarded (a link that dies mid-upload);
- the server goes away (:meth:`FaultProxy.go_away`, or at the first request for a key, ``away_at``): open
  connections are cut and new ones reset until :meth:`FaultProxy.come_back`;
- every request after the first N writes under a prefix is held unanswered (a client frozen at that exact point,
  to be killed there);
- every GET whose first line holds a pattern is delayed (a slow link, or a large object, fetched).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from .kube import free_port

_SLOW_DOWN_BODY = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    + f"Content-Length: {len(_SLOW_DOWN_BODY)}\r\n\r\n".encode()
    + _SLOW_DOWN_BODY
)


@dataclass
class FaultProxy:
    target_port: int
    throttle_first: int = 0  # connections answered 503 SlowDown before proxying normally
    cut_after_bytes: int | None = None  # upstream bytes after which every connection is reset
    port: int = field(default_factory=free_port)
    throttled: int = 0
    forwarded: int = 0
    requests: list[bytes] = field(default_factory=list)  # first line of every proxied request
    away: bool = False  # the server is away: connections are reset
    refused: int = 0  # connections reset while away
    hold_after_writes: int | None = None  # once this many PUT/POST under write_prefix went through, hold the rest
    write_prefix: bytes = b"/"
    writes: int = 0
    held: list[bytes] = field(default_factory=list)  # first line of every request held unanswered
    away_at: bytes | None = None  # go away (see go_away) on the first request whose first line holds this
    went_away_at: float | None = None  # time.monotonic() when away_at struck
    delay_gets: bytes | None = None  # GETs whose first line holds this are forwarded only after delay_s
    delay_s: float = 0.0
    delayed: list[bytes] = field(default_factory=list)  # first line of every GET delayed

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._release = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cut(self) -> bool:
        return self.cut_after_bytes is not None and self.forwarded >= self.cut_after_bytes

    def close(self) -> None:
        self._closed = True
        self._release.set()
        self._server.close()

    def go_away(self) -> None:
        """The server goes away: every open connection is cut and every new one reset, until :meth:`come_back`."""
        with self._lock:
            self.away = True
            doomed = list(self._open)
        for s in doomed:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads, which close it: a reset

    def come_back(self) -> None:
        with self._lock:
            self.away = False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            away = self.away
            self.refused += away
            throttle = not away and self.throttled < self.throttle_first
            if throttle:
                self.throttled += 1
        if away:
            _reset(client)
            return
        if throttle or self.cut:
            if throttle:
                client.recv(65536)
                client.sendall(SLOW_DOWN)
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                verdict = self._note(data) if count else "forward"
                if verdict == "delay":
                    time.sleep(self.delay_s)  # the fault: this GET reaches the server delay_s late
                    verdict = "forward"
                if verdict == "hold":
                    self._release.wait()  # never answered: the client waits until it is killed
                if verdict != "forward":
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with self._lock:
                self._open.discard(s)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _note(self, data: bytes) -> str:
        """Account for a chunk from the client and say what becomes of it: forward, hold, or cut."""
        line = data.split(b"\r\n", 1)[0] if data[:4] in (b"GET ", b"PUT ", b"POST", b"HEAD", b"DELE") else None
        with self._lock:
            self.forwarded += len(data)
            if line is not None and self.away_at is not None and self.away_at in line:
                self.away_at, self.went_away_at = None, time.monotonic()
                trigger = True
            else:
                trigger = False
            hold = line is not None and self.hold_after_writes is not None and self.writes >= self.hold_after_writes
            if hold:
                self.held.append(line)
            elif line is not None:
                self.requests.append(line)
                self.writes += line.startswith((b"PUT ", b"POST")) and self.write_prefix in line
        if trigger:
            self.go_away()
            return "cut"
        if not hold and line is not None and self._delays(line):
            return "delay"
        return "hold" if hold else "cut" if self.cut else "forward"

    def _delays(self, line: bytes) -> bool:
        if self.delay_gets is None or not line.startswith(b"GET ") or self.delay_gets not in line:
            return False
        with self._lock:
            self.delayed.append(line)
        return True


def _reset(s: socket.socket) -> None:
    """Close ``s`` with a TCP reset (SO_LINGER 0), as a server that went away does."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
