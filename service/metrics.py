"""Prometheus metrics on their own port (``--metrics-port``), cheap enough for the hot path.

What is exported (names as Prometheus shows them):

  nudge_grpc_requests_total{method,code}              RPCs answered, by status code
  nudge_grpc_request_duration_seconds{method,code}    server-side latency histogram
  nudge_feature_fetch_seconds                         one online-store read per call
  nudge_inference_seconds                             input rows + both ONNX models, per call
  nudge_feature_status_total{status}                  customers answered FRESH/STALE/MISSING/UNAVAILABLE
  nudge_purchase_propensity                           histogram of the propensities returned
  nudge_feature_age_seconds                           age of the newest feature row (FRESH/STALE only)
  nudge_ingest_events_total{outcome}                  events ingested: APPLIED/DUPLICATE/REJECTED/LATE
  nudge_model_loaded{model,version}                   worker processes serving that version
  nudge_model_reloads_total{model,outcome}            hot-swap candidates swapped in or rejected

Only unary RPCs of registered methods are counted (health checks included; reflection and
Watch streams are not; unknown method names are not, so a caller cannot invent label values).

Several workers (``--workers N``): prometheus-client's multiprocess mode. The parent process
empties a directory (``--metrics-dir``, default a new temporary one) before it spawns the
workers; each worker writes its values to memory-mapped files there, and the parent serves
``/metrics`` on the one metrics port, summing counters and histograms over all workers (dead
ones included, so totals never go backwards) and ``nudge_model_loaded`` over live workers only.
One worker: the values live in the process, which serves ``/metrics`` itself (with its CPU and
memory). Why not a port per worker: the scrape config would have to know N, and the sums would
be every dashboard's job.

Cost: label children are bound once per (method, code) and per status, never per request, and
the interceptor wraps each method's handler once (cached), not per call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client import start_http_server as _start_http_server

from nudge.v1 import ingest_pb2
from nudge.v1 import scoring_pb2 as pb
from service import logs
from service.config import Settings

log = logging.getLogger("nudge.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Sub-millisecond resolution where the service lives (p50 ~1 ms), coarse above.
RPC_BUCKETS = (
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
)
FETCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
INFERENCE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25)
PROPENSITY_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_DAY = 86400.0
AGE_BUCKETS = (60.0, 900.0, 3600.0, 6 * 3600.0, _DAY, 2 * _DAY, 4 * _DAY, 8 * _DAY, 16 * _DAY, 32 * _DAY)
_STATUS_NAMES = {
    pb.FEATURE_STATUS_FRESH: "FRESH",
    pb.FEATURE_STATUS_STALE: "STALE",
    pb.FEATURE_STATUS_MISSING: "MISSING",
    pb.FEATURE_STATUS_UNAVAILABLE: "UNAVAILABLE",
}
_AGED = frozenset((pb.FEATURE_STATUS_FRESH, pb.FEATURE_STATUS_STALE))
_OUTCOME_NAMES = {
    v.number: v.name.removeprefix("OUTCOME_")
    for v in ingest_pb2.EventResult.Outcome.DESCRIPTOR.values
    if v.number != ingest_pb2.EventResult.OUTCOME_UNSPECIFIED
}

T = TypeVar("T")


class Metrics:
    """Every nudge metric, with the label children the hot path uses bound up front."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        use_value_storage(multiprocess_dir)
        # Own registry: no clash with the default one (or a second Metrics in tests); in
        # multiprocess mode the values go to files whatever the registry.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "nudge_grpc_requests", "RPCs answered, by method and status code.", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "nudge_grpc_request_duration_seconds",
            "Server-side RPC latency, from handler start to response, by method and status code.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.fetch_seconds = Histogram(
            "nudge_feature_fetch_seconds",
            "Online feature store read for one call (all its customers).",
            buckets=FETCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "nudge_inference_seconds",
            "Input rows and both ONNX models for one call (all its customers).",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.feature_status = Counter(
            "nudge_feature_status", "Customers answered, by feature status.", ["status"], registry=r
        )
        self.propensity = Histogram(
            "nudge_purchase_propensity",
            "Purchase propensities returned.",
            buckets=PROPENSITY_BUCKETS,
            registry=r,
        )
        self.feature_age = Histogram(
            "nudge_feature_age_seconds",
            "Age of the customer's newest feature row, for FRESH and STALE answers.",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.model_loaded = Gauge(
            "nudge_model_loaded",
            "Worker processes serving this model version (1 per process that loaded it).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_reloads = Counter(
            "nudge_model_reloads",
            "New model versions the hot-swap reloader tried, by outcome (swapped or rejected).",
            ["model", "outcome"],
            registry=r,
        )
        self.ingest_events = Counter(
            "nudge_ingest_events", "Events ingested, by outcome.", ["outcome"], registry=r
        )
        self._status_inc = {
            code: self.feature_status.labels(name).inc for code, name in _STATUS_NAMES.items()
        }
        self._outcome_inc = {
            code: self.ingest_events.labels(name).inc for code, name in _OUTCOME_NAMES.items()
        }
        self._models: dict[str, str] = {}

    # ---------------------------------------------------------------- per-response numbers

    def observe_response(self, response: pb.ScoreResponse) -> None:
        """Feature status, propensity and feature age of one answered customer."""
        status = response.feature_status
        inc = self._status_inc.get(status)
        if inc is not None:
            inc()
        self.propensity.observe(response.purchase_propensity)
        if status in _AGED:
            self.feature_age.observe(response.feature_age_seconds)

    def observe_batch(self, response: pb.ScoreBatchResponse) -> None:
        for result in response.results:
            if result.HasField("response"):
                self.observe_response(result.response)

    def observe_ingest(self, response: ingest_pb2.IngestResponse) -> None:
        """One count per event, by outcome (one increment per outcome present)."""
        counts: dict[int, int] = {}
        for result in response.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        for outcome, count in counts.items():
            self._outcome_inc[outcome](count)

    # ---------------------------------------------------------------- models

    def set_models(self, versions: dict[str, str]) -> None:
        """Record the model versions this process serves (start-up, and the reloader's swap)."""
        if versions == self._models:
            return
        for name, version in self._models.items():
            if versions.get(name) != version:
                self.model_loaded.labels(name, version).set(0)
        for name, version in versions.items():
            self.model_loaded.labels(name, version).set(1)
        self._models = dict(versions)

    # ---------------------------------------------------------------- scoring-stage probe

    def feature_fetch(self, read: Callable[..., T]) -> Callable[..., T]:
        """Core hook (Scorer.instrument): time every online read, failed ones included."""
        observe, clock = self.fetch_seconds.observe, time.perf_counter

        def timed_read(*args: Any) -> T:
            start = clock()
            try:
                return read(*args)
            finally:
                observe(clock() - start)

        return timed_read

    def inference(self, infer: Callable[..., T]) -> Callable[..., T]:
        """Core hook (Scorer.instrument): time inference."""
        observe, clock = self.inference_seconds.observe, time.perf_counter

        def timed_infer(models: Any, *args: Any) -> T:
            start = clock()
            try:
                return infer(models, *args)
            finally:
                observe(clock() - start)

        return timed_infer


# --------------------------------------------------------------------------- interceptor

_OBSERVERS: dict[str, Callable[[Metrics], Callable[[Any], None]]] = {
    "/nudge.v1.ScoringService/Score": lambda m: m.observe_response,
    "/nudge.v1.ScoringService/ScoreBatch": lambda m: m.observe_batch,
    "/nudge.v1.IngestService/Ingest": lambda m: m.observe_ingest,
}


class RpcObserver(grpc.aio.ServerInterceptor):
    """Per-RPC bookkeeping in one wrapper: request id for logs, metrics, access log.

    Installed only when one of them is on (see ``server.interceptors``). Only ``methods``
    (the server's registered unary methods) are observed: a caller inventing method names
    must not invent label values. Each (method, handler) pair is wrapped once and reused —
    a method has its real handler and, behind the token check, a few rejecting ones shared
    by all methods; per call the wrapper reads the clock twice, looks up ``x-request-id``
    and increments pre-bound children.
    """

    def __init__(
        self, metrics: Metrics | None, *, access_log: bool, request_ids: bool, methods: Iterable[str]
    ) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self.request_ids = request_ids
        self._cache: dict[str, dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]]] = {
            m: {} for m in methods
        }

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        wrapped_for_method = self._cache.get(method)
        if wrapped_for_method is None or handler is None or handler.response_streaming:
            return handler
        cached = wrapped_for_method.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler.request_streaming:
            return handler
        wrapped = self._wrap(method, handler)
        if len(wrapped_for_method) < 8:  # real + rejecting handlers; the bound is a safety net
            wrapped_for_method[id(handler)] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner: Any = handler.unary_unary  # a coroutine function on grpc.aio
        label = method.lstrip("/")
        metrics = self.metrics
        observe_response = _OBSERVERS[method](metrics) if metrics and method in _OBSERVERS else None
        children: dict[grpc.StatusCode, tuple[Callable[[], None], Callable[[float], None]]] = {}

        def bind(code: grpc.StatusCode) -> tuple[Callable[[], None], Callable[[float], None]]:
            assert metrics is not None
            pair = (
                metrics.requests.labels(label, code.name).inc,
                metrics.latency.labels(label, code.name).observe,
            )
            children[code] = pair
            return pair

        access_log, request_ids, clock = self.access_log, self.request_ids, time.perf_counter

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = clock()
            if request_ids:
                logs.bind_request_id(context.invocation_metadata())
            code = grpc.StatusCode.OK
            try:
                response = await inner(request, context)
                code = _code(context) or grpc.StatusCode.OK
                if observe_response is not None and code is grpc.StatusCode.OK:
                    observe_response(response)
                return response
            except asyncio.CancelledError:
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = _code(context) or grpc.StatusCode.UNKNOWN
                raise
            finally:
                elapsed = clock() - start
                if metrics is not None:
                    inc, observe = children.get(code) or bind(code)
                    inc()
                    observe(elapsed)
                if access_log:
                    logs.access(label, code.name, elapsed)

        replaced: grpc.RpcMethodHandler = cast(Any, handler)._replace(unary_unary=observed)
        return replaced


