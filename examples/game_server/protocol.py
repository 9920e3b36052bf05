"""The wire format: one JSON object per line, UTF-8, each way (``nc 127.0.0.1 PORT`` speaks it).

Both directions are standard JSON (RFC 8259), which any language reads: ``NaN``, ``Infinity`` and
numbers that overflow a double are refused on the way in and never written on the way out, and
integers are kept to the range every JSON reader holds exactly (``MAX_SAFE_INTEGER``). Whatever a
peer sends, ``receive`` either returns an object or raises one of the errors it lists: a hostile
line costs its sender an error answer, never the server (issue 17).
"""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
from anyio.abc import ByteStream

__all__ = [
    "MAX_LINE",
    "MAX_SAFE_INTEGER",
    "JsonLines",
    "LineTimeout",
    "ProtocolError",
    "decode",
    "encode",
]

MAX_LINE = 64 * 1024
"""The longest line either side accepts, in bytes."""

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer magnitude a line may hold: what a double (JavaScript's number) keeps exactly."""

Message = dict[str, Any]

_CHUNK = 4096
# Bytes read at a time. Requests are small; a 64 KiB read buffer per receive, shrunk to the few
# bytes that came, fragments the C heap: RSS rose with the moves while live memory did not (soak).


class ProtocolError(Exception):
    """The peer sent a line that is not a JSON object (the connection can go on)."""


class LineTimeout(TimeoutError):
    """The peer sent nothing for ``idle_timeout``, or took longer than ``request_timeout`` for a line.

    Attributes:
        idle: True when no byte of a new line came (an idle peer), False for a line begun and not
            finished in time (a slow or stalled peer).
        seconds: the limit that ran out.
    """

    def __init__(self, *, idle: bool, seconds: float) -> None:
        what = "no request" if idle else "a request not finished"
        super().__init__(f"{what} in {seconds:g} s")
        self.idle = idle
        self.seconds = seconds


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not standard JSON; send finite numbers")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"the number {text[:40]} is out of range: send finite numbers")
    return value


def _safe_int(text: str) -> int:
    # Check the length before int(): a 100,000-digit literal costs quadratic time to convert.
    if len(text.lstrip("-")) > 16 or abs(value := int(text)) > MAX_SAFE_INTEGER:
        raise ProtocolError(
            f"the integer {text[:24]}{'...' if len(text) > 24 else ''} is out of range: integers are "
            f"at most {MAX_SAFE_INTEGER} in magnitude"
        )
    return value


def decode(line: bytes) -> Message:
    """The JSON object on ``line``.

    Raises:
        ProtocolError: the line is not UTF-8, not JSON, nested too deeply, holds a number out of
            range (see the module's docstring), or is not an object.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    if not text.strip():
        raise ProtocolError("empty line: send one JSON object per line")
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_safe_int
        )
    except RecursionError:
        raise ProtocolError("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int()'s own digit limit
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a JSON object, got {type(value).__name__}")
    return value


def encode(message: Message) -> bytes:
    """``message`` as one line of standard JSON (ASCII, so that no string can break the line).

    Raises:
        ValueError: the message holds NaN or an infinity (never written: not JSON).
        TypeError: the message holds something JSON has no form for.
    """
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class JsonLines:
    """A byte stream seen as a sequence of JSON objects, one per line.

    Sends are serialised by a lock, so that concurrent tasks (a background ``wait``) never interleave
    two messages on the wire.

    Args:
        stream: the connection.
        max_line: the longest line accepted, in bytes.
        idle_timeout: seconds ``receive`` waits for the first byte of a line.
        request_timeout: seconds from the first byte of a line to its end (a peer that sends a byte
            now and then cannot hold the connection with a line it never finishes).
        send_timeout: seconds a send may wait for the peer to read (a peer that never reads cannot
            pile answers up in the server).
    """

    def __init__(
        self,
        stream: ByteStream,
        *,
        max_line: int = MAX_LINE,
        idle_timeout: float = math.inf,
        request_timeout: float = math.inf,
        send_timeout: float = math.inf,
    ) -> None:
        self.stream = stream
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self._buffer = bytearray()
        self._searched = 0  # no newline in _buffer[:_searched]
        self._line_began = 0.0  # when the first byte of the partial line in _buffer arrived
        self._lock = anyio.Lock()
        self._closed = False

    async def receive(self) -> Message:
        """The next object.

        Raises:
            anyio.EndOfStream: the peer closed the connection (a partial last line is dropped).
            ProtocolError: the line is not a JSON object (see :func:`decode`).
            anyio.DelimiterNotFound: the line is longer than ``max_line``.
            LineTimeout: the peer was idle, or slow to finish its line.
            anyio.ClosedResourceError: ``aclose()`` was called (lines received but not yet
                returned are dropped: a pipelining peer's backlog ends with its connection).
        """
        return decode(await self._line())

    async def _line(self) -> bytes:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            end = self._buffer.find(b"\n", self._searched)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._searched = 0
                self._line_began = anyio.current_time()  # for the rest of the buffer, if any
                if len(line) > self.max_line:
                    raise anyio.DelimiterNotFound(self.max_line)
                return line
            if len(self._buffer) > self.max_line:
                raise anyio.DelimiterNotFound(self.max_line)
            self._searched = len(self._buffer)
            idle = not self._buffer
            if idle:
                limit, deadline = self.idle_timeout, anyio.current_time() + self.idle_timeout
            else:
                limit, deadline = self.request_timeout, self._line_began + self.request_timeout
            with anyio.move_on_at(deadline):
                chunk = await self.stream.receive(_CHUNK)
                if idle:
                    self._line_began = anyio.current_time()
                self._buffer += chunk
                continue
            raise LineTimeout(idle=idle, seconds=limit)

    async def send(self, message: Message) -> None:
        """Write ``message`` as one line.

        Raises:
            ValueError, TypeError: as :func:`encode` (nothing was written).
            TimeoutError: the peer did not read within ``send_timeout``; a part of the line may have
                been written, so the connection is of no further use.
            anyio.BrokenResourceError, anyio.ClosedResourceError: the connection is gone.
        """
        data = encode(message)
        with anyio.fail_after(self.send_timeout):
            async with self._lock:
                await self.stream.send(data)

    async def aclose(self) -> None:
        self._closed = True
        self._buffer.clear()
        await self.stream.aclose()
