"""Load-test a running nudge server the way ghz does, against a no-op baseline in the same run.

  nudge bench --target 127.0.0.1:50051 --now 2026-05-05T00:00:00Z --duration 20
  nudge bench --target 127.0.0.1:50051 --now 2026-05-05T00:00:00Z --rps 1000 --duration 30
  nudge bench --target 127.0.0.1:50051 -c 16 --client-procs 4 --duration 20
  nudge bench --target 127.0.0.1:50051 --call ScoreBatch --batch-size 100 -n 2000
  nudge bench --target 127.0.0.1:50051 --call Ingest --ids-from data/customers.parquet --duration 20
  nudge bench --target 127.0.0.1:50051 --feast-peer 127.0.0.1:6566 --feast-models models --duration 20
  nudge bench features --repo feature_repo [--feature-store-yaml feature_repo/feature_store.redis.yaml]
  nudge bench ghz-data --ids-from data/customers.parquet --now 2026-05-05T00:00:00Z --out FILE

Load:
  closed loop  --concurrency C calls in flight, each sent when the previous one returns, for
               -n/--total calls or --duration seconds per method.
  open loop    --rps R calls per second on a fixed schedule for --duration seconds. Latency
               counts from the *scheduled* send time, so a client or server that falls behind
               shows up as latency instead of silently sending less (coordinated omission).
Customer ids cycle through --ids (JSON list, ghz data file or one id per line; default: the
committed loadtest/customers.json) or --ids-from (a parquet file with a customer_id column).

Ingest: each call carries --batch-size events (default 1) of the next customers. Every event is
new and in time order per customer, so a correct server applies them all: a run-unique
event_id, and times from 1 h before --now (default: this machine's clock) on, 1 µs apart per
call (a run never reaches the server's skew limit, and the next run starts after it, so no event
is ever LATE). Client processes ingest disjoint customers. Requests cannot be cycled (a repeat
is a DUPLICATE), so each process serialises as many as its phases can send before the run: -n
exactly, --duration for at most INGEST_MAX_RATE calls/s; a closed loop that sends them all
stops early and says so. Replies are kept (not decoded) during the phases and decoded after:
the report counts applied, duplicate and rejected (of which LATE) events, and warns when any
event was not applied.

Peer: with --feast-peer, the same run also asks Feast's own gRPC feature server (`feast -c REPO
listen -a HOST:PORT`, on the same store) for the features the models in --feast-models read,
one customer per call, alternating with the target; the report adds `Score p50 / Feast p50`.

Baseline: the same run also calls grpc.health.v1.Health/Check, which does no work, with the
same client and load. Absolute times drift on shared machines, so the headline figure is the
method's p50 divided by the no-op p50. The two alternate in --rounds short phases (ABBA order)
after a --warmup that is not counted, and the ratio is the median of the per-round ratios.

Statistics follow ghz: count, total, requests/sec, fastest/average/slowest, the 10..99 %
latency distribution (nearest rank, over OK calls, as ghz), status-code and error
distributions. --client-procs K splits the load over K processes (one channel each) and merges
their raw latency samples, never their percentiles. The client is grpcio's synchronous stack,
blocking calls in threads (see _send_loop for why), sending pre-serialised requests and not
decoding responses while timing (Ingest's are decoded after each phase). Every run is bounded in calls and time; only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import itertools
import json
import math
import multiprocessing
import queue
import socket
import statistics
import sys
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from nudge.client.credentials import ClientSecurity, add_client_arguments, client_security
from nudge.client.ids import load_ids
from nudge.client.server_watch import ServerWatch, format_server
from nudge.contract.events import EVENT_TYPES
from nudge.inputs import check, parse_time, unwritable_file, user_errors
from nudge.v1 import ingest_pb2
from nudge.v1 import scoring_pb2 as pb

SCHEMA = "nudge.bench/v1"
BASELINE = "Check"
PEER = "Feast"  # --feast-peer: Feast's gRPC feature server, features-only (`feast listen`)
METHOD_PATHS = {
    "Score": "/nudge.v1.ScoringService/Score",
    "ScoreBatch": "/nudge.v1.ScoringService/ScoreBatch",
    "Ingest": "/nudge.v1.IngestService/Ingest",
    BASELINE: "/grpc.health.v1.Health/Check",
    PEER: "/GrpcFeatureServer/GetOnlineFeatures",
}
PERCENTILES = (10, 25, 50, 75, 90, 95, 99)
DEFAULT_TOTAL = 5000
# Bounds that keep a typo from turning into an hour of load on a shared machine.
MAX_DURATION_S = 3600.0
MAX_TOTAL = 10_000_000
MAX_RPS = 100_000.0
MAX_CONCURRENCY = 1024
OPEN_LOOP_THREADS = 16  # open loop: sending threads, i.e. the most calls in flight
MAX_PROCS = 32
MAX_DISTINCT_REQUESTS = 100_000
CONNECT_TIMEOUT_S = 5.0
PROGRESS_EVERY_S = 10.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Ingest: closed-loop runs by --duration serialise requests for this many calls per second
# (several times what a server on this 2-core machine takes), at most MAX_INGEST_EVENTS events.
INGEST_MAX_RATE = 5_000.0
MAX_INGEST_EVENTS = 2_000_000
INGEST_LEAD_S = 3_600  # event times start this long before --now (default: the client's clock)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class IngestEvents:
    """How Ingest's requests are made: in each load process, before its run, for that process's
    customers. Every event is new (``run_id``, request and event numbers make its id) and
    later than the customer's previous one (request ``n`` of all processes is timed
    ``first_time_us + n`` µs), so a correct server applies every one."""

    ids: tuple[str, ...]
    batch_size: int
    first_time_us: int  # Unix µs
    run_id: str

    def requests(self, calls: int, index: int, procs: int) -> tuple[bytes, ...]:
        """Process ``index`` of ``procs``: ``calls`` serialised IngestRequests of its customers
        (every procs-th id, so no customer's events race between processes), never repeated.
        Event types cycle through all ten; a purchase has an amount."""
        ids, size, types = self.ids[index::procs], self.batch_size, len(EVENT_TYPES)
        out = []
        for j in range(calls):
            n = j * procs + index  # the request's number among all processes' requests
            seconds, micros = divmod(self.first_time_us + n, 1_000_000)
            request = ingest_pb2.IngestRequest()
            for k in range(size):
                number = n * size + k
                event = request.events.add()  # filled in place: twice as fast as constructors
                event.event_id = f"{self.run_id}-{number}"
                event.customer_id = ids[(j * size + k) % len(ids)]
                event.event_time.seconds = seconds
                event.event_time.nanos = micros * 1_000
                event.event_type = EVENT_TYPES[number % types]
                if event.event_type == "purchase":
                    event.amount = 10.0
            out.append(request.SerializeToString())
        return tuple(out)


@dataclass(frozen=True)
class Method:
    """One RPC under test, with its requests serialised once (cycled through per call).

    With ``events`` (Ingest), ``requests`` are made per load process by :meth:`prepared` and
    sent once each, never cycled, and the replies are decoded after each phase."""

    name: str
    path: str
    requests: tuple[bytes, ...]
    events: IngestEvents | None = None
    target: str | None = None  # another server's HOST:PORT (plaintext, no token): a peer

    def prepared(self, load: Load, rounds: int, index: int, procs: int) -> Method:
        """This method with the requests process ``index`` of ``procs`` needs for ``load``."""
        if self.events is None:
            return self
        return replace(self, requests=self.events.requests(ingest_calls(load, rounds), index, procs))


def ingest_calls(load: Load, rounds: int) -> int:
    """Calls one process's warm-up and rounds may send: exact by count, else by time at the
    open loop's rate or at most INGEST_MAX_RATE."""

    def calls(phase: Load) -> int:
        if phase.calls is not None:
            return phase.calls
        assert phase.seconds is not None
        return math.ceil(phase.seconds * (phase.rps if phase.rps is not None else INGEST_MAX_RATE)) + 1

    warmup = load.warmup()
    return (0 if warmup is None else calls(warmup)) + rounds * calls(load)


@dataclass(frozen=True)
class Load:
    """How one process drives each phase. Exactly one of calls/seconds is set per phase."""

    concurrency: int
    rps: float | None
    calls: int | None
    seconds: float | None
    warmup_calls: int
    warmup_seconds: float
    timeout_s: float

    def warmup(self) -> Load | None:
        """The uncounted warm-up phase with this load, or None (open loop: calls → seconds)."""
        if not (self.warmup_calls or self.warmup_seconds):
            return None
        if self.rps is not None:
            seconds = self.warmup_seconds or self.warmup_calls / self.rps
            return replace(self, calls=None, seconds=seconds)
        return replace(self, calls=self.warmup_calls or None, seconds=self.warmup_seconds or None)

    @property
    def phase_limit_s(self) -> float:
        """Hard stop for one phase, whatever the server does."""
        if self.seconds is not None:
            return self.seconds + self.timeout_s + 5.0
        return MAX_DURATION_S


@dataclass(frozen=True)
class Plan:
    """Everything a load-generating process needs; picklable so child processes get a copy."""

    target: str
    methods: tuple[Method, ...]  # the method under test first, then the baseline if any
    rounds: int
    load: Load
    first_index: int = 0  # where this process starts in each method's request cycle
    connections: int = 1  # channels (TCP connections) this process spreads its threads over
    security: ClientSecurity = field(default_factory=ClientSecurity)  # TLS and token, if secured
    process: tuple[int, int] = (0, 1)  # this process's index, and how many load processes

    def share(self, index: int, procs: int) -> Plan:
        """This plan's part for process ``index`` of ``procs``: load split, ids staggered."""
        load = self.load
        part = replace(
            load,
            concurrency=_split(load.concurrency, index, procs),
            rps=None if load.rps is None else load.rps / procs,
            calls=None if load.calls is None else _split(load.calls, index, procs),
            warmup_calls=_split(load.warmup_calls, index, procs),
        )
        stagger = index * max(1, len(self.methods[0].requests) // procs)
        return replace(
            self,
            load=part,
            first_index=stagger,
            connections=_split(self.connections, index, procs),
            process=(index, procs),
        )


def _order(methods: Sequence[Method], round_index: int) -> list[Method]:
    """ABBA order: a linear drift over the run weighs on every method alike."""
    return list(methods) if round_index % 2 == 0 else list(methods)[::-1]


def _split(total: int, index: int, parts: int) -> int:
    """Integer share ``index`` of ``total`` over ``parts`` (shares differ by at most one)."""
    return total // parts + (1 if index < total % parts else 0)


# --------------------------------------------------------------------------- results


@dataclass
class Phase:
    """Raw outcome of one method for one round in one process (latencies in nanoseconds)."""

    method: str
    round: int
    ok_ns: array[int] = field(default_factory=lambda: array("q"))
    error_ns: array[int] = field(default_factory=lambda: array("q"))
    codes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started_ns: int = 0
    ended_ns: int = 0
    cpu_s: float = 0.0
    lag_ns: array[int] = field(default_factory=lambda: array("q"))  # open loop: send - scheduled
    outcomes: Counter[str] = field(default_factory=Counter)  # Ingest: events per outcome (tally_ingest)
    ran_out: bool = False  # Ingest: a closed loop sent every request it had before its limit

    @property
    def count(self) -> int:
        return len(self.ok_ns) + len(self.error_ns)

    def absorb(self, other: Phase) -> None:
        """Merge another process's samples of the same phase: raw samples, never percentiles."""
        self.ok_ns.extend(other.ok_ns)
        self.error_ns.extend(other.error_ns)
        self.codes.update(other.codes)
        self.errors.update(other.errors)
        self.started_ns = min(self.started_ns, other.started_ns)
        self.ended_ns = max(self.ended_ns, other.ended_ns)
        self.cpu_s += other.cpu_s
        self.lag_ns.extend(other.lag_ns)
        self.outcomes.update(other.outcomes)
        self.ran_out = self.ran_out or other.ran_out


class _Sink:
    """Where one sending thread records outcomes; lists, merged once the phase is over."""

    def __init__(self) -> None:
        self.ok: list[int] = []
        self.error: list[int] = []
        self.codes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.lag: list[int] = []
        self.replies: list[bytes] = []  # kept undecoded when the method's replies are checked

    @property
    def count(self) -> int:
        return len(self.ok) + len(self.error)

    def fail(self, latency_ns: int, error: grpc.RpcError) -> None:
        """Count a failed call under its status code and its error text (ghz's two tables)."""
        code, details = error.code().name, error.details()
        self.error.append(latency_ns)
        self.codes[code] += 1
        self.errors[f"{code}: {details}"] += 1


def _phase(
    method: Method, round_index: int, sinks: Sequence[_Sink], started: int, cpu0: float, ran_out: bool
) -> Phase:
    phase = Phase(method.name, round_index, started_ns=started, ended_ns=time.perf_counter_ns())
    phase.cpu_s = time.process_time() - cpu0  # before decoding replies: not the client's per-call cost
    phase.ran_out = ran_out
    for sink in sinks:
        phase.ok_ns.extend(sink.ok)
        phase.error_ns.extend(sink.error)
        phase.codes.update(sink.codes)
        phase.errors.update(sink.errors)
        phase.lag_ns.extend(sink.lag)
    if phase.ok_ns:
        phase.codes["OK"] += len(phase.ok_ns)
    if method.events is not None:
        phase.outcomes = tally_ingest(itertools.chain.from_iterable(sink.replies for sink in sinks))
    return phase


def tally_ingest(replies: Iterable[bytes]) -> Counter[str]:
    """Events per outcome over serialised IngestResponses: ``applied``, ``duplicates``,
    ``rejected`` (the answers' own counts; rejected includes LATE), ``late``, and each reason
    given for an event not applied as ``"OUTCOME: reason"``."""
    tally: Counter[str] = Counter()
    applied = ingest_pb2.EventResult.OUTCOME_APPLIED
    for raw in replies:
        reply = ingest_pb2.IngestResponse.FromString(raw)
        tally["applied"] += reply.applied
        tally["duplicates"] += reply.duplicates
        tally["rejected"] += reply.rejected
        if reply.applied == len(reply.results):
            continue
        for result in reply.results:
            if result.outcome != applied:
                name = ingest_pb2.EventResult.Outcome.Name(result.outcome).removeprefix("OUTCOME_")
                tally["late"] += name == "LATE"
                tally[f"{name}: {result.reason.split(' (')[0]}"] += 1  # without the times in it
    return tally


# --------------------------------------------------------------------------- load engine


def _send_loop(
    calls: Sequence[grpc.UnaryUnaryMultiCallable[bytes, bytes]],
    requests: Sequence[bytes],
    first: int,
    load: Load,
    sinks: Sequence[_Sink],
    once: bool = False,
) -> bool:
    """One thread per sink making blocking calls; paced to a schedule in open loop. Thread i
    sends on connection i mod len(calls).

    ``once`` (Ingest): each request is sent at most once, from ``first`` on, never cycled, and
    the replies are kept in the sinks. Returns True when the phase stopped because none was
    left.

    Closed loop: each thread sends its next call as soon as the previous one returns, until
    ``load.calls`` calls or ``load.seconds`` have passed. Open loop: call n is due at
    start + n / rps; whichever thread takes it sleeps until then (a thread sleep is precise to
    tens of µs, an asyncio timer rounds up to a whole millisecond), and its latency counts
    from the due time, so a late send (all threads busy, or the client starved of CPU) shows
    as latency and as send lag instead of silently lowering the load.

    Why blocking calls in threads: grpcio's sync stack waits in C without the GIL and has no
    event loop between a response and the next send. It cost the least client CPU per call and gave the lowest latency with 1-4 calls in flight per
    process, against grpc.aio (one channel, many tasks) and chained futures; more load is
    spread over processes (loadtest/README.md has the numbers).
    """
    pc = time.perf_counter_ns
    start = pc() + 1_000_000  # the first due time, once every thread is running
    limit_s = load.seconds if load.seconds is not None and load.rps is None else load.phase_limit_s
    stop_ns = start + int(limit_s * 1e9)
    if load.rps is not None:
        assert load.seconds is not None
        total, period_ns = max(1, round(load.rps * load.seconds)), 1e9 / load.rps
    else:
        total, period_ns = load.calls if load.calls is not None else sys.maxsize, 0.0
    numbers = itertools.count()  # next() is atomic under the GIL: the threads share it
    size, timeout = len(requests), load.timeout_s
    left = size - first if once else sys.maxsize
    ran_out = threading.Event()

    def send(sink: _Sink, call: grpc.UnaryUnaryMultiCallable[bytes, bytes]) -> None:
        record = sink.ok.append  # hoisted: this loop is the client's per-call overhead
        keep = sink.replies.append if once else None
        for n in numbers:
            if n >= total or pc() >= stop_ns:
                return
            if n >= left:
                ran_out.set()
                return
            request = requests[(first + n) % size]
            if period_ns:
                due = start + int(n * period_ns)
                if due > pc():
                    time.sleep((due - pc()) / 1e9)
                sink.lag.append(pc() - due)
            else:
                due = pc()
            try:
                reply = call(request, timeout=timeout)
            except grpc.RpcError as exc:
                sink.fail(pc() - due, exc)
            else:
                record(pc() - due)
                if keep is not None:
                    keep(reply)

    threads = [
        threading.Thread(target=send, args=(sink, calls[i % len(calls)]), daemon=True)
        for i, sink in enumerate(sinks)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ran_out.is_set()


# --------------------------------------------------------------------------- one process


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """Progress sink of all but the first load process."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_plan(plan: Plan, progress: Progress = _quiet, barrier: Any = None) -> list[Phase]:
    """Warm up, then every round's phases, in this process on ``plan.connections`` channels.

    ``barrier`` (several processes) lines all processes up before each phase so they always
    load the server with the same method at the same time.
    """
    load = plan.load
    methods = [m.prepared(load, plan.rounds, *plan.process) for m in plan.methods]
    with ExitStack() as stack:
        channels = [stack.enter_context(_connect(plan)) for _ in range(plan.connections)]
        calls = {}
        for m in methods:
            if m.target is None:
                calls[m.name] = [_with_token(ch.unary_unary(m.path, None, None), plan) for ch in channels]
            else:  # a peer: its own connections, as many as nudge gets
                peer = replace(plan, target=m.target, security=ClientSecurity())
                peers = [stack.enter_context(_connect(peer)) for _ in range(plan.connections)]
                calls[m.name] = [ch.unary_unary(m.path, None, None) for ch in peers]
        # Cycled requests start staggered per process; Ingest's are this process's own.
        cursor = {m.name: 0 if m.events is not None else plan.first_index for m in methods}
        warmup = load.warmup()
        if warmup is not None:
            for method in methods:
                cursor[method.name] += _run_phase(
                    calls[method.name], method, warmup, cursor[method.name], -1, progress
                ).count
            progress(f"warm-up done: {_describe_warmup(load)} per method, not counted")
        phases = []
        for round_index in range(plan.rounds):
            for method in _order(methods, round_index):
                if barrier is not None:
                    barrier.wait(timeout=load.phase_limit_s + 60)
                phase = _run_phase(
                    calls[method.name], method, load, cursor[method.name], round_index, progress
                )
                cursor[method.name] += phase.count
                phases.append(phase)
                progress(_phase_line(phase, plan.rounds))
        return phases


def _connect(plan: Plan) -> grpc.Channel:
    """A channel with a TCP connection of its own (a local subchannel pool: channels to one
    target would otherwise share one connection, which SO_REUSEPORT hands to one worker)."""
    channel = plan.security.channel(plan.target, [("grpc.use_local_subchannel_pool", 1)])
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        channel.close()
        raise ConnectionError(f"no gRPC server answers at {plan.target}") from None
    return channel


def _with_token(
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes], plan: Plan
) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """The call with the bearer token bound once (not built per call), when there is one."""
    metadata = plan.security.metadata
    if metadata is None:
        return call
    bound: Any = functools.partial(call, metadata=metadata)
    return bound


def _run_phase(
    calls: Sequence[grpc.UnaryUnaryMultiCallable[bytes, bytes]],
    method: Method,
    load: Load,
    first: int,
    round_index: int,
    progress: Progress,
) -> Phase:
    sinks = [_Sink() for _ in range(load.concurrency)]
    started, cpu0 = time.perf_counter_ns(), time.process_time()
    with _ticker(progress, method.name, sinks):
        ran_out = _send_loop(calls, method.requests, first, load, sinks, once=method.events is not None)
    return _phase(method, round_index, sinks, started, cpu0, ran_out)


@contextmanager
def _ticker(progress: Progress, label: str, sinks: Sequence[_Sink]) -> Iterator[None]:
    """Report calls made so far every PROGRESS_EVERY_S while a long phase runs."""
    if progress is _quiet:
        yield
        return
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(PROGRESS_EVERY_S):
            progress(f"  {label}: {sum(sink.count for sink in sinks)} calls so far")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _describe_warmup(load: Load) -> str:
    if load.warmup_seconds:
        return f"{load.warmup_seconds:g} s"
    return f"{load.warmup_calls} calls"


def _phase_line(phase: Phase, rounds: int) -> str:
    ok = sorted(phase.ok_ns)
    p50 = f"{_nearest_rank(ok, 50) / 1e6:.3f} ms" if ok else "-"
    seconds = (phase.ended_ns - phase.started_ns) / 1e9
    errors = len(phase.error_ns)
    outcomes = phase.outcomes
    events = (
        f", events applied {outcomes['applied']}, duplicates {outcomes['duplicates']}, "
        f"rejected {outcomes['rejected']}"
        if outcomes
        else ""
    )
    return (
        f"round {phase.round + 1}/{rounds} {phase.method}: {phase.count} calls in {seconds:.1f} s, p50 {p50}"
        + (f", {errors} errors" if errors else "")
        + events
        + (", ran out of requests" if phase.ran_out else "")
    )


# --------------------------------------------------------------------------- several processes


def run_processes(plan: Plan, procs: int, progress: Progress = _say) -> list[Phase]:
    """Run the plan split over ``procs`` processes and merge their phases sample by sample."""
    if procs == 1:
        return run_plan(plan, progress)
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold gRPC threads
    barrier = context.Barrier(procs)
    results: multiprocessing.Queue[tuple[int, list[Phase] | str]] = context.Queue()
    children = [
        context.Process(target=_child, args=(plan.share(i, procs), i, barrier, results), daemon=True)
        for i in range(procs)
    ]
    for child in children:
        child.start()
    try:
        outcomes = _collect(results, procs, _run_bound_s(plan))
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.terminate()
    return _merge(outcomes)


def _child(plan: Plan, index: int, barrier: Any, results: Any) -> None:
    """Entry point of a load process: run the plan share, send back phases or the error."""
    try:
        results.put((index, run_plan(plan, _say if index == 0 else _quiet, barrier)))
    except Exception as exc:
        barrier.abort()
        results.put((index, f"{type(exc).__name__}: {exc}"))


def _collect(results: Any, procs: int, bound_s: float) -> list[list[Phase]]:
    """Every process's phases in process order; the first failure (or the time bound) raises."""
    deadline = time.monotonic() + bound_s
    outcomes: dict[int, list[Phase]] = {}
    while len(outcomes) < procs:
        try:
            index, outcome = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"load processes did not finish within {bound_s:.0f} s") from None
        if isinstance(outcome, str):
            raise RuntimeError(f"load process {index} failed: {outcome}")
        outcomes[index] = outcome
    return [outcomes[i] for i in sorted(outcomes)]


def _run_bound_s(plan: Plan) -> float:
    load = plan.load
    phases = plan.rounds * len(plan.methods)
    warmup = len(plan.methods) * (load.warmup_seconds or 0.0)
    return 60.0 + warmup + phases * (load.phase_limit_s + 60)


def _merge(outcomes: list[list[Phase]]) -> list[Phase]:
    """Phases of all processes, merged per (round, method), in the first process's order."""
    merged = {(p.round, p.method): p for p in outcomes[0]}
    for phases in outcomes[1:]:
        for phase in phases:
            merged[(phase.round, phase.method)].absorb(phase)
    return list(merged.values())


# --------------------------------------------------------------------------- statistics


def _nearest_rank(ordered: Sequence[int], percent: float) -> int:
    """ghz's percentile: the nearest-rank value of an ascending sequence."""
    rank = math.ceil(percent / 100 * len(ordered))
    return ordered[max(0, rank - 1)]


def _ms(ns: float) -> float:
    return round(ns / 1e6, 4)


def summarize(phases: Sequence[Phase], path: str, batch_size: int | None = None) -> dict[str, Any]:
    """ghz's summary of one method over all its rounds (the report's per-method object);
    ``batch_size`` (Ingest: events per call) adds the events' outcomes."""
    ok = sorted(itertools.chain.from_iterable(p.ok_ns for p in phases))
    errors = list(itertools.chain.from_iterable(p.error_ns for p in phases))
    count = len(ok) + len(errors)
    total_s = sum(p.ended_ns - p.started_ns for p in phases) / 1e9
    codes: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    for p in phases:
        codes.update(p.codes)
        messages.update(p.errors)
    round_p50 = [_nearest_rank(sorted(p.ok_ns), 50) for p in phases if p.ok_ns]
    lag = sorted(itertools.chain.from_iterable(p.lag_ns for p in phases))
    return {
        "method": path.lstrip("/"),
        "count": count,
        "ok": len(ok),
        "errors": len(errors),
        "total_s": round(total_s, 4),
        "rps": round(count / total_s, 2) if total_s > 0 else None,
        "fastest_ms": _ms(ok[0]) if ok else None,
        "average_ms": _ms((sum(ok) + sum(errors)) / count) if count else None,
        "slowest_ms": _ms(ok[-1]) if ok else None,
        "latency_ms": {f"p{q}": _ms(_nearest_rank(ok, q)) for q in PERCENTILES} if ok else None,
        "p50_ms_median_of_rounds": _ms(statistics.median(round_p50)) if round_p50 else None,
        "status_codes": dict(codes.most_common()),
        "error_distribution": dict(messages.most_common()),
        "client_cpu_us_per_call": round(sum(p.cpu_s for p in phases) / count * 1e6, 1) if count else None,
        "send_lag_ms": {
            "p50": _ms(_nearest_rank(lag, 50)),
            "p99": _ms(_nearest_rank(lag, 99)),
            "max": _ms(lag[-1]),
        }
        if lag
        else None,
        "events": _events_summary(phases, batch_size) if batch_size else None,
    }


def _events_summary(phases: Sequence[Phase], batch_size: int) -> dict[str, Any]:
    """Ingest: what the server did with the events of the OK calls (warm-up not included)."""
    tally: Counter[str] = Counter()
    for p in phases:
        tally.update(p.outcomes)
    sent = batch_size * sum(len(p.ok_ns) for p in phases)
    reasons = {key: n for key, n in tally.most_common() if ":" in key}
    return {
        "per_call": batch_size,
        "sent": sent,
        "applied": tally["applied"],
        "duplicates": tally["duplicates"],
        "rejected": tally["rejected"],
        "late": tally["late"],
        "not_applied_reasons": dict(list(reasons.items())[:10]),
        "all_applied": tally["applied"] == sent,
        "ran_out_of_requests": any(p.ran_out for p in phases),
    }


def round_ratios(phases: Sequence[Phase], target: str) -> list[dict[str, Any]]:
    """Per round: each method's p50, the target's p50 over the baseline's and, with a peer,
    over the peer's."""
    rounds: dict[int, dict[str, float]] = {}
    for p in phases:
        if p.ok_ns:
            rounds.setdefault(p.round, {})[p.method] = _nearest_rank(sorted(p.ok_ns), 50)
    out = []
    for index in sorted(rounds):
        p50 = rounds[index]
        ratio = p50[target] / p50[BASELINE] if target in p50 and BASELINE in p50 else None
        peer = p50[target] / p50[PEER] if target in p50 and PEER in p50 else None
        out.append(
            {
                "round": index,
                "p50_ms": {name: _ms(value) for name, value in p50.items()},
                "ratio_p50": None if ratio is None else round(ratio, 4),
                "peer_ratio_p50": None if peer is None else round(peer, 4),
            }
        )
    return out


def build_report(plan: Plan, phases: Sequence[Phase], options: dict[str, Any]) -> dict[str, Any]:
    """The JSON report (schema ``nudge.bench/v1``; see loadtest/README.md)."""
    target = plan.methods[0].name
    results = {
        m.name: summarize(
            [p for p in phases if p.method == m.name],
            m.path,
            None if m.events is None else m.events.batch_size,
        )
        for m in plan.methods
    }
    rounds = round_ratios(phases, target)
    ratios = [r["ratio_p50"] for r in rounds if r["ratio_p50"] is not None]
    peer = [r["peer_ratio_p50"] for r in rounds if r["peer_ratio_p50"] is not None]
    return {
        "schema": SCHEMA,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": plan.target,
        "call": target,
        "baseline": BASELINE if any(m.name == BASELINE for m in plan.methods) else None,
        "peer": next((f"{PEER} at {m.target}" for m in plan.methods if m.name == PEER), None),
        "options": options,
        "results": results,
        "ratio_p50": round(statistics.median(ratios), 4) if ratios else None,
        "peer_ratio_p50": round(statistics.median(peer), 4) if peer else None,
        "rounds": rounds,
    }


# --------------------------------------------------------------------------- text output


def format_report(report: dict[str, Any]) -> str:
    """ghz-style text: a summary per method, then the headline ratio."""
    options = report["options"]
    mode = (
        f"open loop {options['rps']:g} RPS"
        if options["rps"]
        else f"closed loop, concurrency {options['concurrency']}"
    )
    lines = [
        f"nudge bench {report['target']}: {mode}, {options['rounds']} rounds, "
        f"warm-up {options['warmup']}, {options['client_procs']} client process(es), "
        f"{options['connections']} connection(s), {options['ids']} ids",
    ]
    for name, summary in report["results"].items():
        role = {report["baseline"]: "no-op baseline", PEER: "peer"}.get(name, "target")
        lines += ["", f"{summary['method']} ({role})", *_format_summary(summary)]
    if report["ratio_p50"] is not None:
        per_round = " ".join(f"{r['ratio_p50']:.2f}" for r in report["rounds"] if r["ratio_p50"] is not None)
        lines += [
            "",
            f"{report['call']} p50 / {report['baseline']} p50 = {report['ratio_p50']:.2f} "
            f"(median of rounds: {per_round})",
        ]
    if report.get("peer_ratio_p50") is not None:
        per_round = " ".join(f"{r['peer_ratio_p50']:.2f}" for r in report["rounds"] if r["peer_ratio_p50"])
        lines += [
            f"{report['call']} p50 / {PEER} p50 = {report['peer_ratio_p50']:.2f} (median of rounds: {per_round})"
        ]
    if report.get("server"):
        lines += ["", *format_server(report["server"])]
    return "\n".join(lines)


def _format_summary(s: dict[str, Any]) -> list[str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} ms"

    lines = [
        "Summary:",
        f"  Count:        {s['count']}",
        f"  Total:        {s['total_s']:.2f} s",
        f"  Slowest:      {ms(s['slowest_ms'])}",
        f"  Fastest:      {ms(s['fastest_ms'])}",
        f"  Average:      {ms(s['average_ms'])}",
        f"  Requests/sec: {s['rps'] if s['rps'] is not None else '-'}",
        "",
        "Latency distribution:",
    ]
    for key, value in (s["latency_ms"] or {}).items():
        lines.append(f"  {key[1:]:>2} % in {ms(value)}")
    lines.append(f"  p50, median of rounds: {ms(s['p50_ms_median_of_rounds'])}")
    if s["send_lag_ms"]:
        lag = s["send_lag_ms"]
        lines.append(
            f"  send lag behind schedule: p50 {ms(lag['p50'])}, p99 {ms(lag['p99'])}, max {ms(lag['max'])}"
        )
    lines += ["", "Status code distribution:"]
    lines += [f"  [{code}]  {n} responses" for code, n in s["status_codes"].items()]
    if s["error_distribution"]:
        lines += ["", "Error distribution:"]
        lines += [f"  [{n}]  {message}" for message, n in s["error_distribution"].items()]
    if s["events"] is not None:
        lines += ["", *_format_events(s["events"])]
    lines.append(f"Client CPU: {s['client_cpu_us_per_call']} µs per call")
    return lines


def _format_events(e: dict[str, Any]) -> list[str]:
    lines = [
        f"Events ({e['per_call']} per call, OK calls): {e['sent']} sent, {e['applied']} applied, "
        f"{e['duplicates']} duplicates, {e['rejected']} rejected ({e['late']} late)"
    ]
    if not e["all_applied"]:
        lines.append(ingest_warning(e))
        lines += [f"  [{n}]  {reason}" for reason, n in e["not_applied_reasons"].items()]
    if e["ran_out_of_requests"]:
        lines.append(ran_out_warning())
    return lines


def ingest_warning(e: dict[str, Any]) -> str:
    return (
        f"WARNING: {e['sent'] - e['applied']} of {e['sent']} events not applied (reasons below): "
        "these are not the timings of applying events"
    )


def ran_out_warning() -> str:
    return (
        f"WARNING: a phase sent every Ingest request it had and stopped early (over {INGEST_MAX_RATE:g} "
        "calls/s per --duration second): use -n"
    )


def _score_messages(ids: Sequence[str], now: datetime | None) -> list[pb.ScoreRequest]:
    """One ScoreRequest per id, at most MAX_DISTINCT_REQUESTS (they are cycled through)."""
    stamp = None
    if now is not None:
        stamp = Timestamp()
        stamp.FromDatetime(now)
    return [pb.ScoreRequest(customer_id=cid, now=stamp) for cid in ids[:MAX_DISTINCT_REQUESTS]]


def score_requests(ids: Sequence[str], now: datetime | None) -> tuple[bytes, ...]:
    """Serialised once, before the run: the send loop only picks the next bytes."""
    return tuple(m.SerializeToString() for m in _score_messages(ids, now))


def batch_requests(ids: Sequence[str], now: datetime | None, size: int) -> tuple[bytes, ...]:
    """Serialised ScoreBatchRequests of ``size`` consecutive ids, wrapping round the id list."""
    singles = _score_messages(ids, now)
    batches = max(1, min(MAX_DISTINCT_REQUESTS // size, math.ceil(len(singles) / size)))
    return tuple(
        pb.ScoreBatchRequest(
            requests=[singles[(b * size + k) % len(singles)] for k in range(size)]
        ).SerializeToString()
        for b in range(batches)
    )


def check_loopback(target: str) -> None:
    """Refuse targets that are not this machine: this is a load generator."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"target {target!r} is not HOST:PORT")
    addresses = {
        str(info[4][0]) for info in socket.getaddrinfo(host.strip("[]"), int(port), proto=socket.IPPROTO_TCP)
    }
    remote = {a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback}
    if remote:
        raise ValueError(
            f"target {target} resolves to non-loopback {sorted(remote)}; nudge bench only loads this machine"
        )


def parse_warmup(text: str) -> tuple[int, float]:
    """``"2s"`` → 2 seconds; ``"500"`` → 500 calls; ``"0"`` → none."""
    text = text.strip()
    if text.endswith("s"):
        seconds = float(text[:-1])
        if not 0 <= seconds <= 60:
            raise argparse.ArgumentTypeError("warm-up seconds must be within 0..60")
        return 0, seconds
    calls = int(text)
    if not 0 <= calls <= 100_000:
        raise argparse.ArgumentTypeError("warm-up calls must be within 0..100000")
    return calls, 0.0


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", default="127.0.0.1:50051", help="Server HOST:PORT, loopback only (default %(default)s)."
    )
    parser.add_argument(
        "--call", choices=["Score", "ScoreBatch", "Ingest"], default="Score", help="Method under test."
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="Customers per ScoreBatch call (default 100), events per Ingest call (default 1).",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        help=f"Calls in flight: closed loop exactly (default 1), open loop at most (default {OPEN_LOOP_THREADS}).",
    )
    parser.add_argument("-n", "--total", type=int, help=f"Calls per method (default {DEFAULT_TOTAL}).")
    parser.add_argument("--duration", type=float, help="Seconds per method, split over the rounds.")
    parser.add_argument("--rps", type=float, help="Open loop at this constant rate (needs --duration).")
    parser.add_argument(
        "--rounds", type=int, default=5, help="Alternating baseline/target phases (default %(default)s)."
    )
    parser.add_argument(
        "--warmup",
        default="1s",
        help="Uncounted warm-up per method: '2s' or a call count (default %(default)s).",
    )
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="Deadline of each call in seconds (default %(default)s)."
    )
    parser.add_argument("--no-baseline", action="store_true", help="Skip the no-op Health/Check baseline.")
    parser.add_argument(
        "--feast-peer",
        metavar="HOST:PORT",
        help="Also call Feast's gRPC feature server there (`feast -c REPO listen`, loopback, plaintext) "
        "for the same customers' features, alternating with the target: Score p50 / Feast p50.",
    )
    parser.add_argument(
        "--feast-models",
        type=Path,
        help="With --feast-peer: the models directory whose inputs Feast is asked for.",
    )
    parser.add_argument(
        "--client-procs", type=int, default=1, help="Load-generating processes (default %(default)s)."
    )
    parser.add_argument(
        "--connections",
        type=int,
        help="TCP connections in all, spread over the client processes, as ghz's --connections "
        "(default: one per process). With --workers N, SO_REUSEPORT gives each connection to one "
        "worker: use several per worker to load them all.",
    )
    _add_id_arguments(parser)
    add_client_arguments(parser)
    parser.add_argument(
        "--watch-server",
        type=int,
        metavar="PID",
        help="Sample RSS and CPU of this server process and its workers during the run (soak runs).",
    )
    parser.add_argument(
        "--sample-every",
        type=float,
        default=10.0,
        help="Seconds between server samples (default %(default)s).",
    )
    parser.add_argument(
        "--rss-growth-from",
        type=float,
        default=120.0,
        help="Report RSS growth from this many seconds into the run to its end (default %(default)s).",
    )
    parser.add_argument("--json", action="store_true", help="Print the JSON report instead of text.")
    parser.add_argument("--out", type=Path, help="Also write the JSON report to this file.")
    sub = parser.add_subparsers(dest="mode", metavar="{features,ghz-data}")
    from nudge.client import bench_features

    features = sub.add_parser(
        "features",
        help="Feast SDK vs nudge's online feature reader, same store, same run.",
        description=bench_features.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_features.add_arguments(features)
    ghz = sub.add_parser("ghz-data", help="Write a ghz --data-file of ScoreRequests for the ids.")
    _add_id_arguments(ghz)
    ghz.add_argument("--sample", type=int, help="Keep this many ids, evenly spaced.")
    ghz.add_argument("--batch-size", type=int, help="Write ScoreBatchRequests of this many ids instead.")
    ghz.add_argument("--out", type=Path, required=True, help="The JSON file to write.")


def _add_id_arguments(parser: argparse.ArgumentParser) -> None:
    ids = parser.add_mutually_exclusive_group()
    ids.add_argument("--ids", type=Path, help="Ids: JSON list, ghz data file or one per line.")
    ids.add_argument("--ids-from", type=Path, help="Parquet file with a customer_id column.")
    parser.add_argument(
        "--now",
        help="ISO time sent as ScoreRequest.now (default: server clock); Ingest: event times start "
        "1 h before it (default: this machine's clock).",
    )


def plan_from_args(args: argparse.Namespace, ids: Sequence[str]) -> Plan:
    """Validate the command line and build the plan (raises ValueError with the reason)."""
    concurrency = args.concurrency or (OPEN_LOOP_THREADS if args.rps is not None else 1)
    _check_bounds(args, concurrency)
    now = parse_time(args.now) if args.now else None
    if args.call == "Ingest":
        method = Method(args.call, METHOD_PATHS[args.call], (), ingest_events(ids, now, _batch_size(args)))
    elif args.call == "ScoreBatch":
        method = Method(args.call, METHOD_PATHS[args.call], batch_requests(ids, now, _batch_size(args)))
    else:
        method = Method(args.call, METHOD_PATHS[args.call], score_requests(ids, now))
    methods = [method]
    if not args.no_baseline:
        baseline = b""  # HealthCheckRequest(service=""): the server's overall health
        methods.append(Method(BASELINE, METHOD_PATHS[BASELINE], (baseline,)))
    if args.feast_peer:
        check_loopback(args.feast_peer)
        if args.feast_models is None:
            raise ValueError(
                "--feast-peer needs --feast-models (the features to request are the models' inputs)"
            )
        requests = feast_requests(ids, served_refs(args.feast_models))
        methods.append(Method(PEER, METHOD_PATHS[PEER], requests, target=args.feast_peer))
    warmup_calls, warmup_seconds = parse_warmup(args.warmup)
    total = args.total if args.total is not None else (None if args.duration else DEFAULT_TOTAL)
    load = Load(
        concurrency=concurrency,
        rps=args.rps,
        calls=None if total is None else max(1, total // args.rounds),
        seconds=None if args.duration is None else args.duration / args.rounds,
        warmup_calls=warmup_calls,
        warmup_seconds=warmup_seconds,
        timeout_s=args.timeout,
    )
    connections = args.connections or args.client_procs
    plan = Plan(
        args.target,
        tuple(methods),
        args.rounds,
        load,
        security=client_security(args),
        connections=connections,
    )
    if method.events is not None:
        _check_ingest(plan, args.client_procs, len(ids))
    return plan


def served_refs(models: Path) -> list[str]:
    """The feature references the served models read (their manifests), in order, once each."""
    from nudge.contract.manifest import latest_version_dir, load_model_dir

    refs: list[str] = []
    for name in ("propensity", "send_time"):
        manifest, _ = load_model_dir(latest_version_dir(models, name))
        refs += [feature.ref for feature in manifest.features]
    return list(dict.fromkeys(refs))


def feast_requests(ids: Sequence[str], refs: Sequence[str]) -> tuple[bytes, ...]:
    """Feast's GetOnlineFeaturesRequest for each id (one customer per call, as Score), the
    features by name: a feature-service request would make Feast's server log a line per call.
    The messages are built from Feast's own protos (imported here: feast costs seconds)."""
    from feast.protos.feast.serving.ServingService_pb2 import FeatureList, GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

    features = FeatureList(val=refs)
    return tuple(
        GetOnlineFeaturesRequest(
            features=features, entities={"customer_id": RepeatedValue(val=[Value(string_val=cid)])}
        ).SerializeToString()
        for cid in ids[:MAX_DISTINCT_REQUESTS]
    )


def ingest_events(ids: Sequence[str], now: datetime | None, batch_size: int) -> IngestEvents:
    """Ingest's event source for this run (see :class:`IngestEvents`)."""
    start = (now or datetime.now(UTC)) - timedelta(seconds=INGEST_LEAD_S)
    first_us = (start - _EPOCH) // timedelta(microseconds=1)
    return IngestEvents(tuple(ids), batch_size, first_us, f"bench-{uuid.uuid4().hex[:12]}")


def _check_ingest(plan: Plan, procs: int, ids: int) -> None:
    """Refuse Ingest runs whose events could not all be new and in order, or are too many."""
    assert plan.methods[0].events is not None
    size = plan.methods[0].events.batch_size
    problems = []
    if ids < procs:
        problems.append(f"Ingest needs at least one id per client process ({ids} ids, {procs} processes)")
    events = sum(ingest_calls(plan.share(i, procs).load, plan.rounds) for i in range(procs)) * size
    if events > MAX_INGEST_EVENTS:
        problems.append(
            f"this Ingest run may send {events:,} events, over {MAX_INGEST_EVENTS:,} "
            f"(by --duration at most {INGEST_MAX_RATE:g} calls/s): shorten it or use -n"
        )
    if problems:
        raise ValueError("; ".join(problems))


def _batch_size(args: argparse.Namespace) -> int:
    if args.batch_size is not None:
        return int(args.batch_size)
    return 1 if args.call == "Ingest" else 100


def _check_bounds(args: argparse.Namespace, concurrency: int) -> None:
    problems = []
    if args.rps is not None:
        if args.duration is None or args.total is not None:
            problems.append("open loop (--rps) runs for --duration, not -n")
        if not 0 < args.rps <= MAX_RPS:
            problems.append(f"--rps must be within (0, {MAX_RPS:g}]")
    if args.total is not None and args.duration is not None:
        problems.append("give -n or --duration, not both")
    if args.duration is not None and not 0 < args.duration <= MAX_DURATION_S:
        problems.append(f"--duration must be within (0, {MAX_DURATION_S:g}] seconds")
    if args.total is not None and not args.rounds <= args.total <= MAX_TOTAL:
        problems.append(f"-n must be within [--rounds, {MAX_TOTAL}]")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        problems.append(f"--concurrency must be within 1..{MAX_CONCURRENCY}")
    if not 1 <= args.client_procs <= min(MAX_PROCS, concurrency):
        problems.append(f"--client-procs must be within 1..{MAX_PROCS} and at most --concurrency")
    if args.connections is not None and not args.client_procs <= args.connections <= concurrency:
        problems.append("--connections must be within --client-procs..--concurrency")
    if not 1 <= args.rounds <= 100:
        problems.append("--rounds must be within 1..100")
    if not 0 < args.timeout <= 60:
        problems.append("--timeout must be within (0, 60] seconds")
    if not 1 <= _batch_size(args) <= 10_000:
        problems.append("--batch-size must be within 1..10000")
    if problems:
        raise ValueError("; ".join(problems))


def _options(args: argparse.Namespace, plan: Plan, ids: int) -> dict[str, Any]:
    """The settings a reader needs to reproduce the run (the report's ``options``)."""
    return {
        "call": args.call,
        "batch_size": _batch_size(args) if args.call != "Score" else None,
        "mode": "open" if args.rps is not None else "closed",
        "concurrency": plan.load.concurrency,
        "rps": args.rps,
        "total": None if plan.load.calls is None else plan.load.calls * plan.rounds,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "timeout_s": args.timeout,
        "client_procs": args.client_procs,
        "connections": plan.connections,
        "ids": ids,
        "now": args.now,
        "client": "grpcio sync stack, blocking calls in threads",
    }


@contextmanager
def _server_watch(args: argparse.Namespace) -> Iterator[ServerWatch | None]:
    if args.watch_server is None:
        yield None
        return
    if not 0 < args.sample_every <= 600 or args.rss_growth_from < 0:
        raise ValueError("--sample-every must be within (0, 600] seconds and --rss-growth-from >= 0")
    with ServerWatch(args.watch_server, args.sample_every, args.rss_growth_from) as watch:
        yield watch


def write_ghz_data(args: argparse.Namespace) -> int:
    """``nudge bench ghz-data``: a JSON array ghz cycles through (one request object per call).

    Plain objects without template actions, so ghz parses them once and reuses them.
    """
    check(unwritable_file(args.out, "--out"))
    with user_errors(ValueError, OSError):
        ids = load_ids(args.ids, args.ids_from)
        now = (
            {"now": parse_time(args.now).astimezone(UTC).isoformat().replace("+00:00", "Z")}
            if args.now
            else {}
        )
    if args.sample:
        ids = ids[:: max(1, len(ids) // args.sample)][: args.sample]
    rows: list[dict[str, Any]] = [{"customer_id": cid, **now} for cid in ids]
    if args.batch_size:
        size = args.batch_size
        rows = [
            {"requests": [rows[(b * size + k) % len(rows)] for k in range(size)]}
            for b in range(math.ceil(len(rows) / size))
        ]
    args.out.write_text("[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n")
    print(f"wrote {len(rows)} requests to {args.out}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.mode == "features":
        from nudge.client import bench_features

        return bench_features.run(args)
    if args.mode == "ghz-data":
        return write_ghz_data(args)
    check(unwritable_file(args.out, "--out"))
    with user_errors(ValueError, OSError):
        check_loopback(args.target)
        ids = load_ids(args.ids, args.ids_from)
        plan = plan_from_args(args, ids)
    with (
        user_errors(ConnectionError, RuntimeError, ValueError, exit_code=1),
        _server_watch(args) as watch,
    ):
        phases = run_processes(plan, args.client_procs)
    report = build_report(plan, phases, _options(args, plan, len(ids)))
    report["server"] = None if watch is None else watch.report()
    events = report["results"][args.call]["events"]
    if events is not None:  # also when the report is JSON: a misconfigured run must show
        if not events["all_applied"]:
            _say(ingest_warning(events))
        if events["ran_out_of_requests"]:
            _say(ran_out_warning())
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
