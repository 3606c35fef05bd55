"""`nudge evaluate-policy`'s arithmetic on a hand-built truth: the oracle is the best message there
is, email at 10:00 is computed by hand from the simulator's formulas, suppression is costed at
nudge's own choice, and data without a truth is refused. (End to end: tests/integration/
test_evaluate_policy.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nudge.cli import main
from training import policy_eval as pe
from training.simulate import CHANNELS, channel_hour_multipliers

T = pd.Timestamp("2026-07-04T00:00:00Z")  # a Saturday: local 10:00 is slot 5 × 24 + 10 everywhere below
SATURDAY_10 = 5 * 24 + 10
ZONES = ("Europe/London", "Asia/Kolkata", "America/New_York")


def hour_probs(peak: int, width: float = 2.0) -> np.ndarray:
    slots = np.arange(168)
    distance = np.minimum((slots - peak) % 168, (peak - slots) % 168)
    curve = np.exp(-0.5 * (distance / width) ** 2) + 0.01
    return (curve / curve.sum()).astype(np.float32)


@pytest.fixture
def truth() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "time_zone": list(ZONES),
            "hour_probs": [hour_probs(SATURDAY_10), hour_probs(5 * 24 + 20), hour_probs(5 * 24 + 13, 6.0)],
            "churn_timestamp": pd.to_datetime(["NaT", "NaT", "2026-06-01T00:00:00Z"], utc=True),
            "burst_open": [0.2, 0.3, 0.1],
            "burst_click": [0.6, 1.0, 0.4],
            "burst_decay_hours": [36.0, 20.0, 60.0],
            "click_given_open": [0.3, 0.1, 0.2],
            "response_email": [0.4, 0.1, 0.2],
            "response_sms": [0.05, 0.2, 0.1],
            "response_push": [0.1, 0.3, 0.15],
            "send_rate_email": [1.5, 1.5, 1.5],
            "send_rate_sms": [0.0, 0.6, 0.6],
            "send_rate_push": [1.0, 1.0, 0.0],
        }
    )


def by_hand(
    truth: pd.DataFrame, i: int, channel: int, slot: int, horizon_days: float = 14.0
) -> tuple[float, float]:
    """(P(engaged), purchases within H) of one message, straight from the simulator's formulas."""
    row = truth.iloc[i]
    probs = row.hour_probs.astype(np.float64) / row.hour_probs.astype(np.float64).sum()
    rate = (
        row[f"response_{CHANNELS[channel]}"]
        * 168
        * probs[slot]
        * channel_hour_multipliers()[channel, slot % 24]
    )
    engaged = 1 - np.exp(-rate)
    mass = [row.burst_open + row.click_given_open * row.burst_click, row.burst_click, row.burst_open][channel]
    operational = 168 * horizon_days / 7  # whole weeks: the clock's whole week each
    alive = pd.isna(row.churn_timestamp) or row.churn_timestamp > T
    return engaged, engaged * mass * (1 - np.exp(-operational / row.burst_decay_hours)) * alive


def test_email_at_ten_by_hand(truth: pd.DataFrame) -> None:
    env = pe.Environment.build(truth, ["a", "b", "c"], T, 14)
    day = pe.candidates(env.zones, T, 24)
    messages = pe.email_at(day)
    local = pe.local_hours(messages.utc_ns, env.zones)
    assert np.all(local % 168 == SATURDAY_10)
    expected = [by_hand(truth, i, 0, SATURDAY_10) for i in range(3)]
    engaged, purchases = env.outcome(messages.channel, messages.utc_ns)
    assert engaged == pytest.approx([e for e, _ in expected], rel=1e-9)
    assert purchases == pytest.approx([p for _, p in expected], rel=1e-9)
    assert purchases[2] == 0 and engaged[2] > 0, "dormant before T: engages, never buys"
    row = pe.policy_metrics(env, messages, np.zeros(3, np.int64), "email")
    assert row["messages"] == 3 and row["share_suppressed"] == 0
    assert row["engagements_per_1000"] == pytest.approx(1000 * sum(e for e, _ in expected) / 3)
    assert row["purchases"] == pytest.approx(sum(p for _, p in expected))
    assert row["channel_share"] == {"EMAIL": 1.0, "SMS": 0.0, "PUSH": 0.0} and row["channel_hit_at_1"] == 1.0


