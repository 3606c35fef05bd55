"""The one wrapper each unary method is registered with, built once per method at start-up.

Per call it does only what the settings turned on, in this order: the bearer-token check
(before the request bytes are parsed, so an unauthenticated caller cannot make the server
parse anything), the request id for log records, decoding (bytes that are not the request
message → INVALID_ARGUMENT, where grpcio would say UNKNOWN), the method itself, and then the
call's metrics (in-process tallies, see service/metrics.py) and its access-log line. Handlers
end a call with a status by raising :class:`Refused`, which becomes the call's status here.

Why not grpc.aio interceptors: each interceptor is one more coroutine and handler lookup per
call (``intercept_service`` runs for every RPC, then a cache lookup finds the wrapped handler);
everything they decided per call (which method, which label children, which token list) is
known when the method is registered. Tracing, when on, still uses the standard OpenTelemetry
interceptor (service/tracing.py) around these handlers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from service import logs

if TYPE_CHECKING:
    from service.metrics import Metrics
    from service.security import BearerTokenAuth

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class Refused(Exception):
    """End the call with ``code`` and ``message``.

    Not ``context.abort``: abort sends the status at once, before the wrapper has counted the
    call, so a caller could see its error before the counter moved."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Observation:
    """What the wrappers of this server do besides calling the method (settings, once)."""

    metrics: Metrics | None = None
    auth: BearerTokenAuth | None = None
    request_ids: bool = False
    access_log: bool = False
    access_log_every: int = 1


@dataclass(frozen=True)
class Method:
    """One unary method as registered: its behaviour and its message types."""

    name: str  # short, e.g. "Score"
    behavior: Behavior
    request: Any  # the request message class
    response: Any  # the response message class
    open: bool = False  # reachable without a token (health checks)


def add_service(
    server: grpc.aio.Server, service: str, methods: Sequence[Method], observation: Observation, **extra: Any
) -> None:
    """Register ``service``'s unary ``methods``, each with its wrapper; ``extra`` handlers
    (e.g. a streaming method) are registered as given."""
    handlers = {m.name: handler(f"/{service}/{m.name}", m, observation) for m in methods}
    handlers.update(extra)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)  # type: ignore[attr-defined]


def handler(full_name: str, method: Method, observation: Observation) -> grpc.RpcMethodHandler:
    """The method's handler: its wrapper, with everything it needs per call bound now."""
    parse, behavior = method.request.FromString, method.behavior
    undecodable = f"request is not a valid {method.request.DESCRIPTOR.full_name}"
    label = full_name.lstrip("/")
    refusal = None if method.open or observation.auth is None else observation.auth.for_method(full_name)
    metrics = observation.metrics
    record = metrics.rpc(full_name) if metrics is not None else None
    observe_response = metrics.response_observer(full_name) if metrics is not None else None
    request_ids = observation.request_ids
    access = logs.access_log(label, observation.access_log_every) if observation.access_log else None
    clock = time.perf_counter

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        start = clock()
        if request_ids:
            logs.bind_call(context)
        code = grpc.StatusCode.OK
        try:
            if refusal is not None:
                refused = refusal(context.invocation_metadata())
                if refused is not None:
                    raise Refused(*refused)
            try:
                request = parse(raw)
            except (DecodeError, ValueError, RecursionError):
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, undecodable) from None
            response = await behavior(request, context)
            if observe_response is not None:
                observe_response(response)
            return response
        except Refused as exc:
            code = exc.code
            context.set_code(code)
            context.set_details(exc.message)
            return None  # grpc.aio sends no message with a non-OK status
        except asyncio.CancelledError:
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = _code(context) or grpc.StatusCode.UNKNOWN
            raise
        finally:
            if record is not None or access is not None:
                elapsed = clock() - start
                if record is not None:
                    record(code, elapsed)
                if access is not None:
                    access(code, elapsed)

    return grpc.unary_unary_rpc_method_handler(call, response_serializer=method.response.SerializeToString)


def _code(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    """The status a method that raised had set or aborted with (grpc.aio keeps it on the
    context), e.g. the health servicer's NOT_FOUND."""
    code = context.code()
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _BY_VALUE.get(code)


_BY_VALUE: dict[Any, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}
