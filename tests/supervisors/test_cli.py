"""The ``sessionvisor`` command, run as a subprocess on a store file written by a real supervisor."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from runtime import CorruptEventLog, EventData, SQLiteStore, Status
from runtime._graph import state_graph
from supervisors import SessionSupervisor
from tests.apps.cli_app import Duel, Finish, Join, Move, Note, Notebook, Start

# Each test runs the command as a subprocess (about a second each on a loaded machine).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
APP = "tests.apps.cli_app"


async def fill(path: Path) -> None:
    """duel-1 played to the end (7 events, snapshot at 6), duel-2 in its lobby, notes-1."""
    async with SessionSupervisor(store=SQLiteStore(path)) as sessions:
        duel = await sessions.start(Duel, "duel-1", metadata={"channel": "c1", "level": 3})
        for message in (Join("ann"), Join("bob"), Start(), Move("ann", 4), Move("bob", 0), Finish("ann")):
            await duel.call(message)
        other = await sessions.start(Duel, "duel-2", metadata={"channel": "c2"})
        await other.call(Join("cy"))
        notes = await sessions.start(Notebook, "notes-1", args={"notes": ["a"]}, metadata={"channel": "c1"})
        await notes.call(Note("hello"))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "sessions.db"
    anyio.run(fill, path)
    return path


def run(
    *args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisors._cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(*args: str | Path) -> str:
    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def fails(*args: str | Path, code: int = 2, env: dict[str, str] | None = None) -> str:
    """Run expecting exit status ``code``, nothing on stdout; return stderr."""
    done = run(*args, env=env)
    assert (done.returncode, done.stdout) == (code, ""), done
    assert done.stderr.startswith("sessionvisor: error: ")
    return done.stderr


def ids(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:]]


def state_of(output: str) -> object:
    """The JSON after the "state:" line of show and replay."""
    return json.loads(output.split("\nstate:\n", 1)[1])


class TestList:
    def test_table(self, db: Path) -> None:
        """Every session, oldest first, in aligned columns."""
        lines = ok("--db", db, "list").splitlines()
        header = lines[0]
        assert header.split() == ["ID", "TYPE", "STATUS", "VERSION", "CREATED", "UPDATED", "METADATA"]
        assert [line.split()[:4] for line in lines[1:]] == [
            ["duel-1", "Duel", "completed", "7"],
            ["duel-2", "Duel", "running", "1"],
            ["notes-1", "cliapp.Notebook", "running", "1"],
        ]
        for column in ("TYPE", "STATUS", "VERSION", "CREATED", "METADATA"):
            at = header.index(column)
            assert all(line[at - 2 : at] == "  " and line[at] != " " for line in lines[1:]), column
        assert lines[1].endswith('{"channel":"c1","level":3}')
        created = lines[1].split()[4:6]
        datetime.datetime.strptime(" ".join(created), "%Y-%m-%d %H:%M:%SZ")

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            (["--status", "completed"], ["duel-1"]),
            (["--type", "cliapp.Notebook"], ["notes-1"]),
            (["--meta", "channel=c1"], ["duel-1", "notes-1"]),
            (["--meta", "channel=c1", "--type", "Duel"], ["duel-1"]),
            (["--meta", "level=3"], ["duel-1"]),
            (["--meta", 'level="3"'], []),
            (["--limit", "1", "--offset", "1"], ["duel-2"]),
            (["--desc"], ["notes-1", "duel-2", "duel-1"]),
            (["--sort", "updated", "--limit", "1"], ["duel-1"]),  # notes-1 and duel-2 changed later
            (["--sort", "updated", "--desc", "--type", "Duel"], ["duel-2", "duel-1"]),
            (["--updated-after", "1h"], ["duel-1", "duel-2", "notes-1"]),
            (["--created-before", "1h"], []),
            (["--created-after", "2099-01-01T00:00:00Z"], []),
            (["--created-after", "2000-01-01", "--created-before", "2099-01-01T00:00+02:00"], None),
        ],
    )
    def test_filters(self, db: Path, filters: list[str], expected: list[str] | None) -> None:
        """Status, type, metadata (JSON values, else text), limit and offset, order, time ranges."""
        everything = ["duel-1", "duel-2", "notes-1"]
        assert ids(ok("--db", db, "list", *filters)) == (everything if expected is None else expected)

    @pytest.mark.parametrize("when", ["yesterday", "-1h", "1x", "nanh"])
    def test_bad_time(self, db: Path, when: str) -> None:
        """A time that is neither ISO 8601 nor a duration ago is a usage error naming the option."""
        done = run("--db", db, "list", f"--created-after={when}")
        assert done.returncode == 2
        assert "--created-after" in done.stderr


class TestShowHistoryReplay:
    def test_show(self, db: Path) -> None:
        """The index entry, the snapshot, the state machine's label and the replayed state."""
        out = ok("--db", db, "--app", APP, "show", "duel-1")
        head = dict(line.split(": ", 1) for line in out.split("\nstate:\n")[0].splitlines())
        assert {k: v.strip() for k, v in head.items()} | {"created": "", "updated": ""} == {
            "id": "duel-1",
            "type": "Duel",
            "status": "completed",
            "version": "7",
            "created": "",
            "updated": "",
            "args": "{}",
            "metadata": '{"channel":"c1","level":3}',
            "snapshot": "version 6, state_version 1",
            "label": "finished",
            "allowed events": "none (final)",
        }
        assert state_of(out) == {
            "phase": "finished",
            "players": ["ann", "bob"],
            "moves": [4, 0],
            "winner": "ann",
        }

    def test_show_by_type_name(self, db: Path) -> None:
        """A class stored under its type_name is found by it."""
        out = ok("--db", db, "--app", APP, "show", "notes-1")
        assert "type:     cliapp.Notebook\n" in out
        assert state_of(out) == ["a", "hello"]

    def test_history(self, db: Path) -> None:
        """Events as JSON lines, status changes included, and a version range."""
        lines = [json.loads(line) for line in ok("--db", db, "history", "duel-1").splitlines()]
        assert [(e["version"], e["type"], e["schema_version"]) for e in lines] == [
            (1, "cliapp.Joined", 1),
            (2, "cliapp.Joined", 1),
            (3, "cliapp.Started", 1),
            (4, "cliapp.Moved", 1),
            (5, "cliapp.Moved", 1),
            (6, "cliapp.Finished", 1),
            (7, "sessionvisor.StatusChanged", 1),
        ]
        assert lines[3]["data"] == {"player": "ann", "square": 4}
        assert lines[6]["data"]["status"] == "completed"
        assert all(datetime.datetime.fromisoformat(e["recorded_at"]).tzinfo is not None for e in lines)
        assert set(lines[0]) == {"version", "type", "schema_version", "recorded_at", "data"}
        ranged = ok("--db", db, "history", "duel-1", "--from", "2", "--to", "3").splitlines()
        assert [json.loads(line)["version"] for line in ranged] == [2, 3]

    @pytest.mark.parametrize(
        ("options", "version", "start", "state"),
        [
            (["--to", "2"], "2 of 7", "the first event", {"phase": "lobby", "players": ["ann", "bob"]}),
            (["--to", "4"], "4 of 7", "the first event", {"phase": "playing", "moves": [4]}),
            (["--to", "6"], "6 of 7", "the snapshot at version 6", {"phase": "finished", "winner": "ann"}),
            (["--to", "6", "--no-snapshot"], "6 of 7", "the first event", {"phase": "finished"}),
            ([], "7 of 7", "the snapshot at version 6", {"winner": "ann"}),
        ],
    )
    def test_replay(
        self, db: Path, options: list[str], version: str, start: str, state: dict[str, object]
    ) -> None:
        """The state after VERSION events, from the first event or a snapshot not beyond it."""
        out = ok("--db", db, "--app", APP, "replay", "duel-1", *options)
        assert f"version:        {version}\n" in out
        assert f"replayed from:  {start}\n" in out
        rebuilt = state_of(out)
        assert isinstance(rebuilt, dict)
        assert {k: rebuilt[k] for k in state} == state

    def test_replay_beyond_the_end(self, db: Path) -> None:
        """--to past the last version shows the last, with a note."""
        done = run("--db", db, "--app", APP, "replay", "duel-2", "--to", "99")
        assert done.returncode == 0
        assert "has 1 events; showing the last version" in done.stderr
        assert state_of(done.stdout) == {"phase": "lobby", "players": ["cy"], "moves": [], "winner": None}


