"""runtime.MetricsExposition: the text format of prometheus_client's generate_latest, byte for byte."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, UnknownMetricFamily
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics

from runtime import MetricsExposition, SessionCrashed
from runtime._metrics_text import TextEncoder
from supervisors import Backoff, RestartPolicy, SessionSupervisor
from tests.apps.counter import Add, AddMany, Boom, Get
from tests.apps.counter import Counter as CounterSession

ESCAPINGS = (openmetrics.UNDERSCORES, openmetrics.DOTS, openmetrics.VALUES, openmetrics.ALLOWUTF8)


class Odd:
    """Families a registry may hold that the supervisor's do not: timestamps, gauge histograms, names
    outside the legacy character set, unknown types."""

    def collect(self) -> list[Metric]:
        stamped = GaugeMetricFamily("stamped", "With a timestamp.", labels=["z", "a"])
        stamped.add_metric(["2", "1"], 3.5, timestamp=1700000000.25)
        stamped.add_metric(["x", "y"], float("inf"))
        dotted = GaugeMetricFamily("odd.name", "Help with \\ and\nnewline.", labels=["la.bel"])
        dotted.add_metric(['quote " back \\ new \n é'], float("nan"))
        dotted.add_metric(["big"], 123456789.0)
        gauge_histogram = GaugeHistogramMetricFamily("queue_depth", "A gauge histogram.", labels=["q"])
        gauge_histogram.add_metric(["a"], [("1.0", 2), ("+Inf", 5)], gsum_value=7.0)
        unknown = UnknownMetricFamily("mystery", "Untyped.", labels=["k"])
        unknown.add_metric(["v"], -1e-7)
        return [stamped, dotted, gauge_histogram, unknown]


def odd_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("requests", "Requests.", ["path", "code"], registry=registry)
    counter.labels("/a", "200").inc(3)
    counter.labels('/"b"\\', "500").inc()
    Gauge("temperature", "Degrees.", registry=registry).set(-3.25)
    histogram = Histogram("latency_seconds", "Latency.", ["route"], registry=registry)
    histogram.labels("x").observe(0.3)
    Summary("sizes", "Sizes.", registry=registry).observe(1e12)
    Info("build", "Build.", registry=registry).info({"version": "1.2", "commit": "abc"})
    Enum("state", "State.", states=["up", "down"], registry=registry).state("down")
    registry.register(Odd())
    return registry


@pytest.mark.parametrize("escaping", ESCAPINGS)
def test_same_bytes_as_generate_latest_for_any_family(escaping: str) -> None:
    """Every family type, escaped labels and help, timestamps, names outside the legacy set; the
    second render reuses the kept prefixes with new values and new series."""
    registry = odd_registry()
    encoder = TextEncoder(escaping)
    assert encoder.encode(registry) == generate_latest(registry, escaping)
    Counter("late", "Registered after the first render.", ["k"], registry=registry).labels("v").inc(2)
    assert encoder.encode(registry) == generate_latest(registry, escaping)


@pytest.mark.anyio
async def test_same_bytes_as_generate_latest_for_a_supervisor() -> None:
    """The supervisor's own registry (lean histograms and counters, the scrape-time collector),
    rendered before and after more traffic, on each backend."""
    policy = RestartPolicy(backoff=Backoff(initial=0))
    encoder = MetricsExposition().choose("")[0]
    async with SessionSupervisor(restarts=policy) as sessions:
        a = await sessions.start(CounterSession, "a")
        b = await sessions.start(CounterSession, "b")
        await a.call(Add(1))
        assert encoder(sessions.registry) == generate_latest(sessions.registry)
        await a.call(AddMany((1, 2, 3)))
        with pytest.raises(SessionCrashed):
            await b.call(Boom())
        await b.call(Get())
        await b.stop()
        first = generate_latest(sessions.registry)
        assert encoder(sessions.registry) == first
        assert b"sessionvisor_message_handling_seconds_bucket" in first


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "text/plain",
        "text/plain;version=0.0.4",
        "text/plain;version=1.0.0;escaping=dots",
        "text/plain;version=1.0.0;escaping=values",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        "application/openmetrics-text;version=1.0.0;escaping=underscores",
        "application/openmetrics-text",
        "*/*",
    ],
)
def test_choose_answers_as_choose_encoder(accept: str) -> None:
    """The same content type and the same body as prometheus_client's choice, whatever is asked."""
    registry = odd_registry()
    encoder, content_type = MetricsExposition().choose(accept)
    expected_encoder, expected_type = choose_encoder(accept)
    assert content_type == expected_type
    assert encoder(registry) == expected_encoder(registry)


def test_text_format_gets_the_kept_prefixes() -> None:
    """The text format is rendered by a TextEncoder (one per escaping), OpenMetrics by prometheus_client."""
    exposition = MetricsExposition()
    plain = exposition.choose("")[0]
    assert isinstance(plain, TextEncoder)
    assert plain is exposition.choose("text/plain;version=1.0.0;escaping=underscores")[0]
    dots = exposition.choose("text/plain;version=1.0.0;escaping=dots")[0]
    assert isinstance(dots, TextEncoder)
    assert dots.escaping == openmetrics.DOTS
    assert not isinstance(exposition.choose("application/openmetrics-text;version=1.0.0")[0], TextEncoder)
