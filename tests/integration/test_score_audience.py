"""`nudge score-audience` through the real stack: its rows are the running server's Score answers.

The shared ``server`` reads the online store the stack materialised (snapshot rows: no live
states are loaded), which holds each view's newest row at or before ``as_of``; the command
reads the offline tables as of ``as_of``. Same models, same policy, same ``now``.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import grpc
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from tests.support.stack import BIN, SIGNED_UP_ONLY, ServerProcess, Stack, timestamp

SAMPLE = 60


def score_audience(stack: Stack, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "nudge"), "score-audience", "--repo", str(stack.repo), "--models", str(stack.models)]
    argv += ["--as-of", stack.as_of.isoformat(), "--out", str(out), *extra]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def audience(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("audience") / "plan.parquet"
    result = score_audience(stack, out, "--chunk", "300")  # several chunks
    assert result.returncode == 0, result.stderr
    assert "customers (100%)" in result.stderr, "a progress line"
    return pd.read_parquet(out)


def expected_rows(reply: pb.ScoreResponse) -> dict[str, object]:
    """A Score answer in the command's columns."""
    return {
        "customer_id": reply.customer_id,
        "horizon_days": reply.horizon_days,
        "decision": pb.Decision.Name(reply.decision).removeprefix("DECISION_"),
        "reason": reply.reason,
        "best_send_time": None
        if reply.decision == pb.DECISION_SUPPRESS
        else pd.Timestamp(reply.best_send_time.ToDatetime(), tz="UTC"),
        "best_send_time_local": reply.best_send_time_local or None,
        "time_zone": reply.time_zone,
        "time_zone_defaulted": reply.time_zone_defaulted,
        "top_slot_times": [pd.Timestamp(s.start_time.ToDatetime(), tz="UTC") for s in reply.top_slots],
        "feature_status": pb.FeatureStatus.Name(reply.feature_status).removeprefix("FEATURE_STATUS_"),
        "feature_age_seconds": reply.feature_age_seconds,
        "models": {m.name: m.version for m in reply.models},
        "best_channel": pb.Channel.Name(reply.channels[0].channel).removeprefix("CHANNEL_")
        if reply.channels
        else None,
        "best_channel_send_time": pd.Timestamp(reply.channels[0].best_send_time.ToDatetime(), tz="UTC")
        if reply.channels
        else None,
        "channels_defaulted": reply.channels_defaulted,
        "reminder_send_time": pd.Timestamp(reply.reminder.send_time.ToDatetime(), tz="UTC")
        if reply.HasField("reminder")
        else None,
        "top_propensity_reason": reply.propensity_reasons[0].code if reply.propensity_reasons else None,
    }


def actual_rows(row: pd.Series) -> dict[str, object]:
    return {
        "customer_id": row.customer_id,
        "horizon_days": row.horizon_days,
        "decision": row.decision,
        "reason": row.reason,
        "best_send_time": None if pd.isna(row.best_send_time) else row.best_send_time,
        "best_send_time_local": row.best_send_time_local,
        "time_zone": row.time_zone,
        "time_zone_defaulted": row.time_zone_defaulted,
        "top_slot_times": [pd.Timestamp(s["start_time"]) for s in row.top_slots],
        "feature_status": row.feature_status,
        "feature_age_seconds": row.feature_age_seconds,
        "models": {"propensity": row.propensity_model, "send_time": row.send_time_model},
        "best_channel": row.best_channel,
        "best_channel_send_time": None if pd.isna(row.best_channel_send_time) else row.best_channel_send_time,
        "channels_defaulted": row.channels_defaulted,
        "reminder_send_time": None if pd.isna(row.reminder_send_time) else row.reminder_send_time,
        "top_propensity_reason": row.top_propensity_reason,
    }