class TestStatsAndGraph:
    def test_stats(self, db: Path) -> None:
        """Counts of sessions, events, snapshots, by status and by type."""
        out = ok("--db", db, "stats")
        assert out.startswith("sessions:  3\nevents:    9\nsnapshots: ")
        assert "\nSTATUS     SESSIONS\ncompleted  1\nrunning    2\n" in out
        assert "\nTYPE             SESSIONS\nDuel             2\ncliapp.Notebook  1\n" in out
        outcomes = out.split("\n\n")[-1].splitlines()
        assert outcomes[0].split() == [
            "TYPE", "ENDED", "COMPLETED", "SUCCESS", "MEAN", "P50", "P95", "EVENTS/SESSION",
        ]  # fmt: skip
        duel, notebook = (line.split() for line in outcomes[1:])
        assert duel[:4] == ["Duel", "1", "1", "100.0%"]
        assert duel[-1] == "7.0"
        assert all(d.endswith("s") for d in duel[4:7])
        assert notebook == ["cliapp.Notebook", "0", "0", "-", "-", "-", "-", "-"]

    def test_graph(self) -> None:
        """DOT on stdout, the same as state_graph's."""
        assert ok("graph", f"{APP}:Duel") == state_graph(Duel)

    def test_graph_png(self, tmp_path: Path) -> None:
        """--png hands the DOT to Graphviz's dot (a stand-in here) with -Tpng -o FILE."""
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "dot"
        fake.write_text(
            '#!/bin/sh\necho "$@" > "$0.args"\n'
            'while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done\ncat > "$out"\n'
        )
        fake.chmod(0o755)
        png = tmp_path / "duel.png"
        env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = run("graph", f"{APP}:Duel", "--png", png, env=env)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert png.read_text() == state_graph(Duel)
        assert (bin_dir / "dot.args").read_text().split() == ["-Tpng", "-o", str(png)]

    @pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
    def test_graph_png_with_graphviz(self, tmp_path: Path) -> None:  # pragma: no cover - needs Graphviz
        """With Graphviz installed, a real PNG."""
        png = tmp_path / "duel.png"
        ok("graph", f"{APP}:Duel", "--png", png)
        assert png.read_bytes().startswith(b"\x89PNG\r\n")

    def test_graph_png_without_graphviz(self, tmp_path: Path) -> None:
        """No dot on PATH: exit 2, saying to install Graphviz; nothing written."""
        png = tmp_path / "duel.png"
        err = fails("graph", f"{APP}:Duel", "--png", png, env=os.environ | {"PATH": str(tmp_path)})
        assert "install Graphviz" in err
        assert not png.exists()

    @pytest.mark.parametrize(
        ("target", "message"),
        [
            (f"{APP}:Notebook", "cliapp.Notebook declares no transitions"),
            (f"{APP}:Nope", "has no 'Nope'"),
            (f"{APP}:Join", "is not a Session subclass"),
            (APP, "is not MODULE:CLASS"),
            ("no_such_app:Game", "no module named 'no_such_app'"),
        ],
    )
    def test_graph_errors(self, target: str, message: str) -> None:
        """Each wrong target is named."""
        assert message in fails("graph", target)


