"""``python -m examples.agent_server``: AI-agent conversations as sessions, then a report.

Users on three channels (web, slack, email) ask an agent questions; each conversation is a session
on the embedded SQLite store (./sessionvisor-agent.db, recreated each run unless ``--db`` names a
file to keep). The agent (a deterministic local stand-in for a model) calls tools, asks a human to
approve refunds (the conversation is paused meanwhile), answers (``complete``) or gives up (``fail``);
one question loops until ``ReaperPolicy(max_messages=...)`` ends it as ``TIMED_OUT``, one approval
never comes (``paused_ttl`` abandons it), one tool fails once (the conversation crashes and resumes
from its log). Every status change is POSTed by ``supervisors.WebhookNotifier`` to a local receiver.
The report uses ``sessions.list(metadata=...)`` and ``sessions.stats()``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import anyio
import attrs

from runtime import (
    SessionCrashed,
    SessionPaused,
    SessionRef,
    SessionStopped,
    Status,
    serve_metrics,
)
from supervisors import (
    Backoff,
    Config,
    ReaperPolicy,
    RestartPolicy,
    SessionSupervisor,
    WebhookNotifier,
)

from .._common import load_or_exit, open_store, store_opens
from .conversation import Ask, AwaitAnswer, Conversation, Review
from .model import ToolOutage
from .receiver import open_receiver

DEFAULT_DB = "sessionvisor-agent.db"
DEFAULT_MAX_MESSAGES = 12

# Without --config: approvals wait 3 s at most (and max_messages is DEFAULT_MAX_MESSAGES).
DEFAULT_CONFIG = Config(
    reaper=ReaperPolicy(paused_ttl=3, terminal_ttl=60),
    restarts=RestartPolicy(max_restarts=3, within=10, backoff=Backoff(initial=0.01, maximum=0.5)),
)

SCRIPTS: tuple[tuple[str, str, str], ...] = (
    ("ann", "web", "What is 17 * 23?"),
    ("bob", "slack", "What's the weather in Paris?"),
    ("cho", "email", "Please convert 250 usd to eur"),
    ("dev", "web", "Please refund order 1042, it arrived broken"),
    ("eve", "slack", "Refund order 9001 right now"),
    ("fay", "web", "What is the stock price of ACME?"),
    ("gus", "email", "Keep searching until you find the meaning of life"),
    ("hal", "slack", "What is the stock price of XYZ?"),
    ("ivy", "web", "I want a refund for order 1077"),
    ("jon", "email", "Tell me a joke"),
)
"""(user, channel, question): what happens to each is in the module's docstring and the README."""


