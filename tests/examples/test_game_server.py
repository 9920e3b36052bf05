"""The game server example: the room's rules on a manual clock, the protocol over real sockets, and
the whole program (server, bots, chaos, audit) run as ``python -m examples.game_server``.

The program runs in a subprocess, for a couple of seconds on each backend: it binds real ports, runs
the SQLite writer and metrics threads and its bots' turn timers in real time, which trio's MockClock
(autojumping whenever every task waits on a socket or a thread) would turn into spurious timeouts.
The protocol test runs in-process on real clocks for the same reason (its own ``anyio_backend``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from examples.game_server.audit import AckJournal, count_stored_moves, read_journal
from examples.game_server.bots import Client
from examples.game_server.game import Chaos, Join, Leave, Look, Move, Room, Wait, room_class
from examples.game_server.server import GameServer
from runtime import EventData, MemoryStore, SessionCrashed, SessionRecord, SessionRef, SessionStopped, Status
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, SessionSupervisor
from tests.examples.programs import REPO, run_example
from tests.helpers import no_backoff, status_of

CRASH_TOLERANT = no_backoff(max_restarts=50, within=10)


class ForcedChaos(Chaos):
    """Crashes the next moves as listed ("before", "after" or None each), then no more."""

    def __init__(self, plan: list[Literal["before", "after"] | None]) -> None:
        super().__init__(probability=1.0)
        self.plan = plan

    def roll(self) -> Literal["before", "after"] | None:
        return self.plan.pop(0) if self.plan else None


async def moved(room: SessionRef, player: str, turn: int, word: str) -> dict[str, Any]:
    answer = await room.call(Move(player, turn, word))
    assert isinstance(answer, dict)
    return answer


async def look(room: SessionRef) -> dict[str, Any]:
    answer = await room.call(Look())
    assert isinstance(answer, dict)
    return answer


async def started_room(
    sessions: SessionSupervisor, cls: type[Room] = Room, rounds: int = 2, room_id: str = "r1"
) -> SessionRef:
    room = await sessions.start(cls, room_id, {"size": 2, "rounds": rounds, "turn_seconds": 1.0})
    await room.call(Join("ann"))
    await room.call(Join("bob"))
    return room


def a_word(letter: str, used: list[str]) -> str:
    from examples.game_server.words import BY_LETTER

    return next(w for w in BY_LETTER[letter] if w not in used)


@pytest.mark.anyio
class TestRoom:
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def sessions(self, clock: ManualClock) -> AsyncIterator[SessionSupervisor]:
        async with SessionSupervisor(
            clock=clock, restarts=CRASH_TOLERANT, reaper=ReaperPolicy(abandon_after=3)
        ) as sessions:
            yield sessions

    async def test_a_whole_game_completes_with_its_result(self, sessions: SessionSupervisor) -> None:
        """Joined by both: playing; after rounds * size moves: COMPLETED, the scores as the result."""
        room = await started_room(sessions)
        state = await look(room)
        assert (state["phase"], state["current"]) == ("playing", "ann")
        used: list[str] = []
        for turn, player in enumerate(["ann", "bob", "ann", "bob"]):
            word = a_word(state["letter"] if turn == 0 else used[-1][-1], used)
            answer = await moved(room, player, turn, word)
            assert answer["ok"], answer
            used.append(word)
        assert answer["finished"]["turns"] == 4
        assert status_of(room) is Status.COMPLETED
        log = await sessions.store.read("r1")
        assert [e.type for e in log][-2:] == ["game.Finished", "sessionvisor.StatusChanged"]
        assert json.loads(log[-1].data)["result"]["scores"] == {
            "ann": len(used[0]) + len(used[2]),
            "bob": len(used[1]) + len(used[3]),
        }

    async def test_bad_moves_are_answered_and_not_recorded(self, sessions: SessionSupervisor) -> None:
        room = await started_room(sessions)
        letter = (await look(room))["letter"]
        version = len(await sessions.store.read("r1"))
        assert (await moved(room, "bob", 0, a_word(letter, [])))["error"] == "not_your_turn"
        assert (await moved(room, "ann", 3, a_word(letter, [])))["error"] == "stale_turn"
        assert (await moved(room, "ann", 0, "zzzz"))["error"] == "bad_word"
        assert (await moved(room, "ann", 0, "xenon" if letter != "x" else "apple"))["error"] == "bad_word"
        assert len(await sessions.store.read("r1")) == version
        assert (await moved(room, "ann", 0, ""))["ok"]  # a pass is a move

    async def test_the_turn_timer_takes_the_turn(
        self, sessions: SessionSupervisor, clock: ManualClock
    ) -> None:
        """A player who does not move within turn_seconds loses the turn; a waiter is told at once."""
        room = await started_room(sessions)
        async with anyio.create_task_group() as tg:
            answers: list[object] = []

            async def wait_for_bob() -> None:
                answers.append(await room.call(Wait("bob", 1), timeout=None))

            tg.start_soon(wait_for_bob)
            await clock.advance(0.9)
            assert answers == []
            await clock.advance(0.2)
        assert answers[0] == {
            "ok": True,
            "your_turn": True,
            "turn": 1,
            "letter": (await look(room))["letter"],
            "used": [],
            "seconds": 1.0,
        }
        log = await sessions.store.read("r1")
        assert (log[-1].type, json.loads(log[-1].data)) == (
            "game.TurnLost",
            {"player": "ann", "turn": 0, "reason": "timeout"},
        )

    async def test_crash_after_recording_keeps_the_move(self, sessions: SessionSupervisor) -> None:
        """The caller gets SessionCrashed, yet the move is in the log and in the restarted room."""
        chaos = ForcedChaos(["after"])
        room = await started_room(sessions, room_class(chaos))
        letter = (await look(room))["letter"]
        word = a_word(letter, [])
        with pytest.raises(SessionCrashed):
            await room.call(Move("ann", 0, word))
        assert chaos.after == 1
        assert chaos.lost_replies == {("r1", 0)}
        state = await look(room)
        assert (state["turn"], state["current"], state["scores"]["ann"]) == (1, "bob", len(word))
        assert sessions.restart_policy == CRASH_TOLERANT
        assert (await sessions.stats()).restarts == 1

    async def test_crash_before_recording_loses_nothing(self, sessions: SessionSupervisor) -> None:
        """Crashed before recording: nothing stored; the same move again is accepted."""
        chaos = ForcedChaos(["before"])
        room = await started_room(sessions, room_class(chaos))
        word = a_word((await look(room))["letter"], [])
        with pytest.raises(SessionCrashed):
            await room.call(Move("ann", 0, word))
        assert (await look(room))["turn"] == 0
        assert (await moved(room, "ann", 0, word))["ok"]

    async def test_last_move_then_crash_still_completes(self, sessions: SessionSupervisor) -> None:
        """The final move recorded, then a crash: the restarted room completes by itself."""
        chaos = ForcedChaos([None, "after"])
        room = await started_room(sessions, room_class(chaos), rounds=1)
        letter = (await look(room))["letter"]
        first = a_word(letter, [])
        assert (await moved(room, "ann", 0, first))["ok"]
        with pytest.raises(SessionCrashed):
            await room.call(Move("bob", 1, a_word(first[-1], [first])))
        await anyio.wait_all_tasks_blocked()
        assert status_of(room) is Status.COMPLETED

    async def test_a_room_everyone_left_is_abandoned(
        self, sessions: SessionSupervisor, clock: ManualClock
    ) -> None:
        room = await started_room(sessions)
        await room.call(Leave("ann"))
        await room.call(Leave("bob"))
        state = await look(room)
        assert (state["present"], state["current"]) == ([], None)
        await clock.advance(3.5)
        assert status_of(room) is Status.ABANDONED
        with pytest.raises(SessionStopped, match="abandoned"):
            await room.call(Look())

    async def test_a_full_room_refuses_another_player(self, sessions: SessionSupervisor) -> None:
        room = await started_room(sessions)
        answer = await room.call(Join("cat"))
        assert isinstance(answer, dict)
        assert answer["error"] == "game_started"


@pytest.mark.anyio
class TestAudit:
    async def test_counts_moves_from_the_logs(self) -> None:
        """An acknowledged move missing from the store fails the audit; explained extras do not."""
        store = MemoryStore()
        await store.create(SessionRecord("run-r", "game.Room", metadata={"run": "run"}))
        await store.create(SessionRecord("other-r", "game.Room", metadata={"run": "other"}))
        played = [
            EventData("game.Played", 1, json.dumps({"player": "a", "turn": t, "word": "", "points": 0}))
            for t in range(3)
        ]
        await store.append("run-r", 0, played)
        await store.append("other-r", 0, played)
        audit = await count_stored_moves(store, ["run"], {("run-r", 0), ("run-r", 1)}, {("run-r", 2)})
        assert audit.ok
        assert (len(audit.stored), len(audit.explained), audit.unexplained) == (3, 1, frozenset())
        audit = await count_stored_moves(store, ["run"], {("run-r", 0), ("run-r", 5)}, set())
        assert not audit.ok
        assert audit.acked_not_stored == {("run-r", 5)}
        assert audit.unexplained == {("run-r", 1), ("run-r", 2)}

    def test_journal_keeps_acknowledged_moves_by_run(self, tmp_path: Path) -> None:
        """Each acknowledged move is a flushed line: a later run reads them back by run."""
        path = str(tmp_path / "game.db.acked")
        first = AckJournal(path, "run1")
        first.note("r1", 0)
        first.note("r1", 1)
        first.close()
        with open(path, "a") as torn:
            torn.write('{"run": "run1", "ro')  # a line cut short by a kill
        second = AckJournal(path, "run2")
        second.note("r2", 0)
        second.close()
        assert read_journal(path) == {"run1": {("r1", 0), ("r1", 1)}, "run2": {("r2", 0)}}
        assert read_journal(str(tmp_path / "none")) == {}


@pytest.mark.anyio
class TestProtocol:
    """The server over real TCP sockets, on real clocks (not the suite's MockClock)."""

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    async def port(self) -> AsyncIterator[int]:
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            server = GameServer(sessions, Room, metadata={"run": "test"}, turn_seconds=5.0)
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            tg.start_soon(server.serve, listener)
            yield listener.extra(anyio.abc.SocketAttribute.local_port)
            tg.cancel_scope.cancel()

    async def test_two_players_play_and_one_leaves(self, port: int) -> None:
        with anyio.fail_after(10):
            async with (
                await Client.connect("127.0.0.1", port) as ann,
                await Client.connect("127.0.0.1", port) as bob,
            ):
                assert (await ann.request(op="join", room="r"))["field"] == "hello"
                assert await ann.request(op="hello", name="ann") == {"ok": True, "name": "ann", "op": "hello"}
                await bob.request(op="hello", name="bob")
                assert (await ann.request(op="join", room="r", rounds=3))["phase"] == "lobby"
                joined = await bob.request(op="join", room="r", rounds=3, id=7)
                assert (joined["phase"], joined["current"], joined["id"]) == ("playing", "ann", 7)
                ready = await ann.request(op="wait", room="r")
                assert ready["your_turn"]
                assert ready["turn"] == 0
                word = a_word(ready["letter"], [])
                answer = await ann.request(op="move", room="r", turn=0, word=word)
                assert answer == {
                    "ok": True,
                    "turn": 0,
                    "word": word,
                    "points": len(word),
                    "score": len(word),
                    "next": "bob",
                    "op": "move",
                    "room": "r",
                }
                assert (await bob.request(op="move", room="r", turn=0, word="x"))["error"] == "stale_turn"
                assert (await bob.request(op="wait", room="r", turn=1))["letter"] == word[-1]
            async with await Client.connect("127.0.0.1", port) as cat:
                await cat.request(op="hello", name="cat")
                for _ in range(500):  # until the server notices both connections closed
                    state = await cat.request(op="look", room="r")
                    if not state["present"]:
                        break
                    await anyio.sleep(0.01)
                assert state["present"] == []
                assert (await cat.request(op="look", room="nope"))["error"] == "no_such_room"

    async def test_bad_requests_keep_the_connection(self, port: int) -> None:
        with anyio.fail_after(10):
            async with await Client.connect("127.0.0.1", port) as client:
                await client.lines.stream.send(b"not json\n")
                assert (await client.lines.receive())["error"] == "bad_json"
                assert (await client.request(op="dance"))["error"] == "bad_request"
                assert "move" in (await client.request(op="help"))["ops"]
                await client.request(op="hello", name="ann")
                assert (await client.request(op="join", room="a b"))["field"] == "room"
                assert (await client.request(op="join", room="r", size=9))["field"] == "size"


def run_program(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_example("game_server", tmp_path, *args)


@pytest.mark.slow
class TestProgram:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_chaos_loses_no_acknowledged_move(self, tmp_path: Path, backend: str) -> None:
        """--chaos 0.2: rooms crash often; every acknowledged move is still in the store."""
        done = run_program(
            tmp_path, "--duration", "2", "--chaos", "0.2", "--bots", "8", "--backend", backend, "--seed", "1"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "acknowledged, not stored: 0  (no acknowledged move was lost)" in out
        assert "0 unexplained" in out
        assert f"on {backend}" in out
        crashes = int(out.split("crashes    ")[1].split(" ")[0])
        assert crashes > 0
        assert "http://127.0.0.1:" in out
        assert (tmp_path / "sessionvisor-game.db").exists()
        assert "Traceback" not in done.stderr

    def test_with_the_example_config_and_a_kept_db(self, tmp_path: Path) -> None:
        """--config examples/sessionvisor.toml and --db: a second run adds to the same file."""
        config = str(REPO / "examples" / "sessionvisor.toml")
        for _ in range(2):
            done = run_program(
                tmp_path, "--duration", "1", "--bots", "4", "--config", config, "--db", "kept.db"
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "acknowledged, not stored: 0" in done.stdout
        assert (tmp_path / "kept.db").exists()

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
    def test_ctrl_c_stops_it_with_a_summary(self, tmp_path: Path) -> None:
        """SIGINT: the bots finish their moves, the server drains, the audit still runs."""
        program = subprocess.Popen(
            [sys.executable, "-m", "examples.game_server", "--duration", "0", "--metrics-port", "0"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert program.stdout is not None
        for line in program.stdout:  # wait until it is under way
            if line.startswith("16 bots"):
                break
        time.sleep(0.5)
        program.send_signal(signal.SIGINT)
        out, err = program.communicate(timeout=60)
        assert program.returncode == 0, out + err
        assert "stopping..." in out
        assert "acknowledged, not stored: 0" in out

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
    def test_second_ctrl_c_prints_no_traceback_and_the_summary_still_comes(self, tmp_path: Path) -> None:
        """Two SIGINTs in a row: the second is noted, not raised; the run still ends with its summary."""
        program = subprocess.Popen(
            [sys.executable, "-m", "examples.game_server", "--duration", "0", "--metrics-port", "0"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert program.stdout is not None
        for line in program.stdout:
            if line.startswith("16 bots"):
                break
        time.sleep(0.5)
        program.send_signal(signal.SIGINT)
        for line in program.stdout:
            if line.startswith("stopping..."):
                break
        program.send_signal(signal.SIGINT)
        out, err = program.communicate(timeout=60)
        assert program.returncode == 0, out + err
        assert "Traceback" not in err
        assert "KeyboardInterrupt" not in err
        assert "still stopping: the summary follows" in out
        assert "== summary" in out
        assert "acknowledged, not stored: 0" in out

    def test_metrics_port_in_use_is_one_line_on_stderr(self, tmp_path: Path) -> None:
        """A metrics port in use: exit 2, one line on stderr naming the address and the cause once."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            done = run_example("game_server", tmp_path, "--metrics-port", str(port), "--duration", "1")
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines == [
            f"error: cannot serve metrics on 127.0.0.1:{port} (Address already in use); "
            "--metrics-port 0 picks a free port"
        ]
        assert "error" not in done.stdout

    def test_the_cli_finds_the_rooms_through_the_package(self, tmp_path: Path) -> None:
        """`sessionvisor --app examples.game_server show ROOM` rebuilds a room kept with --db."""
        done = run_program(tmp_path, "--duration", "1", "--bots", "2", "--chaos", "0", "--db", "kept.db")
        assert done.returncode == 0, done.stdout + done.stderr
        cli = [sys.executable, "-m", "supervisors._cli", "--db", "kept.db"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        listed = subprocess.run(
            [*cli, "list", "--limit", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        )
        room = listed.stdout.splitlines()[1].split()[0]
        for app in ("examples.game_server", "examples.game_server.game"):
            shown = subprocess.run(
                [*cli, "--app", app, "show", room], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert shown.returncode == 0, shown.stderr
            assert "type:" in shown.stdout
            assert "game.Room" in shown.stdout

    def test_a_bad_config_is_a_usage_error(self, tmp_path: Path) -> None:
        (tmp_path / "bad.toml").write_text("[reaper]\nidle_timout = 3\n")
        done = run_program(tmp_path, "--config", "bad.toml")
        assert done.returncode == 2
        assert "reaper.idle_timout: unknown key (did you mean idle_timeout?)" in done.stderr
