"""How the ``sessionvisor`` command prints: times, JSON, tables and fields, with nothing a terminal
would run (escape sequences, bidi overrides) getting through."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence

from cattrs.preconf.json import make_converter

__all__ = [
    "compact",
    "field_lines",
    "iso_time",
    "pretty_state",
    "seconds",
    "table",
    "utc_time",
    "visible",
    "visible_json",
]

_converter = make_converter()


def utc_time(timestamp: float) -> str:
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso_time(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat().replace("+00:00", "Z")


def compact(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=repr)
    return visible_json(text)


def pretty_state(state: object) -> str:
    try:
        plain = _converter.unstructure(state)
        return visible_json(json.dumps(plain, ensure_ascii=False, indent=2, default=repr))
    except Exception:
        return visible(repr(state))


def visible(text: str) -> str:
    """``text`` with every character that is not printable escaped, as ``repr`` would.

    Ids, types, labels and messages come from the store, that is from whoever named the sessions:
    an escape sequence among them must not run in the terminal (recolour it, move the cursor, set
    its title), nor a line break forge a row of a table (issue 17). Control and format characters
    (C0, DEL, C1, bidi overrides), line and paragraph separators, non-ASCII spaces and lone
    surrogates come out as ``\\x1b``, ``\\n``, ``\\u202e``...
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in "\n\r\t":
        return repr(char)[1:-1]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible_json(text: str) -> str:
    """JSON text (one line, or indented) with what is not printable inside its strings escaped as JSON.

    ``json.dumps(ensure_ascii=False)`` escapes C0 controls only; DEL, C1 controls, bidi overrides and
    line separators would reach the terminal raw. Outside strings JSON has only printable ASCII and,
    indented, line breaks: those are kept.
    """
    if all(c.isprintable() or c == "\n" for c in text):
        return text
    out = []
    for c in text:
        if c.isprintable() or c == "\n":
            out.append(c)
        else:
            out.append(json.dumps(c))  # "\u009b", or a surrogate pair beyond the BMP
            out[-1] = out[-1][1:-1]
    return "".join(out)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(header), *([visible(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def field_lines(pairs: Iterable[tuple[str, str]]) -> str:
    pairs = list(pairs)
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {visible(v)}" for k, v in pairs)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}s" if value < 100 else f"{value:.0f}s"