@attrs.frozen(kw_only=True)
class Options:
    conversations: int
    config: str | None
    db: str | None
    new_db: bool
    metrics_port: int | None
    max_messages: int | None
    paused_ttl: float | None
    backend: Literal["asyncio", "trio"]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m examples.agent_server",
        description="AI-agent conversations as sessions: tools, approvals, limits, webhooks.",
    )
    parser.add_argument("--conversations", type=int, default=2 * len(SCRIPTS), help="how many (default 20)")
    parser.add_argument("--config", help="a sessionvisor TOML file (examples/sessionvisor.toml)")
    parser.add_argument("--db", help=f"SQLite file to use (default: {DEFAULT_DB}); an existing one is kept")
    parser.add_argument("--new-db", action="store_true", help="remove the SQLite file first: start afresh")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics (default 9464; 0: any)")
    parser.add_argument(
        "--max-messages",
        type=int,
        help=f"messages (iterations) per conversation before TIMED_OUT (default: the config's, else "
        f"{DEFAULT_MAX_MESSAGES})",
    )
    parser.add_argument(
        "--paused-ttl",
        type=float,
        help="seconds a conversation may wait for approval (default: the config's, else 3)",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    ns = parser.parse_args(argv)
    if ns.conversations < 1 or (ns.max_messages is not None and ns.max_messages < 1):
        parser.error("--conversations and --max-messages must be >= 1")
    if ns.paused_ttl is not None and ns.paused_ttl <= 0:
        parser.error("--paused-ttl must be > 0")
    return Options(
        conversations=ns.conversations,
        config=ns.config,
        db=ns.db,
        new_db=ns.new_db,
        metrics_port=ns.metrics_port,
        max_messages=ns.max_messages,
        paused_ttl=ns.paused_ttl,
        backend=ns.backend,
    )


@attrs.define
class Desk:
    """The humans: a reviewer who approves refunds (denies large orders; is away for order 1077)."""

    think: float = 0.2
    reviews: Counter[str] = attrs.field(factory=Counter)

    async def review(self, arguments: Mapping[str, object]) -> bool | None:
        await anyio.sleep(self.think)
        order = int(str(arguments.get("order", "0")))
        if order == 1077:
            self.reviews["never answered"] += 1
            return None
        approved = order < 9000
        self.reviews["approved" if approved else "denied"] += 1
        return approved


@attrs.define
class Tally:
    crashes_survived: int = 0
    paused_refusals: int = 0


async def ask(ref: SessionRef, message: object, tally: Tally) -> dict[str, object]:
    """``ref.call(message)``; after a crash, wait for the answer the restarted conversation gives."""
    for _ in range(5):
        try:
            answer = await ref.call(message, timeout=10)
        except SessionCrashed:
            tally.crashes_survived += 1
            message = AwaitAnswer()  # the question is in the log: do not ask it twice
            continue
        assert isinstance(answer, dict)
        return answer
    raise RuntimeError(f"conversation {ref.id} keeps crashing")


async def converse(sessions: SessionSupervisor, number: int, run_id: str, desk: Desk, tally: Tally) -> None:
    user, channel, question = SCRIPTS[number % len(SCRIPTS)]
    if number >= len(SCRIPTS):
        user = f"{user}{number // len(SCRIPTS) + 1}"
    await anyio.sleep(number * 0.02)
    ref = await sessions.start(
        Conversation, f"{run_id}-c{number:03}", metadata={"user": user, "channel": channel, "run": run_id}
    )
    try:
        answer = await ask(ref, Ask(question), tally)
        if answer.get("status") == "needs_approval":
            await ref.pause(f"waiting for approval: {answer['reason']}")
            try:
                await ref.call(Ask("Any news?"))
            except SessionPaused:
                tally.paused_refusals += 1  # a paused conversation takes no message
            arguments = answer.get("arguments")
            decision = await desk.review(arguments if isinstance(arguments, dict) else {})
            if decision is None:
                return  # nobody answers: the reaper abandons it after paused_ttl
            await ref.resume()
            await ask(ref, Review(decision, reviewer="ops"), tally)
    except SessionStopped:
        pass  # timed out (max_messages), abandoned...: the report reads the outcome from the store


def _iterations(events: Sequence[tuple[str, str]]) -> int:
    count = 0
    for kind, data in events:
        if kind in ("agent.ToolCalled", "agent.ApprovalRequested"):
            count += 1
        elif kind == "agent.MessageAdded" and json.loads(data)["role"] == "assistant":
            count += 1
    return count


async def report(sessions: SessionSupervisor, run_id: str, tally: Tally, desk: Desk) -> None:
    """Every conversation of this run, by channel; success rate and iterations; crashes survived."""
    print()
    print(f"{'conversation':<16}{'user':<7}{'channel':<8}{'status':<11}{'iter':>4}  question -> last message")
    iterations: dict[str, int] = {}
    for record in await sessions.list(metadata={"run": run_id}):
        log = await sessions.store.read(record.id)
        iterations[record.id] = n = _iterations([(e.type, e.data) for e in log])
        said = [json.loads(e.data) for e in log if e.type == "agent.MessageAdded"]
        first = said[0]["content"] if said else ""
        last = said[-1]["content"] if len(said) > 1 else f"({record.status.value}, no answer)"
        print(
            f"{record.id.split('-')[-1]:<16}{record.metadata['user']:<7}{record.metadata['channel']:<8}"
            f"{record.status.value:<11}{n:>4}  {first[:40]!r} -> {last[:48]!r}"
        )
    print()
    print("== summary ==")
    for channel in ("web", "slack", "email"):
        records = await sessions.list(metadata={"run": run_id, "channel": channel})
        statuses = Counter(r.status.value for r in records)
        print(f"channel {channel:<6} {len(records):3} conversations: {_counts(statuses)}")
    stats = await sessions.stats()
    by_status = stats.store.by_status
    ended = sum(n for s, n in by_status.items() if Status(s).terminal)
    succeeded = by_status.get(Status.COMPLETED.value, 0)
    rate = succeeded / ended if ended else 0.0
    mean = sum(iterations.values()) / len(iterations) if iterations else 0.0
    print(
        f"success rate {rate:.0%} ({succeeded} of {ended} ended conversations completed; sessions.stats()), "
        f"average iterations {mean:.1f}"
    )
    print(f"by status    {_counts(Counter(by_status))}")
    print(
        f"crashes      {stats.restarts} restart(s) after a tool outage; {tally.crashes_survived} "
        f"answer(s) came from a restarted conversation; {stats.quarantined} quarantined"
    )
    print(
        f"approvals    {_counts(desk.reviews)}; {tally.paused_refusals} messages refused while paused "
        f"(SessionPaused)"
    )


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {key}" for key, n in sorted(counter.items())) or "none"


async def main(options: Options, config: Config) -> int:
    run_id = f"{time.strftime('%H%M%S')}-{secrets.token_hex(2)}"
    store, path = open_store(options.db, config, DEFAULT_DB, new=options.new_db)
    if not await store_opens(path, config):
        return 2
    max_messages = options.max_messages or config.reaper.max_messages or DEFAULT_MAX_MESSAGES
    paused_ttl = options.paused_ttl or config.reaper.paused_ttl
    reaper = attrs.evolve(config.reaper, max_messages=max_messages, paused_ttl=paused_ttl)
    sessions = config.session_supervisor(session_types=[Conversation], store=store, reaper=reaper)
    desk, tally = Desk(), Tally()
    print(
        f"sessionvisor agent server on {options.backend}; store {path or 'in memory'}; run {run_id}; "
        f"max_messages {max_messages}, paused_ttl {reaper.paused_ttl}"
    )
    async with open_receiver() as receiver:
        print(f"webhooks: {receiver.url}")
        notifier = WebhookNotifier(receiver.url)
        async with anyio.create_task_group() as tg, sessions, contextlib.AsyncExitStack() as stack:
            if config.metrics.enabled:
                port = config.metrics.port if options.metrics_port is None else options.metrics_port
                try:
                    server = await stack.enter_async_context(
                        serve_metrics(sessions.registry, config.metrics.host, port)
                    )
                except OSError as exc:
                    # One line, on stderr, naming the address and the cause once.
                    cause = os.strerror(exc.errno) if exc.errno else str(exc)
                    print(
                        f"error: cannot serve metrics on {config.metrics.host}:{port} ({cause}); "
                        "--metrics-port 0 picks a free port",
                        file=sys.stderr,
                    )
                    return 2
                print(f"metrics: {server.url}")
            await tg.start(notifier.run, sessions)
            async with sessions.lifecycle() as feed:
                async with anyio.create_task_group() as users:
                    for number in range(options.conversations):
                        users.start_soon(converse, sessions, number, run_id, desk, tally)
                # A conversation nobody approves stays paused until paused_ttl abandons it.
                paused = {r.id for r in await sessions.list(status=Status.PAUSED, metadata={"run": run_id})}
                with anyio.move_on_after((reaper.paused_ttl or 0) + 2):
                    async for change in feed:
                        if paused and change.status.terminal:
                            paused.discard(change.session_id)
                        if not paused:
                            break
            await report(sessions, run_id, tally, desk)
        # Leaving the supervisor ended the lifecycle feed: the notifier has sent what was queued.
        hooks = Counter(str(e.get("status")) for e in receiver.received())
        sent = notifier.statistics()
        print(f"webhooks     {sum(hooks.values())} received, by new status: {_counts(hooks)}")
        print(
            f"             notifier: {sent.delivered} delivered, {sent.failed} failed, {sent.dropped} dropped"
        )
    return 0


def setup(argv: Sequence[str] | None = None) -> tuple[Options, Config]:
    """Parse the command line, read the configuration (exit 2 if bad), set up logging."""
    options = parse_args(argv)
    return options, load_or_exit(options.config, DEFAULT_CONFIG, ToolOutage)


if __name__ == "__main__":
    options, config = setup()
    sys.exit(anyio.run(main, options, config, backend=options.backend))
