"""Run the nudge gRPC server: `nudge serve --repo feature_repo --models models`.

Start-up loads the newest version of each model, checks every ONNX sha256 against its
manifest, checks that the Feast registry's feature services serve every feature the manifests
name (refusing to start otherwise, naming what is missing), derives the online-read plan once,
and only then reports SERVING on grpc.health.v1. The same server and port take live events
(nudge.v1.IngestService, service/ingest.py) into a live state store beside the online store.
Server reflection is on, so grpcurl and ghz need no proto files. SIGTERM/SIGINT: health goes
NOT_SERVING, in-flight calls get ``--grace-seconds`` to finish, then the process exits.

TLS, tokens and hostile bytes: service/security.py. Metrics (one port for all workers):
service/metrics.py. Logs and request ids: service/logs.py. Tracing: service/tracing.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from nudge.contract.api import INGEST_SERVICE, SCORING_SERVICE
from nudge.contract.manifest import ManifestError
from nudge.inputs import UserError, check, port_problem, user_errors
from nudge.third_party import quiet_known_warnings
from service import config, logs, security
from service.grpc_api import IngestServicer, ScoringServicer, add_ingest_service, add_scoring_service
from service.ingest import EventLog, Ingestor, IngestUnavailable
from service.models import check_served, load_latest
from service.online.base import OnlineFeatureReader
from service.online.live import LiveFeatures
from service.reloader import ModelReloader
from service.rpc import Method, Observation, add_service
from service.scorer import CONTEXT_REFS, Scorer

if TYPE_CHECKING:
    from multiprocessing.queues import SimpleQueue

    from feast import FeatureStore

    from service.metrics import Metrics
    from service.tracing import Tracing

log = logging.getLogger("nudge.server")

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# How often a process moves its in-process metric tallies into the exported values (in a worker
# of several, memory-mapped file writes): the most a worker's /metrics figures lag behind.
METRICS_FLUSH_SECONDS = 1.0

ReaderFactory = Callable[["FeatureStore", list[str]], OnlineFeatureReader]


class StartupError(UserError):
    """The server must not start; the message says why (``nudge serve`` prints it, exit 2)."""


def open_store(settings: config.Settings) -> FeatureStore:
    """The Feast FeatureStore for the configured repo (imports feast: start-up only)."""
    from feast import FeatureStore

    quiet_known_warnings()
    yaml_path = settings.feature_store_yaml
    return FeatureStore(repo_path=str(settings.repo), fs_yaml_file=Path(yaml_path) if yaml_path else None)


def build_scorer(
    settings: config.Settings, make_reader: ReaderFactory | None = None
) -> tuple[Scorer, FeatureStore]:
    """Everything done once: models loaded and checked, registry checked, read plan derived.

    Models first: a models directory the server cannot use is refused before Feast's import.
    ``make_reader(store, refs)`` builds the feature reader (default: the online store's, as the
    server reads; ``nudge score-audience`` passes one over the offline tables)."""
    from service.online.readers import reader_for

    try:
        models = load_latest(settings.models)
        store = open_store(settings)
        check_served(store, models, CONTEXT_REFS)
    except ManifestError as exc:
        raise StartupError(f"refusing to start: {exc}") from exc
    refs = list(dict.fromkeys([*models.feature_refs, *CONTEXT_REFS]))
    reader = make_reader(store, refs) if make_reader else reader_for(store, refs, settings)
    return Scorer(reader, models, settings), store


def build_ingestor(settings: config.Settings, store: FeatureStore) -> Ingestor:
    """The live state store beside the repo's online store, and the event log.

    Raises ``UnsupportedStore`` (an online store with no live state store yet) or
    ``IngestUnavailable`` (store or log cannot be opened): Ingest is then not served, and
    scoring goes on."""
    from service.live_stores import state_store_for

    state_store = state_store_for(store, settings.store_timeout_ms / 1000)
    try:
        return Ingestor(state_store, EventLog(settings.event_log_path), settings)
    except IngestUnavailable:
        state_store.close()
        raise


def grpc_options(settings: config.Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1),
    ]


def observation(settings: config.Settings, metrics: Metrics | None) -> Observation:
    """What every method's wrapper does besides the method (service/rpc.py), from the settings.

    Request ids are tracked only where a record can carry them: JSON logs or the access log."""
    return Observation(
        metrics=metrics,
        auth=security.bearer_auth(settings),
        request_ids=settings.log_format == "json" or settings.access_log,
        access_log=settings.access_log,
        access_log_every=settings.access_log_every,
    )


def add_health_service(server: grpc.aio.Server, health: HealthServicer, observed: Observation) -> None:
    """grpc.health.v1 with Check wrapped like nudge's methods (counted, open without a token),
    unless nothing observes it: then it is registered as grpc_health registers it, so the no-op
    baseline costs what grpc.aio's own no-op costs. Watch (a stream) is never wrapped."""
    if observed.metrics is None and not observed.access_log:
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        return
    watch = grpc.unary_stream_rpc_method_handler(
        health.Watch,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )
    check = Method(
        "Check", health.Check, health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse, open=True
    )
    add_service(server, HEALTH_SERVICE, [check], observed, Watch=watch)


