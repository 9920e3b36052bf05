"""The rule every session id follows, checked in one place by every store and by the supervisor.

A session id is a key in every store (a SQL ``TEXT`` primary key, a dict key, a file name in exports)
and is shown to operators. So that an id accepted by one store is accepted by all of them, and
the same way:

* it is a ``str``, not empty;
* it is at most :data:`MAX_SESSION_ID_BYTES` bytes in UTF-8 (an index key, not a payload);
* it is valid Unicode: no lone surrogates (they cannot be encoded as UTF-8, which SQL text columns
  need), and no NUL character (C strings, and so many databases and tools, end there).

Other control characters are allowed: the command line escapes them when it prints an id.
"""

from __future__ import annotations

from typing import Final

from ._exceptions import InvalidSessionId

__all__ = ["MAX_SESSION_ID_BYTES", "check_session_id"]

MAX_SESSION_ID_BYTES: Final = 256
"""The longest session id, in bytes of its UTF-8 encoding."""


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if it follows the rule above.

    Every :class:`runtime.abc.EventStore` calls this in ``create`` and ``get``, and the session
    supervisor in ``start``, ``get`` and ``ref``, so a bad id fails the same way everywhere.

    Raises:
        InvalidSessionId: it is not a ``str``, is empty, is longer than
            :data:`MAX_SESSION_ID_BYTES` in UTF-8, or holds a NUL character or a lone surrogate.

    .. versionadded:: 0.2
    """
    if type(session_id) is not str:
        if not isinstance(session_id, str):
            raise InvalidSessionId(session_id, f"it is a {type(session_id).__name__}, not a str")
        session_id = str(session_id)  # a str subclass: keep plain text in the stores
    if not session_id:
        raise InvalidSessionId(session_id, "it is empty")
    try:
        size = len(session_id.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidSessionId(
            session_id, f"it holds a lone surrogate at index {exc.start}, which is not valid Unicode"
        ) from None
    if size > MAX_SESSION_ID_BYTES:
        raise InvalidSessionId(
            session_id, f"it is {size} bytes in UTF-8, more than the {MAX_SESSION_ID_BYTES} allowed"
        )
    if "\x00" in session_id:
        raise InvalidSessionId(session_id, f"it holds a NUL character at index {session_id.index(chr(0))}")
    return session_id
