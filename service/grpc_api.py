"""The gRPC adapter: proto ↔ core types, and domain errors → status codes, in one place.

Nothing here scores or ingests anything; the Scorer and the Ingestor do. Mapping:
  InvalidQuery (bad id, window, quiet hours, batch too large) → INVALID_ARGUMENT
  an Ingest of more events than max_batch                      → INVALID_ARGUMENT
  StoreUnavailable (store down and settings say fail fast)     → UNAVAILABLE
  IngestUnavailable (live state store or event log failed)     → UNAVAILABLE
  deadline already too close to do the work                    → DEADLINE_EXCEEDED
  anything else                                                → INTERNAL, logged with the id only
  bytes that are not the request message                       → INVALID_ARGUMENT

Handlers end a call with a status by raising :class:`service.rpc.Refused`, never
``context.abort``: abort sends the status at once, before the method's wrapper has counted the
call, so a caller could see its error before the counter moved. The one wrapper every method is
registered with (service/rpc.py, via :func:`add_scoring_service` and :func:`add_ingest_service`)
turns ``Refused`` into the call's status, sent when the handler returns.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from nudge.contract.api import INGEST_SERVICE, SCORING_SERVICE
from nudge.v1 import ingest_pb2, ingest_pb2_grpc, scoring_pb2_grpc
from nudge.v1 import scoring_pb2 as pb
from service.ingest import (
    Counts,
    EventResult,
    IngestEvent,
    Ingestor,
    IngestUnavailable,
    Outcome,
)
from service.policy import Reminder
from service.rpc import Method, Observation, Refused, add_service
from service.scorer import (
    UNSET,
    InvalidQuery,
    Queries,
    ScoreQuery,
    Scorer,
    ScoreResult,
    Scores,
    StoreUnavailable,
)
from service.zones import TABLE_END_S, TABLE_START_S

log = logging.getLogger("nudge.grpc")

# Below this many seconds left, a call cannot finish in time: fail it at once.
MIN_TIME_LEFT_S = 0.0005

_DECISION = {
    "SEND_NOW": pb.DECISION_SEND_NOW,
    "SCHEDULE": pb.DECISION_SCHEDULE,
    "SUPPRESS": pb.DECISION_SUPPRESS,
}
_STATUS = {
    "FRESH": pb.FEATURE_STATUS_FRESH,
    "STALE": pb.FEATURE_STATUS_STALE,
    "MISSING": pb.FEATURE_STATUS_MISSING,
    "UNAVAILABLE": pb.FEATURE_STATUS_UNAVAILABLE,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(ts: Timestamp, present: bool, name: str = "time") -> datetime | None:
    """The request's time, exact to the microsecond (nanoseconds truncated, as the batch floors
    event times). Hostile-input guard (tests/integration/test_hostile_input.py): times outside
    the range the policy plans in (and beyond it, outside what datetime holds) are
    INVALID_ARGUMENT, not INTERNAL."""
    if not present:
        return None
    return _EPOCH + timedelta(microseconds=_time_us(ts, name))


def _time_us(ts: Timestamp, name: str) -> int:
    """:func:`_time` in µs since the epoch (ScoreBatch's columns)."""
    if not TABLE_START_S <= ts.seconds <= TABLE_END_S or not 0 <= ts.nanos <= 999_999_999:
        raise InvalidQuery(f"{name} must be a valid time between 1970-01-01 and 2100-01-01 UTC")
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def _set_time(stamp: Timestamp, when: datetime) -> None:
    """Set a Timestamp to a timezone-aware datetime, in integer arithmetic (exact to the µs).

    Several per response: ``Timestamp.FromDatetime`` costs 3x more (it goes through a UTC
    time tuple and ``calendar.timegm``).
    """
    delta = when - _EPOCH
    stamp.seconds = delta.days * 86_400 + delta.seconds
    stamp.nanos = delta.microseconds * 1000


def to_query(request: pb.ScoreRequest) -> ScoreQuery:
    """The core's query for a request; unset fields stay None so the core applies defaults."""
    quiet = None
    if request.HasField("quiet_hours"):
        quiet = (request.quiet_hours.start_hour, request.quiet_hours.end_hour)
    return ScoreQuery(
        customer_id=request.customer_id,
        now=_time(request.now, request.HasField("now"), "now"),
        window_start=_time(request.window_start, request.HasField("window_start"), "window_start"),
        window_end=_time(request.window_end, request.HasField("window_end"), "window_end"),
        quiet_hours=quiet,
        channel=_channel(request.channel),
    )


def _channel(value: int) -> str:
    # Proto3 enums are open: any int32 decodes, but only known channels can be echoed back.
    if value not in _CHANNELS:
        raise InvalidQuery(f"channel {value} is not a known nudge.v1.Channel")
    return _CHANNELS[value]


_CHANNELS = {v.number: v.name.removeprefix("CHANNEL_") for v in pb.Channel.DESCRIPTOR.values}
# The enum value to echo back per channel name (the generated stubs type enum fields as Channel).
_CHANNEL_NUMBERS = cast(dict[str, pb.Channel], {name: number for number, name in _CHANNELS.items()})


def to_queries(
    requests: Sequence[pb.ScoreRequest],
) -> tuple[list[ScoreQuery], list[tuple[int, InvalidQuery]]]:
    """Queries for the requests that convert, and (index, error) for those that do not."""
    queries, rejected = [], []
    for i, request in enumerate(requests):
        try:
            queries.append(to_query(request))
        except InvalidQuery as exc:
            rejected.append((i, exc))
    return queries, rejected


def to_response(result: ScoreResult, response: pb.ScoreResponse | None = None) -> pb.ScoreResponse:
    """The proto for a result, filled into ``response`` when given (e.g. a batch's element).

    Fields are set in place, nested messages included: building them as constructor arguments
    copies each one into its parent, which made this twice as slow (ScoreBatch builds 100).
    """
    response = pb.ScoreResponse() if response is None else response
    plan = result.plan
    response.customer_id = result.customer_id
    response.purchase_propensity = result.purchase_propensity
    response.horizon_days = result.horizon_days
    if plan.best_send_time is not None:
        _set_time(response.best_send_time, plan.best_send_time)
    response.time_zone = plan.time_zone
    response.best_send_time_local = plan.best_send_time_local or ""
    response.time_zone_defaulted = plan.time_zone_defaulted
    for start, probability in plan.top_slots:
        _set_time(response.top_slots.add(probability=probability).start_time, start)
    response.decision = _DECISION[plan.decision.name]
    response.reason = plan.reason
    response.decision_reasons.extend(plan.codes)
    if plan.reminder is not None:
        _set_reminder(response.reminder, plan.reminder)
    for choice in plan.channels:
        scored = response.channels.add(
            channel=_CHANNEL_NUMBERS[choice.channel],
            engage_probability=choice.probability,
            best_send_time_local=choice.local,
        )
        _set_time(scored.best_send_time, choice.start)
    response.channels_defaulted = plan.channels_defaulted
    for code, contribution in result.propensity_reasons:
        response.propensity_reasons.add(code=code, contribution=contribution)
    for name, version in result.models.items():
        response.models.add(name=name, version=version)
    response.feature_status = _STATUS[result.feature_status.value]
    response.feature_age_seconds = result.feature_age_seconds
    response.channel = _CHANNEL_NUMBERS[result.channel]
    return response


def _set_reminder(message: pb.Reminder, reminder: Reminder) -> None:
    _set_time(message.send_time, reminder.send_time)
    message.send_time_local = reminder.send_time_local
    message.interest = reminder.interest
    _set_time(message.interest_time, reminder.interest_time)
    message.decide_time_hours = reminder.decide_hours
    message.decide_time_defaulted = reminder.decide_defaulted
    message.reason = reminder.reason


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    """nudge.v1.ScoringService over a Scorer."""

    def __init__(self, scorer: Scorer | None = None) -> None:
        # None while the server is still loading models: calls get UNAVAILABLE, health says
        # NOT_SERVING, and probes can watch start-up happen.
        self.scorer = scorer

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        _check_deadline(context)
        (outcome,) = _run(_ready(self.scorer), [request])
        if isinstance(outcome, InvalidQuery):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(outcome))
        assert isinstance(outcome, ScoreResult)
        return to_response(outcome)

    async def ScoreBatch(
        self, request: pb.ScoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreBatchResponse:
        _check_deadline(context)
        scorer = _ready(self.scorer)
        limit = scorer.settings.max_batch
        if len(request.requests) > limit:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch of {len(request.requests)} customers exceeds the limit of {limit}",
            )
        requests = request.requests
        with _scoring_errors(requests):
            scores = scorer.score_queries(to_batch_queries(requests))
        return to_batch_response(requests, scores)