class TestErrors:
    def test_missing_file_is_not_created(self, tmp_path: Path) -> None:
        """A missing --db fails with exit 2 and no new database."""
        missing = tmp_path / "nope.db"
        err = fails("--db", missing, "list")
        assert f"no database at {str(missing)!r}" in err
        assert "pass --db PATH" in err
        assert list(tmp_path.iterdir()) == []

    def test_not_a_store(self, tmp_path: Path) -> None:
        """A file that is not a sessionvisor store is refused, untouched."""
        text = tmp_path / "notes.txt"
        text.write_text("hello")
        assert "cannot be read as an SQLite database" in fails("--db", text, "list")
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE t (x)")
        conn.close()
        before = other.read_bytes()
        assert "not a sessionvisor store" in fails("--db", other, "stats")
        assert other.read_bytes() == before

    def test_unknown_id(self, db: Path) -> None:
        """An unknown id points at `list`."""
        for command in ("show", "history", "replay"):
            err = fails("--db", db, "--app", APP, command, "nope")
            assert "no session 'nope' in the store: see `sessionvisor list`" in err

    def test_unknown_session_type(self, db: Path) -> None:
        """Without the --app that defines the type: exit 2 naming the type and --app."""
        err = fails("--db", db, "show", "duel-1")
        assert "of type 'Duel' and no --app was given: pass --app MODULE" in err
        err = fails("--db", db, "--app", "tests.apps.counter", "replay", "duel-1")
        assert "none of --app tests.apps.counter defines it" in err

    def test_unknown_module(self, db: Path) -> None:
        """An unimportable --app is named, with what to do."""
        err = fails("--db", db, "--app", "no_such_app.sessions", "show", "duel-1")
        assert "--app 'no_such_app.sessions': no module named 'no_such_app'" in err
        assert "PYTHONPATH" in err

    def test_corrupt_log(self, db: Path, tmp_path: Path) -> None:
        """An event no --app defines is a data error: exit 1 naming the session and version."""
        copy = tmp_path / "copy.db"
        with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        source.close()
        target.close()

        async def append_unknown() -> None:
            store = SQLiteStore(copy)
            await store.open()
            try:
                await store.append("duel-2", 1, [EventData("cliapp.NeverDefined", 1, "{}")])
            finally:
                await store.aclose()

        anyio.run(append_unknown)
        err = fails("--db", copy, "--app", APP, "replay", "duel-2", code=1)
        assert "'duel-2'" in err
        assert "cliapp.NeverDefined" in err
        assert ids(ok("--db", copy, "list", "--type", "Duel")) == ["duel-1", "duel-2"]  # the rest still reads

    def test_usage_errors(self, db: Path) -> None:
        """argparse's own checks exit 2 too."""
        assert run("--db", db, "list", "--limit", "-1").returncode == 2
        assert run("--db", db, "list", "--meta", "novalue").returncode == 2
        assert run("--db", db).returncode == 2


