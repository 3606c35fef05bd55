"""Logging: text for people at a terminal, or one JSON object per line for log pipelines.

``--log-format json`` writes every record (nudge's, grpc's, feast's) as a JSON object with
``ts``, ``level``, ``logger``, ``pid``, ``msg``, the ``request_id`` of the RPC it was logged
in (when request ids are tracked), ``exc`` for tracebacks, and any ``extra=`` fields whose
values are plain strings, numbers or booleans: nothing else, so arrays of feature values
cannot slip into a log line by accident. nudge itself never logs feature values or request
fields other than customer ids of a failed call.

Request ids: the caller's ``x-request-id`` metadata (truncated to 128 printable characters),
or an id generated when a record is first logged within an RPC that did not send one
(generating ids nobody reads would be wasted work on every call). They are tracked with JSON
logs or the access log (``--access-log``); ``metrics.RpcObserver`` binds the id to the RPC's
asyncio task through a context variable, so any record logged while handling it carries it.

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
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from service.config import Settings

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID = 128
# None: no request id tracking here. "": an RPC without one; generated when first logged.
_request_id: ContextVar[str | None] = ContextVar("nudge_request_id", default=None)
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


def bind_request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
    """Take the RPC's ``x-request-id`` (or mark it to be generated) for its log records."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            clean = "".join(c for c in text[:MAX_REQUEST_ID] if c.isprintable())
            _request_id.set(clean or new_request_id())
            return
    _request_id.set("")


def new_request_id() -> str:
    return os.urandom(8).hex()


def current_request_id() -> str | None:
    """The request id of the RPC being handled (generating it if the caller sent none)."""
    rid = _request_id.get()
    if rid == "":
        rid = new_request_id()
        _request_id.set(rid)
    return rid


def access(method: str, code: str, elapsed_s: float) -> None:
    """One access-log line for an RPC (``--access-log``): no request fields, no results."""
    ms = round(elapsed_s * 1000, 3)
    _access.info("%s %s %.3fms", method, code, ms, extra={"method": method, "code": code, "duration_ms": ms})


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
