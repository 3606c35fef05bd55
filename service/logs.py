"""Logging: text for people at a terminal, or one JSON object per line for log pipelines.

``--log-format json`` writes every record (nudge's, grpc's, feast's) as a JSON object with
``ts``, ``level``, ``logger``, ``pid``, ``msg``, the ``request_id`` of the RPC it was logged
in (when request ids are tracked), ``exc`` for tracebacks, and any ``extra=`` fields whose
values are plain strings, numbers or booleans: nothing else, so arrays of feature values
cannot slip into a log line by accident. nudge itself never logs feature values or request
fields other than customer ids of a failed call.

Request ids: the caller's ``x-request-id`` metadata (truncated to 128 printable characters),
or an id generated when none was sent. They are tracked with JSON logs or the access log
(``--access-log``): the RPC's wrapper (service/rpc.py) binds the call itself to the RPC's
asyncio task through a context variable, and the id is read from the call's metadata (or
generated) only when a record is first logged within it: most calls log nothing, and reading
metadata or generating ids nobody reads would be work on every call.

The access log writes one OK call in ``--access-log-every`` (per method and process; 1: all)
and every call answered with another status (refusals, errors), so it can stay on under load.

Third-party noise is silenced by its exact origin, never wholesale: Feast's "Registry ... so
refreshing" INFO lines (see ``configure``) here, known DeprecationWarnings in
``nudge.third_party``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

import grpc

from service.config import Settings

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID = 128
# None: no request id tracking here. A call: its id is not read yet. A str: the call's id.
_request_id: ContextVar[str | grpc.aio.ServicerContext | None] = ContextVar("nudge_request_id", default=None)
_access = logging.getLogger("nudge.access")

# Feast logs these at INFO on every registry read made without its cache, which is the default
# of get_feature_service/get_feature_view: four times per server start-up and again at every
# model reload. Routine internals, nothing to act on; shown with --log-level debug.
FEAST_REGISTRY_LOGGER = "feast.infra.registry.registry"
FEAST_REFRESHING = ("Registry cache expired, so refreshing", "Registry file modified, so refreshing")


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}


def bind_call(call: grpc.aio.ServicerContext) -> None:
    """Make ``call`` the RPC whose request id this task's log records carry (read lazily)."""
    _request_id.set(call)


def new_request_id() -> str:
    return os.urandom(8).hex()


def current_request_id() -> str | None:
    """The request id of the RPC being handled: the caller's, else a generated one (both kept
    for the rest of the call); None outside an RPC or when ids are not tracked."""
    bound = _request_id.get()
    if bound is None or isinstance(bound, str):
        return bound
    rid = _caller_request_id(bound.invocation_metadata()) or new_request_id()
    _request_id.set(rid)
    return rid


def _caller_request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            return "".join(c for c in text[:MAX_REQUEST_ID] if c.isprintable()) or None
    return None


def access_log(method: str, every: int) -> Callable[[grpc.StatusCode, float], None]:
    """``access(code, seconds)`` for one method: logs one OK call in ``every`` and every other
    call; no request fields, no results."""
    seen = 0
    info = _access.info

    def access(code: grpc.StatusCode, elapsed_s: float) -> None:
        nonlocal seen
        if code is grpc.StatusCode.OK:
            seen += 1
            if seen < every:
                return
            seen = 0
        ms = round(elapsed_s * 1000, 3)
        name = code.name
        info("%s %s %.3fms", method, name, ms, extra={"method": method, "code": name, "duration_ms": ms})

    return access


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (None outside an RPC)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and isinstance(value, str | int | float | bool) and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class DropMessages(logging.Filter):
    """Drops the records of one logger whose unformatted message is one of ``messages``."""

    def __init__(self, messages: Iterable[str]) -> None:
        super().__init__()
        self.messages = frozenset(messages)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.messages


class TextFormatter(logging.Formatter):
    """The classic one-line format, with ``[request id]`` when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [request_id={rid}]" if rid else line


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def configure(settings: Settings) -> None:
    """Route every logger to stderr in the configured format (replaces earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    registry = logging.getLogger(FEAST_REGISTRY_LOGGER)
    for stale in [f for f in registry.filters if isinstance(f, DropMessages)]:
        registry.removeFilter(stale)
    if root.level > logging.DEBUG:
        registry.addFilter(DropMessages(FEAST_REFRESHING))
