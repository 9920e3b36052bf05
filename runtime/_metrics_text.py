"""The Prometheus text format of a registry, as ``prometheus_client.generate_latest`` writes it, cheaper.

``generate_latest`` escapes and sorts every sample's labels and checks every name against the legacy
character set on each scrape: about two thirds of a render of the supervisor's ~225 lines. The
series are the same from one scrape to the next, so :class:`TextEncoder` keeps what goes before each
value (the name and the label string) and each family's ``# HELP``/``# TYPE`` header, computed with
prometheus_client's own escaping functions, and only formats the values. The bytes are those of
``generate_latest`` (``tests/test_metrics_text.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Protocol, cast, final

from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

__all__ = ["MetricsExposition", "TextEncoder"]

_MAX_KEPT = 20_000
"""Series prefixes (and family headers) kept before the cache starts over: series come and go."""

_float_text = cast("Callable[[float], str]", floatToGoString)
"""A value as Go writes it (``+Inf``, ``1e+06``): prometheus_client's own, so values match."""

_OPENMETRICS_SUFFIXES = ("_created", "_gsum", "_gcount")

_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}


class _Collecting(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def _help(name: str, documentation: str, escaping: str) -> str:
    text = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {openmetrics.escape_metric_name(name, escaping)} {text}\n"


def _escape_value(value: str) -> str:
    """A label value as the text format writes it (every UTF-8 character kept)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@final
class TextEncoder:
    """``generate_latest(registry, escaping)`` with each series' text before its value kept.

    One encoder per endpoint; safe to call from several threads (a cache entry is computed again at
    worst). Escaping ``allow-utf-8`` (a name outside the legacy set is quoted into the braces) is
    handed to ``generate_latest`` itself.
    """

    def __init__(self, escaping: str = openmetrics.UNDERSCORES) -> None:
        self.escaping = escaping
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._heads: dict[tuple[str, str, str], tuple[str, tuple[str, ...]]] = {}

    def __call__(self, registry: _Collecting) -> bytes:
        return self.encode(registry)

    def encode(self, registry: _Collecting) -> bytes:
        """The registry's samples in the Prometheus text format (version 0.0.4), UTF-8."""
        escaping = self.escaping
        if escaping == openmetrics.ALLOWUTF8:
            return generate_latest(registry, escaping)
        prefixes, heads = self._prefixes, self._heads
        if len(prefixes) > _MAX_KEPT or len(heads) > _MAX_KEPT:
            prefixes.clear()
            heads.clear()
        output: list[str] = []
        append = output.append
        for metric in registry.collect():
            try:
                name, documentation = metric.name, metric.documentation
                key = (name, metric.type, documentation)
                head = heads.get(key)
                if head is None:
                    head = heads[key] = self._head(name, metric.type, documentation)
                append(head[0])
                extra_names = head[1]
                extra: dict[str, list[str]] | None = None
                for s in metric.samples:
                    sample_name = s.name
                    series = (sample_name, tuple(s.labels.items()))
                    prefix = prefixes.get(series)
                    if prefix is None:
                        prefix = prefixes[series] = self._prefix(sample_name, s.labels)
                    if s.timestamp is None:
                        line = f"{prefix}{_float_text(s.value)}\n"
                    else:
                        line = f"{prefix}{_float_text(s.value)} {int(float(s.timestamp) * 1000):d}\n"
                    if sample_name in extra_names:
                        if extra is None:
                            extra = {}
                        extra.setdefault(sample_name[len(name) :], []).append(line)
                    else:
                        append(line)
            except Exception as exception:  # as generate_latest: say which metric
                exception.args = (exception.args or ("",)) + (metric,)
                raise
            if extra is not None:
                for suffix, lines in sorted(extra.items()):
                    append(_help(name + suffix, documentation, escaping))
                    append(f"# TYPE {openmetrics.escape_metric_name(name + suffix, escaping)} gauge\n")
                    output.extend(lines)
        return "".join(output).encode("utf-8")

    def _head(self, name: str, mtype: str, documentation: str) -> tuple[str, tuple[str, ...]]:
        """A family's ``# HELP`` and ``# TYPE`` lines, and the names of its OpenMetrics-only samples."""
        shown = name + "_total" if mtype == "counter" else name + "_info" if mtype == "info" else name
        mtype = _TYPES.get(mtype, mtype)
        escaped = openmetrics.escape_metric_name(shown, self.escaping)
        text = _help(shown, documentation, self.escaping) + f"# TYPE {escaped} {mtype}\n"
        return text, tuple(name + suffix for suffix in _OPENMETRICS_SUFFIXES)

    def _prefix(self, name: str, labels: dict[str, str]) -> str:
        """What comes before a sample's value: its name, its labels sorted and escaped, a space."""
        escaping = self.escaping
        label_text = ",".join(
            f'{openmetrics.escape_label_name(k, escaping)}="{_escape_value(v)}"'
            for k, v in sorted(labels.items())
        )
        braces = f"{{{label_text}}}" if label_text else ""
        return f"{openmetrics.escape_metric_name(name, escaping)}{braces} "


@final
class MetricsExposition:
    """``prometheus_client``'s ``choose_encoder``, with :class:`TextEncoder` for the text format.

    The OpenMetrics format (asked for in ``Accept``) is left to prometheus_client.
    """

    def __init__(self) -> None:
        self._text = {
            escaping: TextEncoder(escaping)
            for escaping in (openmetrics.UNDERSCORES, openmetrics.DOTS, openmetrics.VALUES)
        }

    def choose(self, accept: str) -> tuple[Callable[[_Collecting], bytes], str]:
        """The encoder and content type for an ``Accept`` header, as ``choose_encoder`` answers."""
        encoder, content_type = choose_encoder(accept)
        if encoder is generate_latest:
            return self._text[openmetrics.UNDERSCORES], content_type
        if isinstance(encoder, partial) and encoder.func is generate_latest and not encoder.args:
            lean = self._text.get(encoder.keywords.get("escaping", openmetrics.UNDERSCORES))
            if lean is not None and set(encoder.keywords) <= {"escaping"}:
                return lean, content_type
        return encoder, content_type