def test_sending_at_the_truth_best_slot_is_the_oracle(truth: pd.DataFrame) -> None:
    env = pe.Environment.build(truth, ["a", "b", "c"], T, 14)
    day = pe.candidates(env.zones, T, 24)
    best, value = pe.oracle(env, day)
    # brute force over every channel and hour of the day, by hand
    chosen = []
    for i in range(3):
        local = pe.local_hours(day.utc_ns[i], np.repeat(env.zones[i], day.utc_ns.shape[1])).astype(int) % 168
        scores = [(by_hand(truth, i, c, s)[0], c, j) for c in range(3) for j, s in enumerate(local)]
        _, c, j = max(scores)
        chosen.append((c, day.utc_ns[i, j]))
    by_brute = pe.Messages(np.array([c for c, _ in chosen]), np.array([t for _, t in chosen]))
    assert best.channel.tolist() == by_brute.channel.tolist()
    oracle_row = pe.policy_metrics(env, best, best.channel, "oracle")
    brute_row = pe.policy_metrics(env, by_brute, best.channel, "brute")
    assert brute_row["engagements_per_1000"] == pytest.approx(oracle_row["engagements_per_1000"], rel=1e-12)
    assert brute_row["purchases"] == pytest.approx(oracle_row["purchases"], rel=1e-12)
    assert value == pytest.approx(env.outcome(best.channel, best.utc_ns)[1])
    for policy in (pe.email_at(day), pe.random_messages(day, np.random.default_rng(3))):
        row = pe.policy_metrics(env, policy, best.channel, "other")
        assert row["engagements_per_1000"] <= oracle_row["engagements_per_1000"] + 1e-12
    # customer a peaks at Saturday 10:00 London on email (its strongest response)
    assert best.channel[0] == 0 and pe.local_hours(best.utc_ns[:1], ZONES[:1])[0] % 168 == SATURDAY_10
    matched = pe.matched_suppression(best, value, 1)
    assert matched.channel.tolist() == [best.channel[0], best.channel[1], -1], "the dormant one is worth 0"


def test_operational_hours_follow_the_customers_week(truth: pd.DataFrame) -> None:
    env = pe.Environment.build(truth, ["a"], T, 1.0)
    probs = truth.hour_probs[0].astype(np.float64) / truth.hour_probs[0].astype(np.float64).sum()
    start = np.array([[SATURDAY_10 - 2.0, 100.5]])
    expected = [
        168 * probs[SATURDAY_10 - 2 : SATURDAY_10 + 22].sum(),
        168 * (probs[101:124].sum() + probs[100] / 2 + probs[124] / 2),
    ]
    assert env.operational_hours(start)[0] == pytest.approx(expected)
    weeks = pe.Environment.build(truth, ["a"], T, 14.0)
    assert weeks.operational_hours(np.array([[3.25, 160.0]]))[0] == pytest.approx([336.0, 336.0])


def test_candidates_are_local_hour_starts() -> None:
    nepal = pe.candidates(["Asia/Kathmandu"], T, 24)
    assert nepal.valid.sum() == 24
    minutes = pd.DatetimeIndex(nepal.utc_ns[0].astype("datetime64[ns]")).minute
    assert set(minutes) == {15}, "+5:45: local hours start at :15 UTC"
    quiet = pe.candidates(["Asia/Kathmandu"], T, 24, quiet=(22, 7))
    assert quiet.valid.sum() == 15 and not set(quiet.hour[0][quiet.valid[0]]) & {22, 23, 0, 1, 2, 3, 4, 5, 6}
    spring = pe.candidates(["America/New_York", "UTC"], pd.Timestamp("2026-03-08T05:00:00Z"), 24)
    assert spring.valid.sum(axis=1).tolist() == [24, 24], "24 real hours: 24 local hour starts"
    new_york = pd.DatetimeIndex(spring.utc_ns[0].astype("datetime64[ns]")).tz_localize("UTC")
    assert 2 not in set(new_york.tz_convert("America/New_York").hour[:23]), "no 02:00 on the DST day"
    assert spring.at_hour(np.array([2, 2])).tolist()[0] == pd.Timestamp("2026-03-08T07:00:00Z").value, (
        "02:00 does not exist that day: the next hour, 03:00 EDT"
    )


def test_modal_hour_on_the_most_engaged_channel() -> None:
    day = pe.candidates(["UTC", "UTC", "UTC"], T, 24)
    events = pd.DataFrame(
        {
            "customer_id": ["a"] * 5 + ["b"] * 2 + ["a"],
            "event_timestamp": pd.to_datetime(
                [
                    "2026-06-01T20:10Z",
                    "2026-06-02T20:40Z",
                    "2026-06-03T08:00Z",
                    "2026-06-04T20:05Z",
                    "2026-06-05T20:06Z",
                    "2026-06-01T07:00Z",
                    "2026-06-02T09:00Z",
                    "2026-07-04T20:00Z",  # after T: not history
                ],
                utc=True,
            ),
            "event_type": ["push_open", "push_open", "email_open", "email_click", "sms_click"]
            + ["email_open"] * 3,
        }
    )
    messages = pe.modal_messages(day, ["a", "b", "c"], ["UTC"] * 3, events, T)
    hours = pd.DatetimeIndex(messages.utc_ns.astype("datetime64[ns]")).hour.tolist()
    assert messages.channel.tolist() == [2, 0, 0], "a: push (2 opens); b: email; c: no history → email"
    assert hours == [20, 10, 10], "a: 20h (4 of 5); b: a tie of 07h and 09h → 10:00; c: 10:00"


