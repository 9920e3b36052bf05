"""The game server under hostile input and exhausted resources (issue 17).

Whatever a peer sends, the server answers it with a named error or closes that one connection, and
goes on serving others: the lines that used to kill it, a hypothesis fuzz of bytes and of JSON values
(both backends), each per-connection limit, the connection cap, and accept() failing with EMFILE
under a lowered RLIMIT_NOFILE (in a subprocess: the limit is per process).

The server runs on a real clock in a thread of its own (an anyio blocking portal), and the tests speak
to it over blocking sockets, as any client would: trio's MockClock would turn the server's timeouts
into instant ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from examples.game_server.game import Room
from examples.game_server.protocol import MAX_SAFE_INTEGER
from examples.game_server.server import GameServer, Limits
from supervisors import SessionSupervisor
from tests.examples.programs import REPO, run_example

CANARY = b'{"op":"help","id":"canary"}\n'


def strict_json(line: bytes) -> Any:
    """``line`` parsed as standard JSON: NaN and Infinity are errors, as in every other language."""

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


class Peer:
    """A blocking client: sends raw bytes, reads answer lines (each checked to be standard JSON)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> dict[str, Any] | None:
        """The next answer, or None once the server has closed the connection."""
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        value = strict_json(line)
        assert isinstance(value, dict)
        assert isinstance(value["ok"], bool)
        if not value["ok"]:
            assert isinstance(value["error"], str)
        return value

    def request(self, **fields: Any) -> dict[str, Any]:
        self.send(json.dumps(fields).encode() + b"\n")
        answer = self.answer()
        assert answer is not None
        return answer

    def canary(self) -> bool:
        """Whether a help request on this connection is answered (answers to earlier requests skipped)."""
        try:
            self.send(CANARY)
        except OSError:
            return False
        while (answer := self.answer()) is not None:
            if answer.get("id") == "canary":
                assert "move" in answer["ops"]
                return True
        return False

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def peer(port: int, timeout: float = 10.0) -> Iterator[Peer]:
    p = Peer(port, timeout)
    try:
        yield p
    finally:
        p.close()


def assert_serving(port: int) -> None:
    with peer(port) as fresh:
        assert fresh.canary(), "the server no longer answers a new connection"


@contextlib.asynccontextmanager
async def game_server(limits: Limits) -> AsyncIterator[tuple[int, GameServer]]:
    async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
        server = GameServer(sessions, Room, metadata={"run": "fuzz"}, turn_seconds=5.0, limits=limits)
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        tg.start_soon(server.serve, listener)
        yield listener.extra(anyio.abc.SocketAttribute.local_port), server
        tg.cancel_scope.cancel()


@contextlib.contextmanager
def served(backend: str, limits: Limits | None = None) -> Iterator[tuple[int, GameServer, BlockingPortal]]:
    with start_blocking_portal(backend) as portal:
        with portal.wrap_async_context_manager(game_server(limits or Limits())) as (port, server):
            yield port, server, portal


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[int, GameServer]]:
    """One server per backend for the whole module (hypothesis runs hundreds of examples on it)."""
    with served(request.param) as (port, game, _):
        yield port, game


# -- the lines of the issue, and a fuzz of everything else ------------------------------------------

KILLERS = [
    b'{"op":["x"]}',
    b'{"op":{}}',
    b'{"op":"help","id":' + b"7" * 5000 + b"}",
    b"[" * 50_000,
    b'{"op":"help","id":NaN}',
    b'{"op":"help","id":1e999}',
    b'{"op":"hello","name":"ann"}\n{"op":"join","room":"r","size":true,"rounds":1}',
    b'{"op":"hello","name":"ann"}\n{"op":"wait","room":"r","turn":' + b"9" * 40 + b"}",
    b'{"op":"help","id":"\\ud800"}',
    b"\xff\xfe\x00",
    b'{"op":"help"' + b" " * 1000,
]


class TestHostileLines:
    @pytest.mark.parametrize("line", KILLERS, ids=range(len(KILLERS)))
    def test_each_gets_a_named_error_and_the_server_serves_on(
        self, server: tuple[int, GameServer], line: bytes
    ) -> None:
        """Each line that once killed the server now gets an error answer, on a connection that goes on."""
        port, game = server
        errors = game.stats.internal_errors
        with peer(port) as p:
            p.send(line + b"\n")
            answers: list[dict[str, Any]] = []
            while (answer := p.answer()) is not None and len(answers) < 3:
                answers.append(answer)
                if not answer["ok"] and answer["error"] in ("bad_json", "bad_request"):
                    break
            assert answers[-1]["ok"] is False
            assert answers[-1]["error"] in ("bad_json", "bad_request")
            assert p.canary()
        assert game.stats.internal_errors == errors
        assert_serving(port)

    def test_numbers_out_of_range_are_named(self, server: tuple[int, GameServer]) -> None:
        """The error says what is wrong with the number; nothing of it is echoed back as NaN."""
        port, _ = server
        with peer(port) as p:
            p.send(b'{"op":"help","id":' + str(MAX_SAFE_INTEGER + 1).encode() + b"}\n")
            answer = p.answer()
            assert answer is not None
            assert "out of range" in answer["message"]
            assert "id" not in answer
            assert p.request(op="help", id=MAX_SAFE_INTEGER)["id"] == MAX_SAFE_INTEGER


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("op", "id", "room", "name", "turn", "word", "size", "rounds")
OPS = ("help", "hello", "join", "wait", "move", "look", "leave")
requests = st.dictionaries(
    st.sampled_from(FIELDS),
    st.sampled_from(OPS) | st.sampled_from(("r1", "ann", "apple")) | json_values,
    max_size=6,
)


