"""`nudge score`'s table: the best channel, the top reason and the reminder on each line."""

from __future__ import annotations

from nudge.client.score import format_table
from nudge.v1 import scoring_pb2 as pb


def test_the_table_shows_channel_reason_and_reminder() -> None:
    batch = pb.ScoreBatchResponse()
    answer = batch.results.add().response
    answer.customer_id = "c1"
    answer.purchase_propensity = 0.5
    answer.decision = pb.DECISION_SCHEDULE
    answer.best_send_time_local = "2026-12-03T20:00:00+01:00"
    answer.channels.add(channel=pb.CHANNEL_PUSH, engage_probability=0.244)
    answer.channels.add(channel=pb.CHANNEL_EMAIL, engage_probability=0.19)
    answer.propensity_reasons.add(code="recent_cart_add", contribution=0.8)
    answer.reminder.send_time_local = "2026-12-04T09:00:00+01:00"
    quiet = batch.results.add().response
    quiet.customer_id = "c2"
    error = batch.results.add().error
    error.customer_id, error.message = "bad id", "customer_id is empty"
    header, _, first, second, third = format_table(batch).splitlines()
    assert "channel" in header and "top reason" in header and "reminder (local)" in header
    assert "PUSH 0.24" in first and "recent_cart_add" in first and "2026-12-04T09:00:00+01:00" in first
    assert second.split()[5:8] == ["-", "-", "-"]  # no channel, reason or reminder: dashes
    assert "ERROR" in third and third.endswith("customer_id is empty")
