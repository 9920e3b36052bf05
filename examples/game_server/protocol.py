"""The wire format: one JSON object per line, UTF-8, each way (``nc 127.0.0.1 PORT`` speaks it)."""

from __future__ import annotations

import json
from typing import Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["MAX_LINE", "JsonLines", "ProtocolError"]

MAX_LINE = 64 * 1024
"""The longest line either side accepts, in bytes."""

Message = dict[str, Any]


class ProtocolError(Exception):
    """The peer sent a line that is not a JSON object (the connection can go on)."""


class JsonLines:
    """A byte stream seen as a sequence of JSON objects, one per line.

    Sends are serialised by a lock, so that concurrent tasks (a background ``wait``) never interleave
    two messages on the wire.
    """

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self._buffered = BufferedByteReceiveStream(stream)
        self._lock = anyio.Lock()

    async def receive(self) -> Message:
        """The next object.

        Raises:
            anyio.EndOfStream: the peer closed the connection (a partial last line is dropped).
            ProtocolError: the line is not a JSON object.
            anyio.DelimiterNotFound: the line is longer than ``MAX_LINE``.
        """
        try:
            line = await self._buffered.receive_until(b"\n", MAX_LINE)
        except anyio.IncompleteRead:
            raise anyio.EndOfStream from None
        line = line.strip()
        if not line:
            raise ProtocolError("empty line: send one JSON object per line")
        try:
            value = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ProtocolError(f"expected a JSON object, got {type(value).__name__}")
        return value

    async def send(self, message: Message) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        async with self._lock:
            await self.stream.send(data)

    async def aclose(self) -> None:
        await self.stream.aclose()
