"""Reason codes through the real stack: the reasons.json training wrote beside the propensity
model is loaded with it, and every Score names the reasons that moved its propensity."""

from __future__ import annotations

import pandas as pd

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from service.reasons import VOCABULARY
from tests.support.stack import ServerProcess, Stack, timestamp


def test_scores_carry_propensity_and_decision_reasons(server: ServerProcess, stack: Stack) -> None:
    customers = pd.read_parquet(stack.customers, columns=["customer_id"])["customer_id"].head(20).tolist()
    ups = {reason.up for reason in VOCABULARY.values()}
    downs = {reason.down for reason in VOCABULARY.values()}
    with server.channel() as channel:
        reply = scoring_pb2_grpc.ScoringServiceStub(channel).ScoreBatch(
            pb.ScoreBatchRequest(
                requests=[pb.ScoreRequest(customer_id=c, now=timestamp(stack.as_of)) for c in customers]
            ),
            timeout=10,
        )
    answers = [r.response for r in reply.results]
    assert len(answers) == len(customers)
    seen = set()
    for answer in answers:
        reasons = answer.propensity_reasons
        assert 1 <= len(reasons) <= 3
        sizes = [abs(r.contribution) for r in reasons]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0
        for reason in reasons:  # the code says which way the feature moved the propensity
            raised = reason.code in ups or (reason.code not in downs and reason.code.endswith("_up"))
            assert raised == (reason.contribution > 0), reason
            assert reason.code in ups | downs or reason.code.endswith(("_up", "_down")), reason.code
        seen.add(reasons[0].code)
        assert len(answer.decision_reasons) >= 1
    assert len(seen) > 1, "different customers, different leading reasons"
