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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from nudge.contract.api import INGEST_SERVICE, SCORING_SERVICE
from nudge.contract.channel_model import CHANNEL_NAMES
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
from service.policy import Decision, Reminder
from service.policy_columns import DECISIONS
from service.rpc import Method, Observation, Refused, add_service
from service.scorer import (
    STATUSES,
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
_ONE_US = timedelta(microseconds=1)


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
    _set_us(stamp, (when - _EPOCH) // _ONE_US)


def _set_us(stamp: Timestamp, us: int) -> None:
    """Set a Timestamp to µs since the epoch (ScoreBatch's answer columns hold times so)."""
    seconds, micros = divmod(us, 1_000_000)
    stamp.seconds = seconds
    stamp.nanos = micros * 1000


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
    """The batch's answers in request order: each customer's response, or its error.

    Built straight from the answer columns (:class:`_AnswerRows`), not through a ScoreResult
    per customer: the objects and datetimes in between cost more than the message itself
    (2.5 ms of a 9 ms ScoreBatch(100) in-process). The fields every answer shares (horizon,
    model versions) are set once in a template each response is copied from. Its responses
    equal :func:`to_response`'s of the same answers (tests/unit/test_scorer_columns.py, every
    field; tests/integration/test_server.py, on the real stack).
    """
    batch = pb.ScoreBatchResponse()
    results = batch.results
    template = pb.ScoreResponse(horizon_days=scores.models.horizon_days)
    for name, version in scores.models.versions.items():
        template.models.add(name=name, version=version)
    rows = _AnswerRows.of(scores)
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    for i, error in enumerate(scores.error.tolist()):
        result = results.add()
        if error is not None:
            result.error.customer_id = requests[i].customer_id
            result.error.code = invalid
            result.error.message = error
        else:
            response = result.response
            response.CopyFrom(template)
            rows.fill(response, i)
    return batch


@dataclass(frozen=True)
class _AnswerRows:
    """:class:`Scores` as Python lists, each column converted once for the whole batch."""

    customer_ids: list[str]
    propensity: list[float]
    status: list[int]
    age: list[float]
    channel: list[str]
    reason_codes: list[list[str | None]]
    reason_values: list[list[float]]
    decision: list[int]
    code: list[str]
    reason: list[str]
    best_us: list[int]
    best_local: list[str | None]
    zone: list[str]
    zone_defaulted: list[bool]
    top_us: list[list[int]]
    top_p: list[list[float]]
    top_count: list[int]
    reminder: list[bool]
    reminder_columns: tuple[list[Any], ...]  # send µs, local, is_cart, interest µs, hours, defaulted, reason
    channel_count: list[int]
    channel_order: list[list[int]]
    channel_p: list[list[float]]
    channel_us: list[list[int]]
    channel_local: list[list[str | None]]
    channels_defaulted: list[bool]

    @classmethod
    def of(cls, scores: Scores) -> _AnswerRows:
        plans, r = scores.plans, scores.plans.reminders
        return cls(
            scores.customer_ids,
            scores.propensity.tolist(),
            scores.status.tolist(),
            scores.age_seconds.tolist(),
            scores.channel,
            scores.reason_codes.tolist(),
            scores.reason_values.tolist(),
            plans.decision.tolist(),
            plans.code.tolist(),
            plans.reason.tolist(),
            plans.best_us.tolist(),
            plans.best_local.tolist(),
            plans.zone.tolist(),
            plans.zone_defaulted.tolist(),
            plans.top_us.tolist(),
            plans.top_p.tolist(),
            plans.top_count.tolist(),
            r.planned.tolist(),
            tuple(
                column.tolist()
                for column in (
                    r.send_us,
                    plans.reminder_local,
                    r.is_cart,
                    r.interest_us,
                    r.decide_hours,
                    r.decide_defaulted,
                    r.reason,
                )
            ),
            plans.channel_count.tolist(),
            plans.channel_order.tolist(),
            plans.channel_p.tolist(),
            plans.channel_us.tolist(),
            plans.channel_local.tolist(),
            plans.channels_defaulted.tolist(),
        )

    def fill(self, response: pb.ScoreResponse, i: int) -> None:
        """Fill row ``i``'s answer (a row without error) into ``response``, field by field as
        :func:`to_response` does."""
        response.customer_id = self.customer_ids[i]
        response.purchase_propensity = self.propensity[i]
        decision = self.decision[i]
        if decision != _SUPPRESS_INDEX:
            _set_us(response.best_send_time, self.best_us[i])
            response.best_send_time_local = self.best_local[i] or ""
        response.time_zone = self.zone[i]
        response.time_zone_defaulted = self.zone_defaulted[i]
        slots = response.top_slots
        for us, p in zip(self.top_us[i][: self.top_count[i]], self.top_p[i], strict=False):
            _set_us(slots.add(probability=p).start_time, us)
        response.decision = _DECISION_NUMBERS[decision]
        response.reason = self.reason[i]
        response.decision_reasons.append(self.code[i])
        if self.reminder[i]:
            response.decision_reasons.append("reminder_planned")
            send_us, local, is_cart, interest_us, hours, defaulted, why = (
                c[i] for c in self.reminder_columns
            )
            message = response.reminder
            _set_us(message.send_time, send_us)
            message.send_time_local = local
            message.interest = "cart_add" if is_cart else "site_visit"
            _set_us(message.interest_time, interest_us)
            message.decide_time_hours = hours
            message.decide_time_defaulted = defaulted
            message.reason = why
        order, engaged, starts, local = (
            self.channel_order[i],
            self.channel_p[i],
            self.channel_us[i],
            self.channel_local[i],
        )
        for c in order[: self.channel_count[i]]:
            if local[c] is not None:
                scored = response.channels.add(
                    channel=_CHANNEL_BY_INDEX[c], engage_probability=engaged[c], best_send_time_local=local[c]
                )
                _set_us(scored.best_send_time, starts[c])
        response.channels_defaulted = self.channels_defaulted[i]
        for code, contribution in zip(self.reason_codes[i], self.reason_values[i], strict=True):
            if code is not None:
                response.propensity_reasons.add(code=code, contribution=contribution)
        response.feature_status = _STATUS_NUMBERS[self.status[i]]
        response.feature_age_seconds = self.age[i]
        response.channel = _CHANNEL_NUMBERS[self.channel[i]]


# The proto's numbers of the columns' indices (Plans.decision, Scores.status, channel order).
_DECISION_NUMBERS = [_DECISION[d.name] for d in DECISIONS]
_SUPPRESS_INDEX = DECISIONS.index(Decision.SUPPRESS)
_STATUS_NUMBERS = [_STATUS[s.value] for s in STATUSES]
_CHANNEL_BY_INDEX = [_CHANNEL_NUMBERS[name] for name in CHANNEL_NAMES]


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