def test_rows_equal_the_servers_score_answers(
    audience: pd.DataFrame, stack: Stack, server: ServerProcess
) -> None:
    stats = pd.read_parquet(stack.repo / "data" / "customer_stats.parquet", columns=["customer_id"])
    assert audience["customer_id"].tolist() == sorted(stats["customer_id"].unique()), "every customer, once"
    assert audience["error"].isna().all()
    others = sorted(set(audience["customer_id"]) - {SIGNED_UP_ONLY})
    ids = sorted([*random.Random(14).sample(others, SAMPLE - 1), SIGNED_UP_ONLY])
    rows = audience.set_index("customer_id", drop=False).loc[ids]
    with server.channel() as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        replies = [
            stub.Score(pb.ScoreRequest(customer_id=c, now=timestamp(stack.as_of)), timeout=5) for c in ids
        ]
    decisions: set[str] = set()
    channels: set[str | None] = set()
    reasons = 0
    for reply, (_, row) in zip(replies, rows.iterrows(), strict=True):
        assert actual_rows(row) == expected_rows(reply)
        assert row.purchase_propensity == pytest.approx(reply.purchase_propensity, rel=1e-6, abs=1e-9)
        probabilities = [s["probability"] for s in row.top_slots]
        assert probabilities == pytest.approx([s.probability for s in reply.top_slots], rel=1e-6, abs=1e-9)
        if reply.channels:
            assert row.best_channel_probability == pytest.approx(
                reply.channels[0].engage_probability, rel=1e-6, abs=1e-9
            )
        else:
            assert pd.isna(row.best_channel_probability)
        decisions.add(row.decision)
        channels.add(row.best_channel)
        reasons += row.top_propensity_reason is not None
    assert len(decisions) >= 2, f"the sample should exercise more than one decision, got {decisions}"
    assert len(channels - {None}) >= 2, f"the sample should rank more than one channel first, got {channels}"
    assert reasons >= SAMPLE // 2, "most customers have a top propensity reason"
    assert audience["best_channel"].notna().mean() > 0.9, "a channel model is served: channels ranked"
    assert audience["reminder_send_time"].notna().any(), "some customers have a reminder planned"


def test_given_customers_in_their_order_with_unknown_and_refused_ids(
    stack: Stack, server: ServerProcess, audience: pd.DataFrame, tmp_path: Path
) -> None:
    known = audience["customer_id"].iloc[5]
    too_long = "x" * 200
    ids = tmp_path / "ids.txt"
    ids.write_text(f"nobody-at-all\n{known}\n\n{known}\n{too_long}\n")
    out = tmp_path / "plan.parquet"
    out.write_bytes(b"an older plan")  # replaced
    result = score_audience(stack, out, "--customers", str(ids), "--window-hours", "48", "--quiet", "22-7")
    assert result.returncode == 0, result.stderr
    plan = pd.read_parquet(out)
    assert plan["customer_id"].tolist() == ["nobody-at-all", known, too_long]
    assert plan["error"].iloc[:2].isna().all() and "limit is 128" in plan["error"].iloc[2]
    assert pd.isna(plan["purchase_propensity"].iloc[2])
    assert sorted(tmp_path.iterdir()) == sorted([ids, out]), "no temporary file left"
    metadata = pq.read_schema(out).metadata
    assert metadata[b"nudge.window_hours"] == b"48" and metadata[b"nudge.quiet_hours"] == b"22-7"
    window_end = timestamp(stack.as_of + pd.Timedelta(hours=48))
    with server.channel() as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        for customer_id, (_, row) in zip(["nobody-at-all", known], plan.iloc[:2].iterrows(), strict=True):
            request = pb.ScoreRequest(
                customer_id=customer_id,
                now=timestamp(stack.as_of),
                window_start=timestamp(stack.as_of),
                window_end=window_end,
                quiet_hours=pb.QuietHours(start_hour=22, end_hour=7),
            )
            reply = stub.Score(request, timeout=5)
            assert actual_rows(row) == expected_rows(reply)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Score(pb.ScoreRequest(customer_id=too_long, now=timestamp(stack.as_of)), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert plan["error"].iloc[2] in (refused.value.details() or "")
    assert plan["feature_status"].iloc[0] == "MISSING"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--as-of", "yesterday"), "--as-of: expected an ISO-8601 time"),
        (("--customers", "/nonexistent/ids.txt"), "--customers /nonexistent/ids.txt: no such file"),
        (("--quiet", "22-25"), "--quiet: expected local hours"),
        (("--min-propensity", "2"), "min_propensity must be within 0..1"),
    ],
)
def test_bad_input_is_one_line(stack: Stack, tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    out = tmp_path / "plan.parquet"
    argv = [str(BIN / "nudge"), "score-audience", "--repo", str(stack.repo), "--models", str(stack.models)]
    argv += ["--as-of", stack.as_of.isoformat(), "--out", str(out)]
    result = subprocess.run([*argv, *extra], capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("nudge score-audience: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_rows_do_not_depend_on_the_chunks_or_the_order(
    stack: Stack, audience: pd.DataFrame, tmp_path: Path
) -> None:
    """Small chunks over ids in another order than the tables' (the spill files per chunk and the
    join back into the audience's order): the same rows, one parquet row group per chunk."""
    ids = audience["customer_id"].sample(frac=0.5, random_state=3).tolist()
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    out = tmp_path / "plan.parquet"
    result = score_audience(stack, out, "--customers", str(tmp_path / "ids.txt"), "--chunk", "37")
    assert result.returncode == 0, result.stderr
    plan = pd.read_parquet(out)
    assert plan["customer_id"].tolist() == ids
    expected = audience.set_index("customer_id").loc[ids].reset_index()
    pd.testing.assert_frame_equal(plan, expected[plan.columns])
    assert pq.ParquetFile(out).metadata.num_row_groups == -(-len(ids) // 37)