def to_batch_queries(requests: Sequence[pb.ScoreRequest]) -> Queries:
    """A batch's requests as the core's query columns: unset times UNSET and absent quiet hours
    (-1, -1), for the core to default; a request that does not convert (a time out of range, an
    unknown channel) gets the error :func:`to_query` would raise in its row."""
    n = len(requests)
    times = np.full((n, 3), UNSET, dtype=np.int64)
    quiet = np.full((n, 2), -1, dtype=np.int64)
    channels = ["UNSPECIFIED"] * n
    errors = np.full(n, None, dtype=object)
    for i, r in enumerate(requests):
        try:
            if r.HasField("now"):
                times[i, 0] = _time_us(r.now, "now")
            if r.HasField("window_start"):
                times[i, 1] = _time_us(r.window_start, "window_start")
            if r.HasField("window_end"):
                times[i, 2] = _time_us(r.window_end, "window_end")
            if r.HasField("quiet_hours"):
                quiet[i] = (r.quiet_hours.start_hour, r.quiet_hours.end_hour)
            channels[i] = _channel(r.channel)
        except InvalidQuery as exc:
            errors[i] = str(exc)
    ids = [r.customer_id for r in requests]
    return Queries(ids, times[:, 0], times[:, 1], times[:, 2], quiet, channels, errors)