def _converse(port: int, payload: bytes) -> None:
    with peer(port) as p:
        with contextlib.suppress(OSError):  # the server may close the connection mid-way
            p.send(payload)
        if not p.canary():  # the connection was closed for what it sent: others are still served
            assert_serving(port)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class TestFuzz:
    """Hypothesis: arbitrary bytes and arbitrary JSON never take the server down (canary after each)."""

    @FUZZ
    @given(data=st.binary(max_size=3000))
    @example(data=b"\n".join(KILLERS))
    def test_arbitrary_bytes(self, server: tuple[int, GameServer], data: bytes) -> None:
        port, game = server
        _converse(port, data + b"\n")
        assert game.stats.internal_errors == 0

    @FUZZ
    @given(value=json_values | requests, hello=st.booleans())
    @example(value={"op": ["x"]}, hello=False)
    @example(value={"op": "move", "room": "r1", "turn": float("nan")}, hello=True)
    def test_arbitrary_json(self, server: tuple[int, GameServer], value: object, hello: bool) -> None:
        port, game = server
        line = json.dumps(value).encode()  # NaN and Infinity included, as a careless client sends them
        prefix = b'{"op":"hello","name":"fuzz"}\n{"op":"join","room":"r1"}\n' if hello else b""
        _converse(port, prefix + line + b"\n")
        assert game.stats.internal_errors == 0


# -- the limits -----------------------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class TestLimits:
    def test_a_long_line_is_refused_and_that_connection_closed(self, backend: str) -> None:
        with served(backend, Limits(max_line=1000)) as (port, game, _), peer(port) as p:
            p.send(b'{"op":"help","x":"' + b"a" * 5000)
            answer = p.answer()
            assert answer is not None
            assert answer["error"] == "line_too_long"
            assert p.answer() is None
            assert game.stats.closed_by_limits == 1
            assert_serving(port)

    def test_idle_and_slow_peers_are_closed(self, backend: str) -> None:
        limits = Limits(idle_timeout=0.5, request_timeout=0.5)
        with served(backend, limits) as (port, _, _), peer(port) as idle, peer(port) as slow:
            assert idle.request(op="help")["ok"]
            began = time.monotonic()
            slow.send(b'{"op":')
            for _ in range(4):  # a byte now and then: each read is quick, the whole request is not
                time.sleep(0.2)
                with contextlib.suppress(OSError):
                    slow.send(b" ")
            assert slow.answer() == {"ok": False, "error": "too_slow", "message": slow_message(0.5)}
            assert slow.answer() is None
            assert time.monotonic() - began < 5
            assert idle.answer() == {"ok": False, "error": "idle", "message": "no request in 0.5 s: closing"}
            assert idle.answer() is None
            assert_serving(port)

    def test_a_peer_that_does_not_read_is_closed(self, backend: str) -> None:
        limits = Limits(send_timeout=0.5, max_pending=10**6)
        with served(backend, limits) as (port, game, _), peer(port) as p:
            p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # Pipelined requests, never read: their answers fill the socket buffers, then the server
            # gives up on this peer instead of holding its answers in memory.
            request = b'{"op":"help"}\n' * 1000
            with contextlib.suppress(OSError):
                for _ in range(200):
                    ready = select.select([], [p.sock], [], 2)[1]
                    if not ready:
                        break
                    p.sock.send(request)
            # At least once: under load a request of the backlog may also run into the whole-request
            # deadline, and its error answer into the send timeout, each counted as a limit.
            wait_until(lambda: game.stats.closed_by_limits >= 1)
            wait_until(lambda: game.stats.open == 0)
            assert_serving(port)

    def test_a_peer_that_pipelines_and_goes_is_forgotten_at_once(self, backend: str) -> None:
        """Its backlog of requests is dropped with it, not answered into the void (found by the soak)."""
        with served(backend) as (port, game, _):
            with peer(port) as p:
                p.sock.settimeout(0.2)
                stop = time.monotonic() + 2
                with contextlib.suppress(OSError):  # until the server stops reading (its answers wait)
                    while time.monotonic() < stop:
                        p.sock.sendall(b'{"op":"help"}\n' * 500)
                gone = time.monotonic()
            wait_until(lambda: game.stats.open == 0, timeout=5)
            assert time.monotonic() - gone < 1
            assert_serving(port)

    def test_pending_requests_are_bounded(self, backend: str) -> None:
        with served(backend, Limits(max_pending=3)) as (port, _, _), peer(port) as p:
            p.request(op="hello", name="ann")
            assert p.request(op="join", room="r", size=2)["ok"]
            for turn in range(3):  # the room is not playing yet: these waits stay pending
                p.send(json.dumps({"op": "wait", "room": "r", "turn": turn}).encode() + b"\n")
            busy = p.request(op="look", room="r", id=1)
            assert (busy["error"], busy["id"]) == ("busy", 1)
            assert "3 requests in progress" in busy["message"]

    def test_rooms_per_connection_are_bounded(self, backend: str) -> None:
        limits = Limits(max_rooms=3, room_burst=4, rooms_per_second=0.01)
        with served(backend, limits) as (port, _, _), peer(port) as p, peer(port) as other:
            p.request(op="hello", name="ann")
            for n in range(3):
                assert p.request(op="join", room=f"r{n}")["ok"]
            assert p.request(op="join", room="r3")["error"] == "too_many_rooms"
            assert p.request(op="leave", room="r0")["ok"]
            assert p.request(op="join", room="r3")["ok"]  # the fourth creation: the burst is spent
            assert p.request(op="leave", room="r1")["ok"]
            refused = p.request(op="join", room="r4")
            assert refused["error"] == "busy"
            assert "rooms per second" in refused["message"]
            other.request(op="hello", name="bob")
            assert other.request(op="join", room="r5")["ok"]  # another connection creates its own
            assert p.request(op="join", room="r5")["ok"]  # joining one that exists costs nothing

    def test_connections_beyond_the_cap_are_refused(self, backend: str) -> None:
        with served(backend, Limits(max_connections=2)) as (port, game, _):
            with peer(port) as a, peer(port) as b:
                assert a.canary()
                assert b.canary()
                with peer(port) as c:
                    refused = c.answer()
                    assert refused is not None
                    assert refused["error"] == "server_full"
                    assert "2 connections at most" in refused["message"]
                    assert c.answer() is None
                assert game.stats.refused == 1
            wait_until(lambda: game.stats.open == 0)
            assert_serving(port)