def test_console_script_imports_apps_from_the_current_directory(db: Path) -> None:
    """The installed `sessionvisor` script finds --app modules in the current directory."""
    script = shutil.which("sessionvisor", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the sessionvisor script is not installed next to this Python")
    done = subprocess.run(
        [script, "--db", str(db), "--app", APP, "show", "notes-1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert state_of(done.stdout) == ["a", "hello"]


EVIL_ID = "evil\x1b]0;pwned\x07\x1b[31m"
FORGED_ID = "forged\nduel-9  Duel  completed"
NOTE = "bell\x07 csi\x9b31m rtl\u202eexe.txt line\u2028sep"


async def fill_hostile(path: Path) -> None:
    """Sessions named, labelled and written to by someone hostile: escape sequences, line breaks."""
    async with SessionSupervisor(store=SQLiteStore(path)) as sessions:
        for session_id in (EVIL_ID, FORGED_ID):
            notes = await sessions.start(
                Notebook, session_id, args={"notes": [NOTE]}, metadata={"who\x1b[2J": "a\nb\x7f"}
            )
            await notes.call(Note(NOTE))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-hostile") / "sessions.db"
    anyio.run(fill_hostile, path)
    return path


class TestEscaping:
    """Nothing read from the store reaches the terminal raw (issue 17)."""

    @staticmethod
    def assert_inert(output: str) -> None:
        """Only printable characters and the command's own line breaks."""
        assert all(c.isprintable() or c == "\n" for c in output), repr(output)

    def test_list_escapes_ids_and_metadata_and_forges_no_row(self, hostile: Path) -> None:
        out = ok("--db", hostile, "list")
        self.assert_inert(out)
        lines = out.splitlines()
        assert len(lines) == 3  # the header and two sessions: the line break in an id forged nothing
        assert lines[1].split()[:3] == ["evil\\x1b]0;pwned\\x07\\x1b[31m", "cliapp.Notebook", "running"]
        assert lines[2].startswith("forged\\nduel-9  Duel  completed  cliapp.Notebook  running")
        assert lines[1].endswith('{"who\\u001b[2J":"a\\nb\\u007f"}')  # still JSON: it parses back
        assert json.loads(lines[1].split("  ")[-1]) == {"who\x1b[2J": "a\nb\x7f"}

    def test_show_history_and_errors_escape(self, hostile: Path) -> None:
        shown = ok("--db", hostile, "--app", APP, "show", EVIL_ID)
        self.assert_inert(shown)
        assert "id:       evil\\x1b]0;pwned\\x07\\x1b[31m\n" in shown
        assert state_of(shown) == [NOTE, NOTE]  # the state is JSON that reads back exactly
        history = ok("--db", hostile, "history", FORGED_ID)
        self.assert_inert(history)
        [event] = [json.loads(line) for line in history.splitlines()]
        assert event["data"] == {"text": NOTE}
        assert "csi\\u009b31m rtl\\u202eexe.txt line\\u2028sep" in history
        error = fails("--db", hostile, "show", "nope\x1b[2J\nsessionvisor: fine")
        self.assert_inert(error)
        assert error.count("\n") == 1


async def quarantine_truncated(path: Path, session_id: str) -> str:
    """Lose the last event of the session's log, then let a supervisor find it: FAILED, and why."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(
            "DELETE FROM events WHERE session = (SELECT key FROM sessions WHERE id = ?) AND version = "
            "(SELECT max(version) FROM events WHERE session = (SELECT key FROM sessions WHERE id = ?))",
            (session_id, session_id),
        )
    async with SessionSupervisor(store=SQLiteStore(path), session_types=[Duel, Notebook]) as sessions:
        ref = await sessions.get(session_id)
        with pytest.raises(CorruptEventLog, match="truncated tail") as info:
            await ref.call(Join("late"))
    return str(info.value)


class TestQuarantineReasons:
    def test_show_and_list_print_why_a_session_failed(self, db: Path, tmp_path: Path) -> None:
        """A session quarantined by one process: show and list --status failed print the reason."""
        copy = tmp_path / "copy.db"
        shutil.copyfile(db, copy)
        reason = anyio.run(quarantine_truncated, copy, "duel-2")
        done = run("--db", copy, "--app", APP, "show", "duel-2")
        assert done.returncode == 1  # its log cannot be replayed: said after what the index knows
        fields = dict(line.split(": ", 1) for line in done.stdout.splitlines())
        assert fields["status"].strip() == "failed"
        assert fields["reason"].strip() == f"CorruptEventLog: {reason}"
        assert "truncated tail: the log ends at version 0 but the store acknowledged 1" in reason
        assert "truncated tail" in done.stderr
        table = ok("--db", copy, "list", "--status", "failed").splitlines()
        assert table[0].split() == [
            "ID",
            "TYPE",
            "STATUS",
            "VERSION",
            "CREATED",
            "UPDATED",
            "METADATA",
            "REASON",
        ]
        assert ids("\n".join(table)) == ["duel-2"]
        assert table[1].endswith(f"CorruptEventLog: {reason}")
        assert "REASON" not in ok("--db", copy, "list", "--status", "running")  # no column for nothing

    def test_invalid_id_is_a_usage_error(self, db: Path) -> None:
        """An id no store accepts is a one-line usage error, not a traceback."""
        for command in ("show", "history", "replay"):
            err = fails("--db", db, "--app", APP, command, "")
            assert "invalid session id '': it is empty" in err
            assert err.count("\n") == 1

    def test_show_prints_the_reason_beside_the_state(self, db: Path, tmp_path: Path) -> None:
        """A FAILED session whose log still replays: the reason, then its state; exit status 0."""
        copy = tmp_path / "copy.db"
        shutil.copyfile(db, copy)

        async def fail() -> None:
            store = SQLiteStore(copy)
            await store.open()
            try:
                await store.set_status(
                    "notes-1", Status.FAILED, reason="restart limit reached", error_type="KeyError"
                )
            finally:
                await store.aclose()

        anyio.run(fail)
        out = ok("--db", copy, "--app", APP, "show", "notes-1")
        assert "\nreason:   KeyError: restart limit reached\n" in out
        assert state_of(out) == ["a", "hello"]