async def serve(settings: config.Settings, metrics: Metrics | None = None) -> None:
    """Serve until SIGTERM/SIGINT; health is SERVING only after the scorer is built."""
    tracing = None
    if settings.tracing:
        from service.tracing import Tracing

        tracing = Tracing(settings)
    try:
        await _serve(settings, metrics, tracing)
    finally:
        if tracing is not None:
            tracing.shutdown()


async def _serve(settings: config.Settings, metrics: Metrics | None, tracing: Tracing | None) -> None:
    try:
        observed = observation(settings, metrics)
    except security.SecurityError as exc:
        raise StartupError(f"refusing to start: {exc}") from exc
    # Tracing's interceptor is the only one, and only when tracing is on (outermost: the trace
    # also sees calls the token check refuses).
    chain = [tracing.interceptor()] if tracing is not None else []
    server = grpc.aio.server(options=grpc_options(settings), interceptors=chain)
    health_servicer = HealthServicer()
    add_health_service(server, health_servicer, observed)
    reflection.enable_server_reflection(
        [SCORING_SERVICE, INGEST_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME], server
    )
    for name in ("", SCORING_SERVICE, INGEST_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        transport = security.add_port(server, settings)
    except security.SecurityError as exc:
        raise StartupError(f"refusing to start: {exc}") from exc
    servicer = ScoringServicer()
    add_scoring_service(servicer, server, observed)
    ingest_servicer = IngestServicer()
    add_ingest_service(ingest_servicer, server, observed)
    started = time.monotonic()
    flusher = None
    if metrics is not None:
        metrics.attach(asyncio.get_running_loop())
        flusher = asyncio.create_task(metrics.flush_every(METRICS_FLUSH_SECONDS))
    await server.start()
    try:
        # Built on the loop's thread: store connections (sqlite3) belong to the thread using them.
        with _collector_paused():
            scorer, store = build_scorer(settings)
    except StartupError:
        await server.stop(0)
        raise
    scorer.instrument(*(probe for probe in (metrics, tracing) if probe is not None))
    if metrics is not None:
        metrics.set_models(scorer.models.versions)
    ingestor = await _start_ingest(settings, store, ingest_servicer, health_servicer)
    if ingestor is not None and settings.live_features:
        scorer.live = LiveFeatures(ingestor.store)
    servicer.scorer = scorer
    for name in ("", SCORING_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "SERVING on %s (%s) in %.2fs; models %s",
        settings.address,
        transport,
        time.monotonic() - started,
        scorer.models.versions,
    )
    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    reloader = asyncio.create_task(
        ModelReloader(scorer, store, metrics).poll(settings.model_poll_seconds, reload)
    )
    await stop.wait()
    reloader.cancel()
    log.info("draining: NOT_SERVING, %.1fs grace for in-flight calls", settings.grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_seconds)
    if flusher is not None:
        flusher.cancel()  # it flushes once more: the drained calls are counted too
        await asyncio.gather(flusher, return_exceptions=True)
    if ingestor is not None:
        ingestor.close()
    log.info("stopped")


async def _start_ingest(
    settings: config.Settings, store: FeatureStore, servicer: IngestServicer, health: HealthServicer
) -> Ingestor | None:
    """Serve Ingest when its store and log open; otherwise say why, per call and in the log,
    and leave its health NOT_SERVING (scoring does not depend on it)."""
    from service.live_stores import UnsupportedStore

    try:
        ingestor = build_ingestor(settings, store)
    except UnsupportedStore as exc:
        log.warning("Ingest not served: %s", exc)
        servicer.unavailable = (grpc.StatusCode.UNIMPLEMENTED, f"Ingest is not served here: {exc}")
        return None
    except IngestUnavailable as exc:
        log.error("Ingest not served: %s", exc)
        servicer.unavailable = (grpc.StatusCode.UNAVAILABLE, f"Ingest is not served: {exc}")
        return None
    servicer.ingestor = ingestor
    await health.set(INGEST_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "Ingest: live states in %s, event log %s", type(ingestor.store).__name__, settings.event_log_path
    )
    return ingestor


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection while the scorer is built, then one, and freeze what survived.

    Building it imports Feast and loads the registry and models: ~215,000 objects that live as
    long as the process. With the collector on, every full collection walks all of them again
    — 14–15 full collections of 35–200 ms in each worker here, 1.6 s of start-up. Frozen, they
    stay out of every later collection too."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
    gc.collect()
    gc.freeze()


def serve_process(settings: config.Settings) -> None:
    """One server process: serve until signalled; a UserError (exit 2) when it cannot start.

    Metrics: a lone process serves /metrics itself; a worker of several only records (into
    --metrics-dir files) and the parent serves the sum (see ``run_workers``)."""
    logs.configure(settings)
    metrics, exporter = None, None
    try:
        with user_errors(OSError):  # a port or file the OS refuses, named by the message
            if settings.metrics_port:
                from service import metrics as metrics_module

                if settings.workers == 1:
                    metrics = metrics_module.Metrics()
                    exporter = metrics_module.serve_single(settings, metrics)
                else:  # a worker of run_workers: metrics_dir is the directory the parent serves
                    metrics = metrics_module.Metrics(multiprocess_dir=settings.metrics_dir)
            asyncio.run(serve(settings, metrics))
    finally:
        if exporter is not None:
            exporter.close()


def _worker_main(settings: config.Settings, refusals: SimpleQueue[tuple[str, int]]) -> None:
    """A worker's refusal goes to the parent, which reports it once for all workers (they
    would all refuse alike, each a moment apart)."""
    try:
        serve_process(settings)
    except UserError as exc:
        refusals.put((str(exc), exc.exit_code))
        sys.exit(exc.exit_code)


def run_workers(settings: config.Settings) -> int:
    """N processes sharing the port (SO_REUSEPORT): each loads its own models and store
    connections and answers its own health checks. SIGTERM/SIGINT to this parent is passed to
    every worker, which drains; a worker that refuses to start stops them all. With metrics
    on, this process serves /metrics for all workers (prometheus-client multiprocess mode)."""
    logs.configure(settings)
    exporter = None
    if settings.metrics_port:
        from service import metrics as metrics_module

        with user_errors(OSError):
            directory, created = metrics_module.prepare_multiprocess_dir(settings)
            exporter = metrics_module.serve_multiprocess(settings, directory, owned=created)
        settings = dataclasses.replace(settings, metrics_dir=directory)
    try:
        return _run_workers(settings)
    finally:
        if exporter is not None:
            exporter.close()


def _run_workers(settings: config.Settings) -> int:
    ctx = multiprocessing.get_context("spawn")
    refusals: SimpleQueue[tuple[str, int]] = ctx.SimpleQueue()
    workers = [
        ctx.Process(target=_worker_main, args=(settings, refusals), name=f"nudge-worker-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.pid is not None and w.is_alive():
                os.kill(w.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for w in workers:
        w.start()
    code = 0
    exited: set[int] = set()
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(timeout=0.2)
            if w.exitcode is not None and w.pid is not None and w.pid not in exited:
                exited.add(w.pid)
                _worker_exited(settings, w.pid)
            if w.exitcode not in (None, 0) and not stopping:
                code = w.exitcode or 1
                forward(signal.SIGTERM, None)
    if not refusals.empty():
        raise UserError(*refusals.get())
    return code or max((w.exitcode or 0) for w in workers)


def _worker_exited(settings: config.Settings, pid: int) -> None:
    if settings.metrics_port and settings.metrics_dir is not None:
        from service import metrics as metrics_module

        metrics_module.worker_exited(settings.metrics_dir, pid)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = config.from_args(args)
    check(
        port_problem(settings.host, settings.port, "--port"),
        port_problem(settings.metrics_host or settings.host, settings.metrics_port, "--metrics-port")
        if settings.metrics_port
        else None,
    )
    if settings.workers > 1:
        return run_workers(settings)
    serve_process(settings)
    return 0