def to_batch_response(requests: Sequence[pb.ScoreRequest], scores: Scores) -> pb.ScoreBatchResponse:
    """The batch's answers in request order: each customer's response, or its error."""
    batch = pb.ScoreBatchResponse()
    for i, req in enumerate(requests):
        result = batch.results.add()
        outcome = scores.result(i)
        if isinstance(outcome, InvalidQuery):
            result.error.customer_id = req.customer_id
            result.error.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            result.error.message = str(outcome)
        else:
            to_response(outcome, result.response)
    return batch


def _run(scorer: Scorer, requests: Sequence[pb.ScoreRequest]) -> list[ScoreResult | InvalidQuery]:
    with _scoring_errors(requests):
        queries, rejected = to_queries(requests)
        results = scorer.score(queries)
    for i, error in rejected:  # ascending: each lands at its request's position
        results.insert(i, error)
    return results


@contextlib.contextmanager
def _scoring_errors(requests: Sequence[pb.ScoreRequest]) -> Iterator[None]:
    """A store failure becomes UNAVAILABLE; anything unexpected INTERNAL, logged with the
    first customer ids (the caller gets no stack trace)."""
    try:
        yield
    except StoreUnavailable as exc:
        raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
    except Exception as exc:
        ids = ",".join(r.customer_id[:64] for r in requests[:5])
        log.exception("scoring failed", extra={"customer_ids": ids, "batch": len(requests)})
        raise Refused(grpc.StatusCode.INTERNAL, "internal error while scoring; see server log") from exc


def _ready(scorer: Scorer | None) -> Scorer:
    if scorer is None:
        raise Refused(grpc.StatusCode.UNAVAILABLE, "models are still loading; retry shortly")
    return scorer