def slow_message(seconds: float) -> str:
    return f"a request not finished in {seconds:g} s: closing"


# -- start-up errors: one line, exit status 2 -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("program", ["game_server", "agent_server"])
class TestStartUpErrors:
    """A store or a configuration that cannot be used: one line on stderr, no traceback, status 2."""

    def test_a_store_path_that_cannot_be_opened(self, tmp_path: Path, program: str) -> None:
        (tmp_path / "store.toml").write_text('[store]\npath = "no/such/dir/x.db"\n')
        done = run_example(program, tmp_path, "--config", "store.toml")
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "error: event store failed to open the database: cannot open 'no/such/dir/x.db': unable to "
            "open database file; nothing was recorded and the state is unchanged, so the operation can "
            "be retried once the store is healthy"
        ]

    def test_a_db_that_is_a_directory(self, tmp_path: Path, program: str) -> None:
        (tmp_path / "dir.db").mkdir()
        done = run_example(program, tmp_path, "--db", "dir.db")
        assert done.returncode == 2
        [line] = done.stderr.splitlines()
        assert line.startswith("error: event store failed to open the database: cannot open 'dir.db'")

    def test_a_config_that_is_not_utf8(self, tmp_path: Path, program: str) -> None:
        (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n")
        done = run_example(program, tmp_path, "--config", "latin1.toml")
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "error: latin1.toml: not UTF-8 text (invalid continuation byte at byte 5): save it as UTF-8"
        ]

    def test_a_config_that_is_a_directory(self, tmp_path: Path, program: str) -> None:
        (tmp_path / "conf.d").mkdir()
        done = run_example(program, tmp_path, "--config", "conf.d")
        assert done.returncode == 2
        assert done.stderr.splitlines() == ["error: cannot read the configuration 'conf.d': Is a directory"]


# -- out of file descriptors ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["asyncio", "trio"])
def test_out_of_file_descriptors_it_waits_and_serves_again(backend_name: str, tmp_path: Path) -> None:
    """EMFILE from accept() under RLIMIT_NOFILE=128: the server survives, then serves once fds free."""
    limit = 128

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.game_server",
            "--bots",
            "0",
            "--backend",
            backend_name,
            "--metrics-port",
            "0",
            "--db",
            "emfile.db",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lower_limit,
    )
    held: list[socket.socket] = []
    try:
        assert process.stdout is not None
        port = 0
        for line in process.stdout:
            if line.startswith("game server:"):
                port = int(line.split()[2].rsplit(":", 1)[1])
                break
        assert port, "the server did not start"
        # Connect more clients than the server has file descriptors; each says hello when it can.
        for _ in range(limit + 40):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(s)
        time.sleep(1.0)  # the server hits EMFILE, waits, retries
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 30
        while True:  # once the fds are back (the server noticed the closes), a new client is served
            try:
                assert_serving(port)
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline, "not serving again after the fds came back"
                time.sleep(0.2)
        assert process.poll() is None
    finally:
        for s in held:
            s.close()
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert process.returncode == 0, err
    assert "accept() failed" in err
    # The whole stderr on failure: a traceback here names the thread and the line that broke.
    assert "Traceback" not in err, err
