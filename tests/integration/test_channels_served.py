"""Channels through the real stack: the trained channel_model.json, served with the models, ranks
every customer's channels in Score, restricted to the request's channel when it names one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from tests.support.stack import SIGNED_UP_ONLY, ServerProcess, Stack, timestamp


def score(
    server: ServerProcess, stack: Stack, customer: str, channel: int = pb.CHANNEL_UNSPECIFIED
) -> pb.ScoreResponse:
    with server.channel() as channel_:
        request = pb.ScoreRequest(customer_id=customer, now=timestamp(stack.as_of), channel=channel)  # type: ignore[arg-type]
        return scoring_pb2_grpc.ScoringServiceStub(channel_).Score(request, timeout=10)


@pytest.fixture(scope="module")
def known(stack: Stack) -> str:
    """The customer with the most sends: the channel model has their own evidence."""
    events = pd.read_parquet(stack.events, columns=["customer_id", "event_type"])
    sends = events[events["event_type"].str.endswith("_send")]["customer_id"].value_counts()
    return str(sends.index[0])


def test_every_channel_ranked_with_its_best_slot_in_the_window(
    server: ServerProcess, stack: Stack, known: str
) -> None:
    answer = score(server, stack, known)
    assert sorted(c.channel for c in answer.channels) == [pb.CHANNEL_EMAIL, pb.CHANNEL_SMS, pb.CHANNEL_PUSH]
    probabilities = [c.engage_probability for c in answer.channels]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 < p < 1.0 for p in probabilities)
    for choice in answer.channels:
        when = choice.best_send_time.ToDatetime(UTC)
        assert stack.as_of - timedelta(hours=1) < when < stack.as_of + timedelta(hours=24)
        assert datetime.fromisoformat(choice.best_send_time_local) == when  # the same instant, local
    assert not answer.channels_defaulted


def test_the_requested_channel_only(server: ServerProcess, stack: Stack, known: str) -> None:
    answer = score(server, stack, known, pb.CHANNEL_SMS)
    assert [c.channel for c in answer.channels] == [pb.CHANNEL_SMS]
    assert answer.channel == pb.CHANNEL_SMS


def test_a_customer_without_sends_gets_the_population_ranking_flagged(
    server: ServerProcess, stack: Stack
) -> None:
    answer = score(server, stack, SIGNED_UP_ONLY)
    assert answer.channels_defaulted and len(answer.channels) == 3
