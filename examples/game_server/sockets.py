"""TCP connections read and written straight on their non-blocking sockets, on both backends.

anyio's asyncio stream reads through a transport that starts reading as soon as a connection is
accepted, and pauses only when a ``receive()`` finds nothing queued: a peer that keeps sending while
the server is busy (pipelining requests it never reads the answers of) is read into memory without
bound. ``bench/soak.py`` found it: hostile peers of that kind took the game server from 72 MB to
184 MB in 90 s on asyncio, not on trio (issue 17). Here the kernel holds what the server has not
read yet, TCP's window then stops the peer, and memory stays flat on both backends.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream, SocketAttribute

__all__ = ["RawSocketStream", "accept"]


class RawSocketStream(ByteStream):
    """A connected socket as an anyio byte stream; ``receive`` takes from the kernel only what it returns."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                data = self._sock.recv(max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            await anyio.lowlevel.checkpoint()  # data ready at once: still let the others run
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self._sock)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            view = view[sent:]
        await anyio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            anyio.notify_closing(self._sock)  # a task waiting to read or write gets ClosedResourceError
            self._sock.close()
        await anyio.lowlevel.checkpoint()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            SocketAttribute.raw_socket: lambda: self._sock,
            SocketAttribute.remote_address: self._sock.getpeername,
            SocketAttribute.local_address: self._sock.getsockname,
        }


async def accept(listening: socket.socket) -> RawSocketStream:
    """The next connection on the (non-blocking) ``listening`` socket.

    Raises:
        OSError: as ``socket.accept()`` (EMFILE, ECONNABORTED...): the caller decides.
    """
    while True:
        try:
            sock, _ = listening.accept()
        except BlockingIOError:
            await anyio.wait_readable(listening)
            continue
        try:
            return RawSocketStream(sock)
        except OSError:
            sock.close()  # reset between accept() and setsockopt(): the next one
            continue
