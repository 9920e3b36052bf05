"""The admin endpoint's ASGI application: ``/metrics`` and read-only JSON about a supervisor's sessions.

Routing, query parsing and JSON rendering live here; :mod:`._admin` serves the application (with
hypercorn) and owns the sockets, TLS and limits. Every route is a ``GET`` (``HEAD`` too); answers are
JSON, errors included: ``{"error": "bad_request", "parameter": "limit", "message": "..."}``. The
documented shapes are in docs/admin.md.

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import json
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import attrs
from cattrs.preconf.json import make_converter
from prometheus_client import CollectorRegistry

from runtime import (
    Inspection,
    InvalidSessionId,
    MetricsExposition,
    Outcomes,
    SessionNotFound,
    SessionRecord,
    Status,
    TransitionRecord,
    check_session_id,
)

if TYPE_CHECKING:
    from ._sessions import SessionSupervisor

__all__ = ["AdminApp", "BadParameter"]

logger = logging.getLogger("supervisors.admin")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_QUERY_FIELDS: Final = 64
MAX_ID_LENGTH: Final = 1024

_SORTS: Final = {
    "created_at": ("created_at", False),
    "-created_at": ("created_at", True),
    "updated_at": ("updated_at", False),
    "-updated_at": ("updated_at", True),
}
_TIME_BOUNDS: Final = ("created_after", "created_before", "updated_after", "updated_before")
_LIST_PARAMETERS: Final = frozenset({"status", "type", "sort", "limit", "offset", *_TIME_BOUNDS})

_converter = make_converter()


class BadParameter(ValueError):
    """A query parameter's value is not what its route takes: answered with 400, naming it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@final
class _Answer(Exception):
    """An error answer, raised from deep in a route: status and JSON body."""

    def __init__(
        self, status: int, body: Mapping[str, object], headers: tuple[tuple[bytes, bytes], ...] = ()
    ):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


# -- JSON shapes ------------------------------------------------------------------------------------


