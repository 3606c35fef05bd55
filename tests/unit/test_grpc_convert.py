"""The gRPC adapter's converters in-process: proto → ScoreQuery and ScoreResult → proto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from nudge.v1 import scoring_pb2 as pb
from service.grpc_api import to_queries, to_query, to_response
from service.policy import Decision, ScoredSlot, SendPlan
from service.scorer import FeatureStatus, InvalidQuery, ScoreResult
from tests.support.stack import timestamp

NOW = datetime(2026, 10, 25, 0, 30, 0, 250_000, tzinfo=UTC)  # the night Europe's clocks go back


def test_unset_fields_stay_unset_for_the_core_to_default() -> None:
    query = to_query(pb.ScoreRequest(customer_id="c1"))
    assert (query.customer_id, query.now, query.window_start, query.window_end) == ("c1", None, None, None)
    assert query.quiet_hours is None and query.channel == "UNSPECIFIED"


def test_every_field_converts_exactly() -> None:
    request = pb.ScoreRequest(
        customer_id="c1",
        now=timestamp(NOW),
        window_start=timestamp(NOW + timedelta(hours=1)),
        window_end=timestamp(NOW + timedelta(days=2)),
        quiet_hours=pb.QuietHours(start_hour=22, end_hour=7),
        channel=pb.CHANNEL_SMS,
    )
    query = to_query(request)
    assert query.now == NOW and query.window_start == NOW + timedelta(hours=1)
    assert query.window_end == NOW + timedelta(days=2)
    assert query.quiet_hours == (22, 7) and query.channel == "SMS"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.ScoreRequest(customer_id="c", channel=99), "channel 99"),  # type: ignore[arg-type]
        (pb.ScoreRequest(customer_id="c", now=timestamp(datetime(2101, 1, 1, tzinfo=UTC))), "now must be"),
    ],
)
def test_what_cannot_convert_is_an_invalid_query(request_: pb.ScoreRequest, message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        to_query(request_)
    queries, rejected = to_queries([pb.ScoreRequest(customer_id="ok"), request_])
    assert [q.customer_id for q in queries] == ["ok"] and [i for i, _ in rejected] == [1]


def test_a_result_fills_every_response_field() -> None:
    best = NOW + timedelta(hours=3)
    plan = SendPlan(
        best_send_time=best,
        best_send_time_local="2026-10-25T03:30:00.250000+01:00",
        time_zone="Europe/Berlin",
        time_zone_defaulted=False,
        top_slots=(ScoredSlot(best, 0.5), ScoredSlot(best + timedelta(hours=1), 0.25)),
        decision=Decision.SCHEDULE,
        reason="best allowed hour",
    )
    result = ScoreResult(
        "c1", 0.75, 14, plan, {"propensity": "v1", "send_time": "v2"}, FeatureStatus.STALE, 90.5, "PUSH"
    )
    response = to_response(result)
    assert (
        response.customer_id == "c1" and response.purchase_propensity == 0.75 and response.horizon_days == 14
    )
    assert response.best_send_time.ToDatetime(tzinfo=UTC) == best
    assert (
        response.best_send_time_local == plan.best_send_time_local and response.time_zone == "Europe/Berlin"
    )
    assert [(s.start_time.ToDatetime(tzinfo=UTC), s.probability) for s in response.top_slots] == [
        (best, 0.5),
        (best + timedelta(hours=1), 0.25),
    ]
    assert response.decision == pb.DECISION_SCHEDULE and response.reason == "best allowed hour"
    assert {(m.name, m.version) for m in response.models} == {("propensity", "v1"), ("send_time", "v2")}
    assert response.feature_status == pb.FEATURE_STATUS_STALE and response.feature_age_seconds == 90.5
    assert response.channel == pb.CHANNEL_PUSH


def test_a_suppressed_result_has_no_send_time() -> None:
    plan = SendPlan(None, None, "UTC", True, (), Decision.SUPPRESS, "propensity below 0.02")
    response = to_response(ScoreResult("c", 0.01, 14, plan, {}, FeatureStatus.MISSING, 0.0, "UNSPECIFIED"))
    assert not response.HasField("best_send_time") and response.best_send_time_local == ""
    assert response.decision == pb.DECISION_SUPPRESS and response.time_zone_defaulted


def test_request_times_are_exact_not_rounded_through_a_float() -> None:
    """A float of seconds since 1970 cannot hold nanoseconds: 20.9999998 s became 21 s."""
    late = pb.ScoreRequest(customer_id="c", now=Timestamp(seconds=1_700_000_000, nanos=999_999_800))
    now = to_query(late).now
    assert now is not None
    assert now == datetime(2023, 11, 14, 22, 13, 20, 999_999, tzinfo=UTC)
