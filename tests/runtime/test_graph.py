"""state_graph: DOT of a session class's declared transitions."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest

from runtime import Session
from runtime._graph import state_graph
from tests.apps.cli_app import Duel, Notebook


class Plain(Session[int]):
    def initial_state(self, args: Mapping[str, Any]) -> int:
        return 0


class Odd(Session[int]):
    type_name = 'odd "graph"'
    transitions = {  # noqa: RUF012
        ('say "hi"', "node"): "a\\b",
        ("a\\b", "ev\nnext"): "digraph } {",
    }


class TestStateGraph:
    def test_duel(self) -> None:
        """Nodes sorted, final states double-bordered, one edge per transition labelled by event."""
        assert state_graph(Duel) == (
            'digraph "Duel" {\n'
            "  rankdir=LR;\n"
            '  node [shape=box, style=rounded, fontname="Helvetica"];\n'
            '  edge [fontname="Helvetica", fontsize=10];\n'
            '  "finished" [peripheries=2];\n'
            '  "lobby";\n'
            '  "playing";\n'
            '  "lobby" -> "lobby" [label="cliapp.Joined"];\n'
            '  "lobby" -> "playing" [label="cliapp.Started"];\n'
            '  "playing" -> "finished" [label="cliapp.Finished"];\n'
            '  "playing" -> "playing" [label="cliapp.Moved"];\n'
            "}\n"
        )

    def test_deterministic_whatever_the_declaration_order(self) -> None:
        """The same table declared in another order gives the same text."""

        class Shuffled(Session[int]):
            type_name = "Duel"
            transitions = dict(reversed(list(Duel.transitions.items())))  # noqa: RUF012

        assert list(Shuffled.transitions) != list(Duel.transitions)
        assert state_graph(Shuffled) == state_graph(Duel)

    def test_names_are_quoted_safely(self) -> None:
        """Quotes, backslashes, newlines and DOT keywords stay inside their strings."""
        dot = state_graph(Odd)
        assert dot.startswith('digraph "odd \\"graph\\"" {\n')
        assert '  "say \\"hi\\"" -> "a\\\\b" [label="node"];\n' in dot
        assert '  "a\\\\b" -> "digraph } {" [label="ev\\nnext"];\n' in dot
        assert '  "digraph } {" [peripheries=2];\n' in dot
        # Every statement is on one line, and every quote is either escaped or delimits a string.
        for line in dot.splitlines()[4:-1]:
            assert line.endswith(";")
            assert len(re.findall(r'(?<!\\)"', line.replace("\\\\", ""))) % 2 == 0

    def test_no_transitions(self) -> None:
        """A class without transitions gets a ValueError that says how to declare them."""
        with pytest.raises(ValueError, match=r"Plain declares no transitions: set a class attribute"):
            state_graph(Plain)
        with pytest.raises(ValueError, match=r"cliapp\.Notebook declares no transitions"):
            state_graph(Notebook)

    def test_malformed_entry(self) -> None:
        """An entry that is not (label, event) -> label is named in the error."""

        class Bad(Session[int]):
            transitions = {("lobby",): "playing"}  # type: ignore[dict-item]  # noqa: RUF012

        with pytest.raises(ValueError, match=r"Bad\.transitions has an entry \('lobby',\)"):
            state_graph(Bad)

    @pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
    def test_graphviz_accepts_it(self) -> None:  # pragma: no cover - only where Graphviz is installed
        """dot parses the output (quoting included)."""
        for cls in (Duel, Odd):
            subprocess.run(["dot", "-Tsvg"], input=state_graph(cls).encode(), check=True, capture_output=True)
