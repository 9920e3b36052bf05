"""The agent server example: the model's decisions, a conversation's life as a session (tools,
approval, limits, a crash), and the whole program run as ``python -m examples.agent_server``.

The program runs in a subprocess on each backend: it binds real ports (webhook receiver, metrics) and
posts from worker threads in real time, which trio's MockClock would jump over.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal

from examples.agent_server.conversation import MAX_QUESTION, Ask, AwaitAnswer, Conversation, Review
from examples.agent_server.model import Answer, AskApproval, CallTool, GiveUp, Seen, Toolbox, decide
from examples.agent_server.receiver import Receiver, open_receiver
from runtime import MemoryStore, SessionCrashed, SessionPaused, SessionRef, SessionStopped, Status
from supervisors import Backoff, ReaperPolicy, RestartPolicy, SessionSupervisor
from tests.examples.programs import REPO, run_example


class TestModel:
    def test_arithmetic_calls_the_calculator_then_answers(self) -> None:
        assert decide(Seen("What is 17 * 23?")) == CallTool("calculator", {"expression": "17 * 23"})
        seen = Seen("What is 17 * 23?", (("calculator", {"expression": "17 * 23"}, "391"),))
        assert decide(seen) == Answer("17 * 23 = 391")

    def test_conversion_takes_two_tools(self) -> None:
        question = "convert 10 usd to eur"
        assert decide(Seen(question)) == CallTool("exchange_rate", {"from": "USD", "to": "EUR"})
        rate = ("exchange_rate", {"from": "USD", "to": "EUR"}, "0.92")
        assert decide(Seen(question, (rate,))) == CallTool("calculator", {"expression": "10 * 0.92"})
        total = ("calculator", {"expression": "10 * 0.92"}, "9.2")
        assert decide(Seen(question, (rate, total))) == Answer("10 USD is 9.2 EUR (at 0.92).")

    def test_refunds_need_approval(self) -> None:
        question = "refund order 12"
        assert isinstance(decide(Seen(question)), AskApproval)
        assert decide(Seen(question, approval=False)) == GiveUp("the refund of order 12 was not approved")
        assert decide(Seen(question, approval=True)) == CallTool("refund", {"order": "12"})

    def test_search_never_ends(self) -> None:
        results = tuple(("search", {"page": str(n)}, "more") for n in range(50))
        assert isinstance(decide(Seen("research this", results)), CallTool)

    def test_out_of_scope_is_answered(self) -> None:
        assert isinstance(decide(Seen("Tell me a joke")), Answer)


class Quick(Conversation):
    """Tools without latency, and an outage record of its own."""

    toolbox = Toolbox(latency=0)


async def call(ref: SessionRef, message: object) -> dict[str, Any]:
    answer = await ref.call(message)
    assert isinstance(answer, dict)
    return answer


@pytest.mark.anyio
class TestConversation:
    @pytest.fixture
    async def sessions(self) -> AsyncIterator[SessionSupervisor]:
        Quick.toolbox = Toolbox(latency=0)
        async with SessionSupervisor(
            store=MemoryStore(),
            reaper=ReaperPolicy(max_messages=8),
            restarts=RestartPolicy(backoff=Backoff(initial=0)),
        ) as sessions:
            yield sessions

    async def test_an_answer_completes_it_with_every_message_recorded(
        self, sessions: SessionSupervisor
    ) -> None:
        ref = await sessions.start(Quick, "c", metadata={"user": "ann", "channel": "web"})
        answer = await call(ref, Ask("What is 6 * 7?"))
        assert answer == {"status": "answered", "answer": "6 * 7 = 42", "iterations": 2}
        assert ref.status is Status.COMPLETED
        log = await sessions.store.read("c")
        assert [e.type for e in log] == [
            "agent.MessageAdded",
            "agent.ToolCalled",
            "agent.MessageAdded",
            "sessionvisor.StatusChanged",
        ]
        first = json.loads(log[0].data)
        assert (first["role"], first["content"]) == ("user", "What is 6 * 7?")
        assert first["timestamp"] > 0
        assert json.loads(log[-1].data)["result"] == {"answer": "6 * 7 = 42", "iterations": 2}

    async def test_iterations_are_bounded_by_max_messages(self, sessions: SessionSupervisor) -> None:
        """A loop that never answers ends as TIMED_OUT after max_messages (its Ask, then 7 steps)."""
        ref = await sessions.start(Quick, "loop")
        with pytest.raises(SessionStopped, match="max_messages") as info:
            await ref.call(Ask("keep searching"))
        assert info.value.status is Status.TIMED_OUT
        log = await sessions.store.read("loop")
        assert [e.type for e in log].count("agent.ToolCalled") == 7

    async def test_approval_pauses_then_resumes(self, sessions: SessionSupervisor) -> None:
        ref = await sessions.start(Quick, "r")
        answer = await call(ref, Ask("refund order 5"))
        assert answer["status"] == "needs_approval"
        await ref.pause("waiting for approval")
        with pytest.raises(SessionPaused):
            await ref.call(Ask("any news?"))
        await ref.resume()
        assert (await call(ref, Review(True, "ops")))["answer"] == "Done: order 5 refunded."
        assert ref.status is Status.COMPLETED

    async def test_a_denial_fails_it(self, sessions: SessionSupervisor) -> None:
        ref = await sessions.start(Quick, "d")
        await call(ref, Ask("refund order 9999"))
        assert (await call(ref, Review(False, "ops")))["status"] == "gave_up"
        assert ref.status is Status.FAILED

    async def test_a_tool_outage_crashes_it_and_the_log_carries_on(self, sessions: SessionSupervisor) -> None:
        """The crash fails the Ask; the restarted conversation finishes from its log."""
        ref = await sessions.start(Quick, "s")
        with pytest.raises(SessionCrashed):
            await ref.call(Ask("stock price of ACME"))
        answer = await call(ref, AwaitAnswer())
        assert answer["status"] == "answered"
        assert (await sessions.stats()).restarts == 1
        log = await sessions.store.read("s")
        assert [e.type for e in log].count("agent.MessageAdded") == 2  # the question was not asked twice

    async def test_metadata_filters_and_stats(self, sessions: SessionSupervisor) -> None:
        for n, channel in enumerate(["web", "slack", "web"]):
            ref = await sessions.start(Quick, f"m{n}", metadata={"user": f"u{n}", "channel": channel})
            await ref.call(Ask("Tell me a joke"))
        web = await sessions.list(metadata={"channel": "web"})
        assert [r.id for r in web] == ["m0", "m2"]
        assert (await sessions.stats()).store.by_status == {"completed": 3}


def run_program(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_example("agent_server", tmp_path, *args)


@pytest.mark.slow
@pytest.mark.anyio
class TestHostileInput:
    """Whatever a user or a webhook sender sends is refused with a reason, never a crash (issue 17)."""

    @pytest.fixture
    async def sessions(self) -> AsyncIterator[SessionSupervisor]:
        Quick.toolbox = Toolbox(latency=0)
        async with SessionSupervisor(store=MemoryStore()) as sessions:
            yield sessions

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("x" * (MAX_QUESTION + 1), f"is {MAX_QUESTION} characters at most, got {MAX_QUESTION + 1}"),
            ("   ", "is not empty"),
            (["what", "is"], "is text, not list"),
            ("why\ud800", "is valid Unicode (a lone surrogate is not)"),
            ("a\x00b", "has no NUL character"),
        ],
        ids=["long", "blank", "list", "surrogate", "nul"],
    )
    async def test_bad_questions_are_refused_unrecorded(
        self, sessions: SessionSupervisor, text: object, problem: str
    ) -> None:
        ref = await sessions.start(Quick, "c")
        answer = await call(ref, Ask(text))  # type: ignore[arg-type]
        assert answer == {"status": "rejected", "field": "text", "message": f"a question {problem}"}
        assert await sessions.store.read("c") == []
        assert ref.status is Status.RUNNING
        assert (await call(ref, Ask("What is 6 * 7?")))["answer"] == "6 * 7 = 42"

    async def test_a_huge_order_number_is_not_an_order(self, sessions: SessionSupervisor) -> None:
        """A 5,000-digit "order number" is no number to int(): the agent asks which order is meant."""
        ref = await sessions.start(Quick, "c")
        answer = await call(ref, Ask("refund order " + "9" * 3000))
        assert answer["answer"] == "Which order should I refund? Tell me its number."

    async def test_bad_reviews_and_unknown_calls_are_answered(self, sessions: SessionSupervisor) -> None:
        ref = await sessions.start(Quick, "c")
        assert (await call(ref, Review("yes", "ops")))["field"] == "approved"  # type: ignore[arg-type]
        assert (await call(ref, Review(True, "x" * 100)))["field"] == "reviewer"
        assert await call(ref, "hello") == {"status": "error", "message": "unexpected call str"}
        assert ref.status is Status.RUNNING
        assert (await sessions.stats()).restarts == 0


class TestReceiver:
    """The webhook receiver answers 4xx to what is not a JSON object of a sane size, and keeps nothing."""

    @pytest.fixture
    def receiver(self) -> Iterator[tuple[Receiver, int]]:
        with start_blocking_portal("asyncio") as portal:
            with portal.wrap_async_context_manager(open_receiver()) as receiver:
                yield receiver, int(receiver.url.rsplit(":", 1)[1].split("/")[0])

    @staticmethod
    def post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.putrequest("POST", "/hooks/sessions", skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    @pytest.mark.parametrize(
        ("body", "headers", "status", "says"),
        [
            (b"{}", {}, 411, "send a Content-Length"),
            (b"{}", {"Content-Length": "-2"}, 411, "send a Content-Length"),
            (b"{}", {"Content-Length": "9" * 5000}, 411, "send a Content-Length"),
            (b"", {"Content-Length": str(10**9)}, 413, "65536 bytes at most"),
            (b'{"n":NaN}', {"Content-Length": "9"}, 400, "NaN is not standard JSON"),
            (b"[" * 5000, {"Content-Length": "5000"}, 400, "not standard JSON"),
            (b"\xff\xfe", {"Content-Length": "2"}, 400, "not standard JSON"),
            (b"[1]", {"Content-Length": "3"}, 400, "a JSON object, not list"),
        ],
        ids=["none", "negative", "huge-header", "too-large", "nan", "deep", "not-utf8", "list"],
    )
    def test_refused(
        self, receiver: tuple[Receiver, int], body: bytes, headers: dict[str, str], status: int, says: str
    ) -> None:
        kept, port = receiver
        got, text = self.post(port, body, headers)
        assert (got, says in text) == (status, True), text
        assert kept.received() == []
        assert self.post(port, b'{"ok":1}', {"Content-Length": "8"})[0] == 204
        assert kept.received() == [{"ok": 1}]

    @pytest.mark.slow
    def test_threads_are_capped(self, receiver: tuple[Receiver, int]) -> None:
        """Silent clients hold a thread each up to the cap; one more is answered 503, at once."""
        _, port = receiver
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as one_more:
                assert one_more.recv(100).startswith(b"HTTP/1.0 503 Service Unavailable")
        finally:
            for sock in silent:
                sock.close()
        deadline = time.monotonic() + 10
        while True:  # the silent ones' threads see their clients go, and end
            status = self.post(port, b"{}", {"Content-Length": "2"})[0]
            if status == 204 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 204


@pytest.mark.slow
class TestProgram:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_runs_and_reports(self, tmp_path: Path, backend: str) -> None:
        done = run_program(tmp_path, "--conversations", "10", "--paused-ttl", "1.5", "--backend", backend)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "success rate 60% (6 of 10 ended conversations completed" in out
        assert "by status    1 abandoned, 6 completed, 2 failed, 1 timed_out" in out
        assert "1 restart(s) after a tool outage" in out
        assert "1 approved, 1 denied, 1 never answered" in out
        assert "notifier: 25 delivered, 0 failed, 0 dropped" in out
        assert "webhooks     25 received" in out
        assert "Traceback" not in done.stderr

    def test_with_the_example_config(self, tmp_path: Path) -> None:
        config = str(REPO / "examples" / "sessionvisor.toml")
        done = run_program(tmp_path, "--conversations", "10", "--config", config, "--paused-ttl", "1.5")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "max_messages 12, paused_ttl 1.5" in done.stdout
        assert (tmp_path / "sessionvisor-agent.db").exists()
