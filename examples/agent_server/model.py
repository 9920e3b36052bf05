"""The "model" and its tools: a deterministic local stand-in for an LLM (no network, no randomness).

``decide`` reads the conversation so far (the user's question, the tool results since) and picks the
next action: call a tool, ask a human for approval, answer, or give up. The same conversation always
gets the same decisions, which is what replaying a log needs from anything that is *recorded*; the
model itself is never replayed: its decisions are, as events.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping

import anyio
import attrs

__all__ = ["Answer", "AskApproval", "CallTool", "GiveUp", "Toolbox", "ToolOutage", "decide"]


@attrs.frozen
class CallTool:
    tool: str
    arguments: Mapping[str, str]


@attrs.frozen
class AskApproval:
    tool: str
    arguments: Mapping[str, str]
    reason: str


@attrs.frozen
class Answer:
    text: str


@attrs.frozen
class GiveUp:
    reason: str


Action = CallTool | AskApproval | Answer | GiveUp


@attrs.frozen
class Seen:
    """What the model sees: the question, the tool results since it was asked, the approvals."""

    question: str
    results: tuple[tuple[str, Mapping[str, str], str], ...] = ()
    """(tool, arguments, output) of each call since the question, in order."""
    approval: bool | None = None
    """The reviewer's decision on the pending request, if any was asked and answered."""


_ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/x])\s*(-?\d+(?:\.\d+)?)")
_CONVERT = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]{3})\s+(?:to|in)\s+([a-z]{3})")
_ORDER = re.compile(r"order\s+#?(\d{1,12})\b")  # an order number, not a 5,000-digit int() to choke on
_TICKER = re.compile(r"\b([A-Z]{2,5})\b")
_CITY = re.compile(r"\bin\s+([A-Z][a-z]+)")


def _result(seen: Seen, tool: str) -> str | None:
    for name, _, output in reversed(seen.results):
        if name == tool:
            return output
    return None


def decide(seen: Seen) -> Action:
    """The next action for a conversation that has seen ``seen``."""
    question = seen.question
    text = question.lower()
    if "search" in text or "research" in text:
        # The never-ending task: every page says there is more. Only max_messages stops it.
        return CallTool("search", {"query": question, "page": str(len(seen.results) + 1)})
    if "refund" in text:
        match = _ORDER.search(text)
        if match is None:
            return Answer("Which order should I refund? Tell me its number.")
        order = match.group(1)
        if seen.approval is None:
            return AskApproval(
                "refund", {"order": order}, f"refunding order {order} needs a human's approval"
            )
        if not seen.approval:
            return GiveUp(f"the refund of order {order} was not approved")
        done = _result(seen, "refund")
        if done is None:
            return CallTool("refund", {"order": order})
        return Answer(f"Done: {done}.")
    if match := _CONVERT.search(text):
        amount, source, target = match.groups()
        rate = _result(seen, "exchange_rate")
        if rate is None:
            return CallTool("exchange_rate", {"from": source.upper(), "to": target.upper()})
        total = _result(seen, "calculator")
        if total is None:
            return CallTool("calculator", {"expression": f"{amount} * {rate}"})
        return Answer(f"{amount} {source.upper()} is {total} {target.upper()} (at {rate}).")
    if match := _ARITHMETIC.search(text):
        expression = " ".join(match.groups()).replace("x", "*")
        value = _result(seen, "calculator")
        if value is None:
            return CallTool("calculator", {"expression": expression})
        return Answer(f"{expression} = {value}")
    if "weather" in text:
        city_match = _CITY.search(question)
        if city_match is None:
            return Answer("Which city?")
        report = _result(seen, "weather")
        if report is None:
            return CallTool("weather", {"city": city_match.group(1)})
        return Answer(f"In {city_match.group(1)}: {report}.")
    if "stock" in text or "price of" in text:
        ticker_match = _TICKER.search(question)
        if ticker_match is None:
            return Answer("Which ticker?")
        quote = _result(seen, "stock_price")
        if quote is None:
            return CallTool("stock_price", {"ticker": ticker_match.group(1)})
        if quote.startswith("error"):
            return GiveUp(quote)
        return Answer(f"{ticker_match.group(1)} trades at {quote}.")
    return Answer("I can do arithmetic, weather, currency conversion, stock prices and refunds.")


class ToolOutage(RuntimeError):
    """A tool's service failed (the conversation crashes, restarts from its log and tries again)."""


_RATES = {("USD", "EUR"): "0.92", ("EUR", "USD"): "1.09", ("GBP", "EUR"): "1.17", ("USD", "JPY"): "151.2"}
_SKIES = ("sunny", "cloudy", "rainy", "windy", "snowing")


class Toolbox:
    """Local, deterministic tools. ``flaky`` tickers make ``stock_price`` fail once per conversation."""

    def __init__(self, *, flaky: frozenset[str] = frozenset({"ACME"}), latency: float = 0.005) -> None:
        self.flaky = flaky
        self.latency = latency
        self.outages: set[str] = set()
        """Conversations whose flaky call has failed already (the next attempt succeeds)."""

    async def run(self, conversation: str, tool: str, arguments: Mapping[str, str]) -> str:
        await anyio.sleep(self.latency)  # a tool call takes time, like any I/O
        match tool:
            case "calculator":
                return _calculate(arguments["expression"])
            case "weather":
                city = arguments["city"]
                seed = zlib.crc32(city.encode())
                return f"{_SKIES[seed % len(_SKIES)]}, {seed % 30 - 5} °C"
            case "exchange_rate":
                return _RATES.get((arguments["from"], arguments["to"]), "1.00")
            case "stock_price":
                ticker = arguments["ticker"]
                if ticker in self.flaky and conversation not in self.outages:
                    self.outages.add(conversation)
                    raise ToolOutage(f"stock service timed out looking up {ticker}")
                if ticker == "XYZ":
                    return f"error: no such ticker {ticker}"
                return f"{zlib.crc32(ticker.encode()) % 500 + 10}.00 USD"
            case "refund":
                return f"order {arguments['order']} refunded"
            case "search":
                page = int(arguments["page"])
                return f"page {page}: nothing conclusive; more on page {page + 1}"
        return f"error: no tool {tool!r}"


def _calculate(expression: str) -> str:
    a, op, b = expression.split()
    x, y = float(a), float(b)
    if op == "/" and y == 0:
        return "undefined (division by zero)"
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else 0.0}[op]
    return f"{value:g}" if abs(value) < 1e15 else f"{value:.6e}"
