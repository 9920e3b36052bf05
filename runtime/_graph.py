"""``state_graph``: a session class's declared state machine as Graphviz DOT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["state_graph"]


def _quote(text: str) -> str:
    """``text`` as a DOT quoted string that Graphviz shows as written.

    DOT only unescapes ``\\"``, but labels (and node names, shown through ``\\N``) then go through
    Graphviz's own escapes (``\\n``, ``\\l``, ``\\N``...): doubling every backslash keeps them literal.
    Line breaks become ``\\n`` so that each statement stays on one line.
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return f'"{escaped}"'


def state_graph(session_cls: type[Session[Any]]) -> str:
    """The declared ``transitions`` of ``session_cls`` as a Graphviz DOT digraph.

    Nodes are the labels (what ``label(state)`` returns), edges go from a label to the next one and
    are labelled with the event type name that takes them. Labels without an outgoing transition
    (final states) are drawn with a double border. The output is deterministic (sorted), so it can be
    kept under version control and diffed.

    Example::

        print(state_graph(Game))  # then: dot -Tpng -o game.png

    Args:
        session_cls: a ``Session`` subclass with a ``transitions`` class attribute.

    Returns:
        The DOT source, ending with a newline.

    Raises:
        ValueError: the class declares no transitions, or an entry is not
            ``(label, event type name) -> next label`` with strings.

    .. versionadded:: 0.1
    """
    name = str(getattr(session_cls, "type_name", None) or getattr(session_cls, "__name__", session_cls))
    transitions = getattr(session_cls, "transitions", None)
    if not isinstance(transitions, Mapping) or not transitions:
        raise ValueError(
            f"{name} declares no transitions: set a class attribute transitions = "
            f'{{("label", "EventTypeName"): "next label", ...}} (and define label(self, state)) '
            f"to draw its state machine"
        )
    edges: list[tuple[str, str, str]] = []
    for key, target in transitions.items():
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and isinstance(key[0], str)
            and isinstance(key[1], str)
            and isinstance(target, str)
        ):
            raise ValueError(
                f"{name}.transitions has an entry {key!r}: {target!r}; each must be "
                f'("label", "EventTypeName"): "next label", all strings'
            )
        edges.append((key[0], key[1], target))
    edges.sort(key=lambda e: (e[0], e[1], e[2]))
    nodes = sorted({e[0] for e in edges} | {e[2] for e in edges})
    sources = {e[0] for e in edges}
    lines = [
        f"digraph {_quote(name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for node in nodes:
        lines.append(f"  {_quote(node)};" if node in sources else f"  {_quote(node)} [peripheries=2];")
    for source, event_name, target in edges:
        lines.append(f"  {_quote(source)} -> {_quote(target)} [label={_quote(event_name)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