def plan_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "unknown"],
            "decision": ["SCHEDULE", "SEND_NOW", "SUPPRESS", "SCHEDULE"],
            "best_send_time": pd.to_datetime(
                ["2026-07-04T09:00Z", "2026-07-04T00:00Z", "NaT", "NaT"], utc=True
            ),
            "best_channel": ["EMAIL", None, "PUSH", "SMS"],
            "best_channel_send_time": pd.to_datetime(
                ["2026-07-04T09:00Z", "NaT", "2026-07-04T13:00Z", "2026-07-04T10:00Z"], utc=True
            ),
            "error": [None] * 4,
        }
    )


def test_the_block_costs_suppression_at_nudges_own_choice(truth: pd.DataFrame) -> None:
    customers = truth[["customer_id", "time_zone"]]
    events = pd.DataFrame(
        {"customer_id": [], "event_timestamp": pd.to_datetime([], utc=True), "event_type": []}
    )
    block = pe.evaluate(
        plan_frame(), truth, events, customers, as_of=T, window_hours=24, horizon_days=14, seed=1
    )
    assert set(block["policies"]) == set(pe.POLICIES)
    assert block["n_customers"] == 3 and block["n_without_truth"] == 1 and block["n_dormant"] == 1
    nudge = block["policies"]["nudge"]
    assert nudge["messages"] == 2 and nudge["share_suppressed"] == pytest.approx(1 / 3)
    # a: email at 09:00 UTC = 10:00 BST; b: no channel ranked → email at best_send_time (05:30 IST)
    expected = [by_hand(truth, 0, 0, SATURDAY_10), by_hand(truth, 1, 0, 5 * 24 + 5)]
    assert nudge["engagements"] == pytest.approx(sum(e for e, _ in expected))
    assert nudge["purchases"] == pytest.approx(sum(p for _, p in expected))
    # c (suppressed, dormant): push at 09:00 EDT engages but would have bought nothing
    forgone = block["suppression"]
    assert forgone["suppressed"] == 1 and forgone["purchases_forgone"] == 0
    assert forgone["engagements_forgone"] == pytest.approx(by_hand(truth, 2, 2, 5 * 24 + 9)[0])
    assert block["policies"]["oracle_matched"]["messages"] == 2
    assert block["ratios"]["nudge_vs_oracle"] == pytest.approx(
        nudge["engagements_per_1000"] / block["policies"]["oracle"]["engagements_per_1000"]
    )
    assert set(block["floors"]) == {"engagements_vs_email_10", "engagements_vs_oracle", "channel_hit_at_1"}
    gap = block["oracle_gap"]
    assert gap["messages"] == 2 and gap["nudge"] == pytest.approx(nudge["engagements_per_1000"])
    assert gap["nudge"] <= min(gap["nudge_channel_best_hour"], gap["best_channel_nudge_hour"])
    assert max(gap["nudge_channel_best_hour"], gap["best_channel_nudge_hour"]) <= gap["oracle"]
    json.dumps(block)  # the report's JSON


def write_inputs(tmp_path: Path, truth: pd.DataFrame) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.parquet" for name in ("plan", "truth", "events", "customers")}
    plan_frame().to_parquet(paths["plan"])  # no score-audience metadata
    truth.to_parquet(paths["truth"])
    pd.DataFrame({"customer_id": ["a"], "event_timestamp": [T], "event_type": ["purchase"]}).to_parquet(
        paths["events"]
    )
    truth[["customer_id", "time_zone"]].to_parquet(paths["customers"])
    paths["report"] = tmp_path / "report.json"
    paths["report"].write_text(json.dumps({"propensity": {"horizon_days": 14}}))
    return paths


def argv(paths: dict[str, Path]) -> list[str]:
    return ["evaluate-policy", *(arg for name, path in paths.items() for arg in (f"--{name}", str(path)))]


def test_a_data_set_without_truth_is_refused(
    tmp_path: Path, truth: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_inputs(tmp_path, truth)
    paths["truth"].unlink()
    assert main(argv(paths)) == 2
    err = capsys.readouterr().err
    assert err.startswith("nudge evaluate-policy: --truth ") and "purchases-only" in err
    assert len(err.strip().splitlines()) == 1
    paths["truth"].write_bytes(b"not parquet")
    assert main(argv(paths)) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    truth[["customer_id", "time_zone"]].to_parquet(paths["truth"])  # not the simulator's truth
    assert main(argv(paths)) == 2
    assert "not a simulator truth" in capsys.readouterr().err
    truth.to_parquet(paths["truth"])
    assert main(argv(paths)) == 2
    assert "not written by this version of nudge score-audience" in capsys.readouterr().err