def jsonable(value: object) -> object:
    """``value`` as plain JSON data: attrs classes and dataclasses unstructured, the rest by ``repr``."""
    try:
        plain = _converter.unstructure(value)
        json.dumps(plain, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return plain


def record_json(record: SessionRecord) -> dict[str, object]:
    """A session's index entry, as ``/sessions`` lists it."""
    return {
        "id": record.id,
        "type": record.type,
        "status": record.status.value,
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "metadata": jsonable(dict(record.metadata)),
    }


def transition_json(record: TransitionRecord) -> dict[str, object]:
    data = attrs.asdict(record)
    data["status_before"] = record.status_before.value
    data["status_after"] = record.status_after.value
    return data


def inspection_json(view: Inspection) -> dict[str, object]:
    """An :class:`Inspection`, as ``/sessions/{id}`` answers it."""
    return {
        "id": view.id,
        "type": view.type,
        "status": view.status.value,
        "status_reason": None if view.status_reason is None else jsonable(view.status_reason),
        "health": view.health.value,
        "state": jsonable(view.state),
        "label": view.label,
        "possible_transitions": list(view.possible_transitions),
        "version": view.version,
        "active": view.active,
        "mailbox_depth": view.mailbox_depth,
        "messages": view.messages,
        "restarts": view.restarts,
        "time_in_state": view.time_in_state,
        "age": view.age,
        "idle_for": view.idle_for,
        "recent_transitions": [transition_json(t) for t in view.recent_transitions],
    }


def outcomes_json(outcomes: Outcomes) -> dict[str, object]:
    data = attrs.asdict(outcomes)
    data["by_status"] = dict(outcomes.by_status)
    return data


# -- query parameters -------------------------------------------------------------------------------


def _int(parameter: str, text: str, *, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(parameter, f"{text[:40]!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and at most {high}"
        raise BadParameter(parameter, f"{value} is out of range: give at least {low}{upper}")
    return value


def parse_time(parameter: str, text: str) -> float:
    """Unix seconds (``1764504000.5``) or ISO 8601 (UTC unless it carries an offset)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise BadParameter(parameter, f"{text[:40]!r} is not a finite time")
        return value
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(
            parameter, f"{text[:40]!r} is neither Unix seconds nor an ISO 8601 time (2026-11-30T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _metadata_value(text: str) -> object:
    # As the command line: JSON when it parses (n=3 is a number), else the text itself (ch=c1).
    try:
        value: object = json.loads(text)
    except ValueError:
        return text
    return value


def list_filters(query: list[tuple[str, str]]) -> dict[str, Any]:
    """The keyword arguments of ``sessions.list`` that ``query`` asks for.

    Raises:
        BadParameter: an unknown parameter, a repeated one, or a bad value.
    """
    seen: dict[str, str] = {}
    metadata: dict[str, object] = {}
    for name, value in query:
        if name.startswith("meta."):
            key = name[5:]
            if not key:
                raise BadParameter(name, "give a metadata key: meta.KEY=VALUE")
            if key in metadata:
                raise BadParameter(name, "given twice")
            metadata[key] = _metadata_value(value)
            continue
        if name not in _LIST_PARAMETERS:
            known = ", ".join(sorted(_LIST_PARAMETERS | {"meta.KEY"}))
            raise BadParameter(name[:64], f"unknown parameter; /sessions takes {known}")
        if name in seen:
            raise BadParameter(name, "given twice")
        seen[name] = value
    filters: dict[str, Any] = {
        "limit": _int("limit", seen["limit"], low=0, high=MAX_LIMIT) if "limit" in seen else DEFAULT_LIMIT,
        "offset": _int("offset", seen["offset"], low=0) if "offset" in seen else 0,
    }
    if "status" in seen:
        try:
            filters["status"] = Status(seen["status"])
        except ValueError:
            choices = ", ".join(s.value for s in Status)
            raise BadParameter(
                "status", f"{seen['status'][:40]!r} is not a status: one of {choices}"
            ) from None
    if "type" in seen:
        filters["type"] = seen["type"]
    if metadata:
        filters["metadata"] = metadata
    if "sort" in seen:
        try:
            filters["order_by"], filters["descending"] = _SORTS[seen["sort"]]
        except KeyError:
            raise BadParameter("sort", f"{seen['sort'][:40]!r}: one of {', '.join(_SORTS)}") from None
    for bound in _TIME_BOUNDS:
        if bound in seen:
            filters[bound] = parse_time(bound, seen[bound])
    return filters


# -- the application --------------------------------------------------------------------------------


@final
class AdminApp:
    """The ASGI application behind :func:`supervisors.serve_admin`.

    Args:
        sessions: the supervisor it reports on.
        registry: what ``/metrics`` serves (default: ``sessions.registry``).
        basic_auth: ``(user, password)`` every request must carry, or ``None``.
        max_concurrent_requests: routes running at once; the others wait their turn.
        max_url_bytes: the longest path and query answered (longer: 414).
    """

    def __init__(
        self,
        sessions: SessionSupervisor,
        *,
        registry: CollectorRegistry | None = None,
        basic_auth: tuple[str, str] | None = None,
        max_concurrent_requests: int = 8,
        max_url_bytes: int = 8192,
    ) -> None:
        self.sessions = sessions
        self.max_url_bytes = max_url_bytes
        self.registry = registry if registry is not None else sessions.registry
        self._expected = None if basic_auth is None else f"{basic_auth[0]}:{basic_auth[1]}".encode()
        self._limiter = anyio.CapacityLimiter(max_concurrent_requests)
        # One scrape renders at a time, in a worker thread: the event loop keeps serving sessions.
        self._render_limiter = anyio.CapacityLimiter(1)
        self._exposition = MetricsExposition()  # keeps each series' label text between scrapes
        self.ready = False
        """Set once ``sessions.ready()`` has returned (by :func:`serve_admin`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: not served (hypercorn closes the connection)
        method = scope["method"]
        head = method == "HEAD"
        try:
            if self._expected is not None and not _authorized(scope, self._expected):
                raise _Answer(
                    401,
                    _error("unauthorized", "this endpoint needs HTTP basic auth"),
                    ((b"www-authenticate", b'Basic realm="sessionvisor admin", charset="UTF-8"'),),
                )
            url_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
            if url_bytes > self.max_url_bytes:
                raise _Answer(
                    414,
                    _error("uri_too_long", f"the URL has {url_bytes} bytes; at most {self.max_url_bytes}"),
                )
            if method not in ("GET", "HEAD"):
                raise _Answer(
                    405, _error("method_not_allowed", f"{method} is not served: every route is a GET"),
                    ((b"allow", b"GET, HEAD"),),
                )  # fmt: skip
            async with self._limiter:
                status, content_type, body = await self._route(scope)
            headers: tuple[tuple[bytes, bytes], ...] = ()
        except BadParameter as exc:
            status, content_type = 400, _JSON
            body = _dumps(_error("bad_request", exc.message, parameter=exc.parameter))
            headers = ()
        except _Answer as answer:
            status, content_type, body = answer.status, _JSON, _dumps(answer.body)
            headers = answer.headers
        except Exception:
            logger.exception("admin endpoint: %s %s failed", method, scope.get("path"))
            status, content_type = 500, _JSON
            body = _dumps(_error("internal", "the request failed; the server's log says why"))
            headers = ()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def _route(self, scope: Scope) -> tuple[int, bytes, bytes]:
        path: str = scope["path"]
        query = _query(scope)
        if path in ("/metrics", "/metrics/"):
            return await self._metrics(scope)
        if path == "/healthz":
            _no_parameters(query)
            return 200, _JSON, _dumps({"status": "ok", "active": self.sessions.active_count})
        if path == "/readyz":
            _no_parameters(query)
            ready = self.ready and not self.sessions.closing
            state = "ok" if ready else ("stopping" if self.ready else "starting")
            return (200 if ready else 503), _JSON, _dumps({"ready": ready, "status": state})
        if path == "/stats":
            _no_parameters(query)
            return 200, _JSON, _dumps(await self._stats())
        if path in ("/sessions", "/sessions/"):
            filters = list_filters(query)
            records = await self.sessions.list(**filters)
            body: dict[str, object] = {
                "sessions": [record_json(r) for r in records],
                "limit": filters["limit"],
                "offset": filters["offset"],
                "next_offset": filters["offset"] + len(records) if len(records) == filters["limit"] else None,
            }
            return 200, _JSON, _dumps(body)
        if path.startswith("/sessions/"):
            _no_parameters(query)
            session_id, history = _session_route(scope)
            return 200, _JSON, await self._session(session_id, history)
        raise _Answer(
            404,
            _error(
                "not_found",
                "no such route: /metrics, /healthz, /readyz, /stats, /sessions, /sessions/{id} and "
                "/sessions/{id}/history are served",
            ),
        )

    async def _metrics(self, scope: Scope) -> tuple[int, bytes, bytes]:
        accept = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"accept")
        encoder, content_type = self._exposition.choose(accept)
        body = await anyio.to_thread.run_sync(encoder, self.registry, limiter=self._render_limiter)
        return 200, content_type.encode(), body

    async def _session(self, session_id: str, history: bool) -> bytes:
        try:
            check_session_id(session_id)
        except InvalidSessionId as exc:
            raise BadParameter("id", str(exc)[:500]) from None
        known = self.sessions.cached(session_id) is not None or await self.sessions.store.get(session_id)
        if not known:
            raise _Answer(404, _error("not_found", f"no session {session_id!r}", id=session_id))
        try:
            if history:
                return (await self.sessions.export_history(session_id)).encode()
            return _dumps(inspection_json(await self.sessions.inspect(session_id)))
        except SessionNotFound:  # deleted meanwhile
            raise _Answer(404, _error("not_found", f"no session {session_id!r}", id=session_id)) from None

    async def _stats(self) -> dict[str, object]:
        stats = await self.sessions.stats()
        host = attrs.asdict(stats)  # the node's figures and the nodes sharing the store included
        store = attrs.asdict(stats.store)
        del host["store"], host["outcomes"]
        return {
            "host": host,
            "store": store,
            "outcomes": {name: outcomes_json(o) for name, o in stats.outcomes.items()},
        }


_JSON: Final = b"application/json"


def _session_route(scope: Scope) -> tuple[str, bool]:
    """``(id, history?)`` of ``/sessions/{id}`` or ``/sessions/{id}/history``.

    Split on the path as sent (``raw_path``), then percent-decoded, so that an id holding ``/``
    is addressed as ``/sessions/a%2Fb``; any other shape is a 404.
    """
    raw: bytes | None = scope.get("raw_path")
    if raw is None:  # a server that does not pass the path as sent: ids holding "/" cannot be addressed
        raw = urllib.parse.quote(scope["path"], safe="/").encode("ascii")
    parts = raw.split(b"?", 1)[0].split(b"/")[2:]  # b"", b"sessions", then the rest
    if len(parts) == 1 or (len(parts) == 2 and parts[1] == b"history"):
        try:
            session_id = urllib.parse.unquote_to_bytes(parts[0]).decode("utf-8")
        except UnicodeDecodeError:
            raise BadParameter("id", "it is not UTF-8 once percent-decoded") from None
        if session_id:
            return session_id, len(parts) == 2
    shown = b"/".join(parts).decode("latin-1")[:MAX_ID_LENGTH]
    raise _Answer(404, _error("not_found", "no such route", id=shown))


def _dumps(value: object) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=repr
    ).encode()


def _error(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": code, "message": message, **extra}


def _query(scope: Scope) -> list[tuple[str, str]]:
    raw = scope.get("query_string", b"").decode("latin-1")
    try:
        return urllib.parse.parse_qsl(
            raw, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise _Answer(400, _error("bad_request", "the query string is not UTF-8", parameter=None)) from None
    except ValueError:
        raise _Answer(
            400, _error("bad_request", f"more than {MAX_QUERY_FIELDS} query parameters", parameter=None)
        ) from None


def _no_parameters(query: list[tuple[str, str]]) -> None:
    if query:
        name = query[0][0][:64]
        raise _Answer(400, _error("bad_request", "this route takes no parameters", parameter=name))


def _authorized(scope: Scope, expected: bytes) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"basic":
                return False
            try:
                given = base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(given, expected)
    return False


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