def _code(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    """The status the handler set or aborted with (grpc.aio keeps it on the context)."""
    code = context.code()
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _BY_VALUE.get(code)


_BY_VALUE: dict[Any, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


# --------------------------------------------------------------------------- exposition


def use_value_storage(directory: Path | None) -> None:
    """Where metric values live, chosen explicitly before any nudge metric exists: in this
    process (None) or in memory-mapped files in ``directory`` (a worker of several).

    Why not prometheus-client's own switch (PROMETHEUS_MULTIPROC_DIR at import): ``import
    feast`` imports feast.metrics, which points that variable at a temporary directory of its
    own, silently putting every process that imports feast into multiprocess mode."""
    from prometheus_client import values

    if directory is None:
        values.ValueClass = values.MutexValue
    else:
        os.environ[MULTIPROC_ENV] = str(directory)  # MmapedValue reads it for its file paths
        values.ValueClass = values.MultiProcessValue()


class Exporter:
    """The /metrics HTTP server (a thread of this process) and, in the parent of several
    workers, the temporary directory it created for their files."""

    def __init__(self, server: Any, thread: Any, owned_dir: Path | None = None) -> None:
        self._server, self._thread, self._owned_dir = server, thread, owned_dir

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)


def _listen(settings: Settings, registry: CollectorRegistry) -> tuple[Any, Any]:
    host = settings.metrics_host or settings.host
    try:
        server, thread = _start_http_server(settings.metrics_port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{settings.metrics_port}: {exc}") from exc
    log.info("metrics on http://%s:%d/metrics", host, settings.metrics_port)
    return server, thread


def serve_single(settings: Settings, metrics: Metrics) -> Exporter:
    """One server process: export its own registry, plus the process's CPU and memory."""
    ProcessCollector(registry=metrics.registry)
    return Exporter(*_listen(settings, metrics.registry))


def prepare_multiprocess_dir(settings: Settings) -> tuple[Path, bool]:
    """Before spawning workers: their metrics directory, empty; (path, created here).

    ``--metrics-dir`` is used as given, with ``*.db`` files of an earlier run removed (they
    would add old counts to the new ones); without it, a new temporary directory."""
    if settings.metrics_dir is not None:
        path = Path(settings.metrics_dir)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    return Path(tempfile.mkdtemp(prefix="nudge-metrics-")), True


def serve_multiprocess(settings: Settings, directory: Path, owned: bool) -> Exporter:
    """In the parent of several workers: serve the sum of what they write to ``directory``."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return Exporter(*_listen(settings, registry), owned_dir=directory if owned else None)


def worker_exited(directory: Path, pid: int) -> None:
    """Drop a dead worker's live gauges (its counters and histograms stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path=str(directory))
