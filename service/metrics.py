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

Cost per call: additions to in-process tallies (label children bound once per (method, code)
and per status, never per request), made by the one wrapper each method is registered with
(service/rpc.py). The tallies are flushed into prometheus-client's values at most once a
second, and in a lone process also right before each scrape, so its /metrics shows every call
already answered; a worker's values reach the parent's /metrics within a second. In
multiprocess mode every value change is a write to a memory-mapped file, ~12 per Score call
before the tallies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from nudge.v1 import ingest_pb2
from nudge.v1 import scoring_pb2 as pb
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


class Tally:
    """One histogram child's observations since the last flush, as plain Python numbers.

    ``observe`` is a bisect and two additions: no lock, no memory-mapped file write. It runs
    on the event loop's thread only, as does :meth:`Metrics.flush`, so they never interleave.
    ``counter`` (optional): a counter child that moves by the number of observations (the
    requests counter beside the latency histogram)."""

    __slots__ = ("_child", "_counter", "bounds", "counts", "total")

    def __init__(self, child: Histogram, counter: Counter | None = None) -> None:
        self._child, self._counter = child, counter
        # prometheus-client has no public call adding many observations at once; a child's
        # bounds (ending at +Inf), buckets and sum are these attributes in every 0.x release.
        self.bounds: tuple[float, ...] = tuple(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        """Prometheus's rule: the first bucket whose upper bound is ``>= amount``."""
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        observed = 0
        for i, n in enumerate(self.counts):
            if n:
                self._child._buckets[i].inc(n)
                self.counts[i] = 0
                observed += n
        if observed:
            self._child._sum.inc(self.total)
            if self._counter is not None:
                self._counter.inc(observed)
        self.total = 0.0


class Counts:
    """Counter children's increments since the last flush, by key."""

    __slots__ = ("_children", "pending")

    def __init__(self, children: dict[Any, Counter]) -> None:
        self._children = children
        self.pending = dict.fromkeys(children, 0)

    def flush(self) -> None:
        for key, n in self.pending.items():
            if n:
                self._children[key].inc(n)
                self.pending[key] = 0


class Metrics:
    """Every nudge metric. The hot path adds to in-process :class:`Tally`/:class:`Counts`
    (label children bound up front); :meth:`flush` moves them into prometheus-client's values,
    at most once a second (:meth:`flush_every`) and on every scrape of a lone process
    (:meth:`attach`)."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        use_value_storage(multiprocess_dir)
        # Own registry: no clash with the default one (or a second Metrics in tests); in
        # multiprocess mode the values go to files whatever the registry.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._scrape = _FlushBeforeScrape(self)
        r.register(self._scrape)  # first: the collectors after it read flushed values
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
        self._fetch = Tally(self.fetch_seconds)
        self._inference = Tally(self.inference_seconds)
        self._propensity = Tally(self.propensity)
        self._age = Tally(self.feature_age)
        self._status = Counts(
            {code: self.feature_status.labels(name) for code, name in _STATUS_NAMES.items()}
        )
        self._outcomes = Counts(
            {code: self.ingest_events.labels(name) for code, name in _OUTCOME_NAMES.items()}
        )
        # Flushed in this order: the requests counter last, so a scrape that sees a call
        # counted also sees what that call observed.
        self._pending: list[Tally | Counts] = [
            self._fetch,
            self._inference,
            self._propensity,
            self._age,
            self._status,
            self._outcomes,
        ]
        self._rpc_tallies: list[Tally] = []
        self._models: dict[str, str] = {}

    # ---------------------------------------------------------------- per call

    def rpc(self, method: str) -> Callable[[grpc.StatusCode, float], None]:
        """``record(code, seconds)`` for one registered method: one call answered.

        A (method, code) pair's children are bound at its first call with that code; the set of
        codes is grpc's, so it is bounded."""
        label = method.lstrip("/")
        by_code: dict[grpc.StatusCode, Callable[[float], None]] = {}

        def record(code: grpc.StatusCode, seconds: float) -> None:
            observe = by_code.get(code)
            if observe is None:
                tally = Tally(self.latency.labels(label, code.name), self.requests.labels(label, code.name))
                self._rpc_tallies.append(tally)
                observe = by_code[code] = tally.observe
            observe(seconds)

        return record

    def response_observer(self, method: str) -> Callable[[Any], None] | None:
        """What a method's OK answers add (feature status, propensity, ...), or None."""
        observers: dict[str, Callable[[Any], None]] = {
            "/nudge.v1.ScoringService/Score": self.observe_response,
            "/nudge.v1.ScoringService/ScoreBatch": self.observe_batch,
            "/nudge.v1.IngestService/Ingest": self.observe_ingest,
        }
        return observers.get(method)

    def observe_response(self, response: pb.ScoreResponse) -> None:
        """Feature status, propensity and feature age of one answered customer."""
        status = response.feature_status
        pending = self._status.pending
        if status in pending:
            pending[status] += 1
        self._propensity.observe(response.purchase_propensity)
        if status in _AGED:
            self._age.observe(response.feature_age_seconds)

    def observe_batch(self, response: pb.ScoreBatchResponse) -> None:
        for result in response.results:
            if result.HasField("response"):
                self.observe_response(result.response)

    def observe_ingest(self, response: ingest_pb2.IngestResponse) -> None:
        """One count per event, by outcome."""
        pending = self._outcomes.pending
        for result in response.results:
            pending[result.outcome] += 1

    # ---------------------------------------------------------------- flushing

    def flush(self) -> None:
        """Move everything tallied since the last flush into the exported values (on the event
        loop's thread: the tallies are changed there without locks)."""
        for pending in self._pending:
            pending.flush()
        for tally in self._rpc_tallies:
            tally.flush()

    async def flush_every(self, seconds: float) -> None:
        """Flush, then sleep, until cancelled (then flush once more): in multiprocess mode
        every flushed value is a memory-mapped file write, so a worker writes at most once per
        ``seconds`` instead of ~12 times per call; the parent's /metrics lags by at most that."""
        try:
            while True:
                await asyncio.sleep(seconds)
                self.flush()
        finally:
            self.flush()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the tallies live on: a scrape of a lone process asks it to flush first, so
        /metrics shows every call already answered."""
        self._scrape.loop = loop

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
        observe, clock = self._fetch.observe, time.perf_counter

        def timed_read(*args: Any) -> T:
            start = clock()
            try:
                return read(*args)
            finally:
                observe(clock() - start)

        return timed_read

    def inference(self, infer: Callable[..., T]) -> Callable[..., T]:
        """Core hook (Scorer.instrument): time inference."""
        observe, clock = self._inference.observe, time.perf_counter

        def timed_infer(models: Any, *args: Any) -> T:
            start = clock()
            try:
                return infer(models, *args)
            finally:
                observe(clock() - start)

        return timed_infer


class _FlushBeforeScrape(Collector):
    """Registered first in a lone process's registry: a scrape (on the HTTP server's thread)
    has the event loop flush the tallies, and waits for it (at most a second), before the
    metrics are read. No samples of its own."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> list[Metric]:
        return []  # without it, registering would call collect() to learn the names

    def collect(self) -> list[Metric]:
        loop = self.loop
        if loop is None or loop.is_closed():
            return []
        done = threading.Event()

        def flush() -> None:
            try:
                self._metrics.flush()
            finally:
                done.set()

        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(flush)
            done.wait(1.0)
        return []


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