def _check_deadline(context: grpc.aio.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining < MIN_TIME_LEFT_S:
        raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline too short to score")


# --------------------------------------------------------------------------- ingest

_OUTCOMES = {o: ingest_pb2.EventResult.Outcome.Value(f"OUTCOME_{o.value}") for o in Outcome}


def to_events(
    events: Sequence[ingest_pb2.Event],
) -> tuple[list[IngestEvent], list[tuple[int, EventResult]]]:
    """Core events for those that convert, and (index, REJECTED result) for an event whose
    time no datetime can hold; unset optional fields stay None so the core sees them absent."""
    converted, rejected = [], []
    for i, event in enumerate(events):
        try:
            when = _time(event.event_time, event.HasField("event_time"), "event_time")
        except InvalidQuery as exc:
            rejected.append((i, EventResult(event.event_id, Outcome.REJECTED, str(exc))))
            continue
        converted.append(
            IngestEvent(
                event_id=event.event_id,
                customer_id=event.customer_id,
                event_time=when,
                event_type=event.event_type,
                amount=event.amount if event.HasField("amount") else None,
                time_zone=event.time_zone if event.HasField("time_zone") else None,
            )
        )
    return converted, rejected


def to_ingest_response(results: Sequence[EventResult]) -> ingest_pb2.IngestResponse:
    response = ingest_pb2.IngestResponse()
    for result in results:
        response.results.add(
            event_id=result.event_id, outcome=_OUTCOMES[result.outcome], reason=result.reason
        )
    counts = Counts.of(results)
    response.applied = counts.applied
    response.duplicates = counts.duplicates
    response.rejected = counts.rejected
    return response


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """nudge.v1.IngestService over an Ingestor."""

    def __init__(self, ingestor: Ingestor | None = None) -> None:
        # None until start-up has built it, or for good when the online store has no live
        # state store (``unavailable`` then says why).
        self.ingestor = ingestor
        self.unavailable = (grpc.StatusCode.UNAVAILABLE, "the server is still starting; retry shortly")

    async def Ingest(
        self, request: ingest_pb2.IngestRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.IngestResponse:
        _check_deadline(context)
        if self.ingestor is None:
            raise Refused(*self.unavailable)
        limit = self.ingestor.settings.max_batch
        if len(request.events) > limit:  # before converting any of them
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch of {len(request.events)} events exceeds the limit of {limit}",
            )
        try:
            events, rejected = to_events(request.events)
            results = self.ingestor.ingest(events)
        except IngestUnavailable as exc:
            raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        except Exception as exc:
            ids = ",".join(e.customer_id[:64] for e in request.events[:5])
            log.exception("ingest failed", extra={"customer_ids": ids, "batch": len(request.events)})
            raise Refused(grpc.StatusCode.INTERNAL, "internal error while ingesting; see server log") from exc
        for i, result in rejected:  # ascending: each lands at its event's position
            results.insert(i, result)
        return to_ingest_response(results)


# --------------------------------------------------------------------------- registration


def add_scoring_service(servicer: ScoringServicer, server: grpc.aio.Server, observation: Observation) -> None:
    """Register ``servicer`` as nudge.v1.ScoringService, each method with its wrapper
    (service/rpc.py: undecodable requests → INVALID_ARGUMENT, :class:`Refused` → its status)."""
    methods = [
        Method("Score", servicer.Score, pb.ScoreRequest, pb.ScoreResponse),
        Method("ScoreBatch", servicer.ScoreBatch, pb.ScoreBatchRequest, pb.ScoreBatchResponse),
    ]
    add_service(server, SCORING_SERVICE, methods, observation)


def add_ingest_service(servicer: IngestServicer, server: grpc.aio.Server, observation: Observation) -> None:
    """Register ``servicer`` as nudge.v1.IngestService, as :func:`add_scoring_service` does."""
    methods = [Method("Ingest", servicer.Ingest, ingest_pb2.IngestRequest, ingest_pb2.IngestResponse)]
    add_service(server, INGEST_SERVICE, methods, observation)
