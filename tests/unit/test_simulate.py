"""The simulator: deterministic, in the public events schema, with its planted truth visible
in the events, and an oracle that is calibrated against the simulation itself.

Local times here are computed with pandas' own tz conversion, independently of the
simulator's clock, so a DST or offset mistake in the simulator shows up as a failure.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from nudge import cli
from training import simulate as sim

START = pd.Timestamp("2026-01-05", tz="UTC")
DAYS = 120  # covers DST starting in America and Europe and ending in Australia
ENGAGEMENTS = ["purchase", "site_visit", "email_open", "email_click", "sms_click", "push_open"]


@pytest.fixture(scope="module")
def data() -> sim.SimulatedData:
    return sim.simulate(1500, DAYS, seed=7)


@dataclass(frozen=True)
class Engagements:
    events: pd.DataFrame
    position: npt.NDArray[np.int64]  # customer's row in truth
    slot: npt.NDArray[np.int64]  # local hour-of-week slot


@pytest.fixture(scope="module")
def engaged(data: sim.SimulatedData) -> Engagements:
    events = data.events[data.events["event_type"].isin(ENGAGEMENTS)]
    return Engagements(events, *local_slots(events, data.truth))


def local_slots(
    events: pd.DataFrame, truth: pd.DataFrame
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(customer position in truth, local hour-of-week slot) of each event, via pandas tz data."""
    position = pd.Index(truth["customer_id"]).get_indexer(pd.Index(events["customer_id"]))
    zones = truth["time_zone"].to_numpy()[position]
    slot = np.empty(len(events), dtype=np.int64)
    for zone in np.unique(zones):
        rows = zones == zone
        local = pd.DatetimeIndex(events["event_timestamp"])[rows].tz_convert(zone)
        slot[rows] = local.dayofweek * 24 + local.hour
    return position.astype(np.int64), slot


def purchase_labels(events: pd.DataFrame, rows: pd.DataFrame, horizon_days: float) -> npt.NDArray[np.bool_]:
    """Did each row's customer buy in (cutoff, cutoff + horizon]?"""
    purchases = events[events["event_type"] == "purchase"]
    joined = rows.reset_index().merge(purchases, on="customer_id")
    inside = (joined["event_timestamp"] > joined["cutoff"]) & (
        joined["event_timestamp"] <= joined["cutoff"] + pd.Timedelta(days=horizon_days)
    )
    hit = set(joined.loc[inside, "index"])
    return np.array([i in hit for i in range(len(rows))])


# --- determinism and schema -----------------------------------------------------------------------


def test_same_seed_same_data_and_different_seed_different_data() -> None:
    a, b, c = sim.simulate(300, 30, seed=1), sim.simulate(300, 30, seed=1), sim.simulate(300, 30, seed=2)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.customers, b.customers)
    pd.testing.assert_frame_equal(a.truth.drop(columns="hour_probs"), b.truth.drop(columns="hour_probs"))
    assert np.array_equal(sim.true_hour_probs(a.truth), sim.true_hour_probs(b.truth))
    assert not a.events.equals(c.events)
    assert not np.array_equal(sim.true_hour_probs(a.truth), sim.true_hour_probs(c.truth))


def test_events_follow_the_public_schema(data: sim.SimulatedData) -> None:
    events = data.events
    assert list(events.columns) == ["customer_id", "event_timestamp", "event_type", "amount"]
    assert pd.api.types.is_string_dtype(events["customer_id"])
    assert pd.api.types.is_string_dtype(events["event_type"])
    assert events["event_timestamp"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert events["amount"].dtype == np.float64
    assert set(events["event_type"]) == set(sim.EVENT_TYPES)
    is_purchase = events["event_type"] == "purchase"
    assert np.array_equal(events["amount"].notna().to_numpy(), is_purchase.to_numpy(bool))
    assert (events.loc[is_purchase, "amount"] > 0).all()
    assert events["event_timestamp"].min() >= START
    assert events["event_timestamp"].max() < START + pd.Timedelta(days=DAYS)
    order = events.sort_values(["customer_id", "event_timestamp"], kind="stable").index
    assert (order == events.index).all()
    assert set(events["customer_id"]) <= set(data.customers["customer_id"])


def test_customers_span_many_zones_including_dst_and_half_hour_ones(data: sim.SimulatedData) -> None:
    customers = data.customers
    assert list(customers.columns) == ["customer_id", "time_zone", "signup_timestamp"]
    assert customers["customer_id"].is_unique
    assert customers["customer_id"].iloc[0] == "c000001"
    assert customers["signup_timestamp"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    zones = set(customers["time_zone"])
    assert len(zones) >= 10
    for zone in zones:
        zoneinfo.ZoneInfo(zone)  # a real IANA name
    assert {"America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata"} <= zones


def test_truth_describes_every_customer(data: sim.SimulatedData) -> None:
    truth = data.truth
    assert truth["customer_id"].tolist() == data.customers["customer_id"].tolist()
    assert set(truth["archetype"]) == set(sim.ARCHETYPES)
    assert set(truth["channel_pref"]) == set(sim.CHANNELS)
    assert all(p.dtype == np.float32 and p.shape == (168,) for p in truth["hour_probs"])
    np.testing.assert_allclose(np.stack(list(truth["hour_probs"])).sum(axis=1), 1.0, rtol=1e-5)
    probs = sim.true_hour_probs(truth)
    assert probs.shape == (len(truth), 168)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # Concentrated enough to learn: a customer's three best hours of 168 hold a real share.
    assert np.sort(probs, axis=1)[:, -3:].sum(axis=1).mean() > 0.2


def test_preferences_are_smooth_routines(data: sim.SimulatedData) -> None:
    """Real routines are smooth: neighbouring hours are alike (no isolated one-hour spikes)
    and a customer's weekdays share one hour-of-day profile. Per-slot noise around the
    archetype (the previous simulator) gave medians of about 0.46 and 0.67 here."""
    probs = sim.true_hour_probs(data.truth)

    def correlation(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
        return np.asarray((a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1)))

    assert np.median(correlation(probs, np.roll(probs, 1, axis=1))) > 0.65
    by_day = probs.reshape(-1, 7, 24)
    assert np.median(correlation(by_day[:, 1], by_day[:, 2])) > 0.9  # Tuesday vs Wednesday


def test_files_round_trip_with_exact_types(data: sim.SimulatedData, tmp_path: Path) -> None:
    sim.write_simulation(data, tmp_path)
    events = pq.read_schema(tmp_path / "events.parquet")
    assert events.names == ["customer_id", "event_timestamp", "event_type", "amount"]
    assert events.types == [pa.string(), pa.timestamp("ns", tz="UTC"), pa.string(), pa.float64()]
    assert pq.read_schema(tmp_path / "truth.parquet").field("hour_probs").type == pa.list_(pa.float32())
    back = pd.read_parquet(tmp_path / "events.parquet")
    assert back["customer_id"].tolist() == data.events["customer_id"].tolist()
    assert back["event_timestamp"].equals(data.events["event_timestamp"])
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert np.array_equal(sim.true_hour_probs(truth), sim.true_hour_probs(data.truth))
    rows = pd.DataFrame({"customer_id": truth["customer_id"][:50], "cutoff": START + pd.Timedelta(days=40)})
    np.testing.assert_array_equal(
        sim.true_purchase_probability(truth, back, rows, 14),
        sim.true_purchase_probability(data.truth, data.events, rows, 14),
    )


def test_cli_writes_the_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    argv = ["simulate", "--customers", "200", "--days", "14", "--seed", "3", "--out", str(out)]
    assert cli.main([*argv, "--start", "2026-03-02"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["customers.parquet", "events.parquet", "truth.parquet"]
    assert "done in" in capsys.readouterr().out
    events = pd.read_parquet(out / "events.parquet")
    assert events["event_timestamp"].min() >= pd.Timestamp("2026-03-02", tz="UTC")
    with pytest.raises(SystemExit):
        cli.main([*argv, "--days", "0"])
    assert "positive whole number" in capsys.readouterr().err


# --- planted truth is visible in the events -------------------------------------------------------


def test_morning_people_engage_in_their_local_morning(data: sim.SimulatedData, engaged: Engagements) -> None:
    hour = engaged.slot % 24
    morning = pd.Series((hour >= 5) & (hour < 10))
    share = morning.groupby(data.truth["archetype"].to_numpy()[engaged.position]).mean()
    assert share["early_commuter"] > 0.7
    assert share.drop("early_commuter").max() < 0.2


def test_each_customers_engagement_hours_match_their_hour_probs(
    data: sim.SimulatedData, engaged: Engagements
) -> None:
    probs = sim.true_hour_probs(data.truth)
    counts = np.zeros_like(probs)
    np.add.at(counts, (engaged.position, engaged.slot), 1.0)
    busy = np.flatnonzero(counts.sum(axis=1) >= 20)
    assert busy.size > 500
    correlation = [np.corrcoef(counts[i], probs[i])[0, 1] for i in busy]
    assert np.median(correlation) > 0.6


def test_local_hours_stay_right_across_dst_changes(data: sim.SimulatedData, engaged: Engagements) -> None:
    """After each DST change the events still sit on the customer's preferred local hours:
    a one-hour error would make a neighbouring slot fit at least as well as the true one.
    Preferences are smooth over neighbouring hours, so the fit is the mean log-likelihood of
    the slots (the true slot leads a one-hour shift by about 0.3-0.5 nats, its standard error
    is about 0.03 here)."""
    probs = sim.true_hour_probs(data.truth)
    zones = data.truth["time_zone"].to_numpy()[engaged.position]
    when = pd.DatetimeIndex(engaged.events["event_timestamp"])
    changes = {
        "America/New_York": "2026-03-08",
        "Europe/Berlin": "2026-03-29",
        "Australia/Sydney": "2026-04-05",
    }
    for zone, day in changes.items():
        change = pd.Timestamp(day, tz="UTC")
        for first_day, last_day in ((-29, -1), (1, 29)):
            near = (when > change + pd.Timedelta(days=first_day)) & (
                when < change + pd.Timedelta(days=last_day)
            )
            position, slot = engaged.position[near & (zones == zone)], engaged.slot[near & (zones == zone)]
            fit = {shift: np.log(probs[position, (slot + shift) % 168]).mean() for shift in (-1, 0, 1)}
            assert position.size > 200, zone
            assert fit[0] > max(fit[-1], fit[1]) + 0.15, (zone, first_day, fit)


def test_opens_are_likelier_for_sends_at_preferred_hours(data: sim.SimulatedData) -> None:
    events = data.events
    sends = events[events["event_type"] == "email_send"]
    opens = events[events["event_type"] == "email_open"]
    # An open belongs to the customer's latest email sent before it.
    matched = pd.merge_asof(
        opens.sort_values("event_timestamp"),
        sends.assign(send_time=sends["event_timestamp"]).sort_values("event_timestamp"),
        on="event_timestamp",
        by="customer_id",
        direction="backward",
    )
    opened = set(zip(matched["customer_id"], matched["send_time"], strict=True))
    was_opened = np.array(
        [key in opened for key in zip(sends["customer_id"], sends["event_timestamp"], strict=True)]
    )
    position, slot = local_slots(sends, data.truth)
    preference = sim.true_hour_probs(data.truth)[position, slot] * 168
    good, poor = preference >= 4.0, preference <= 0.5
    assert good.sum() > 1000 and poor.sum() > 1000
    assert was_opened[good].mean() > 4 * was_opened[poor].mean()


def sends_and_outcomes(data: sim.SimulatedData, channel: str) -> tuple[pd.DataFrame, npt.NDArray[np.bool_]]:
    """The channel's sends and whether each was engaged with: a response belongs to the
    customer's latest send of that channel before it."""
    events = data.events
    response = {"email": "email_open", "sms": "sms_click", "push": "push_open"}[channel]
    sends = events[events["event_type"] == f"{channel}_send"]
    answers = events[events["event_type"] == response]
    matched = pd.merge_asof(
        answers.sort_values("event_timestamp"),
        sends.assign(send_time=sends["event_timestamp"]).sort_values("event_timestamp"),
        on="event_timestamp",
        by="customer_id",
        direction="backward",
    )
    answered = set(zip(matched["customer_id"], matched["send_time"], strict=True))
    engaged = np.array(
        [key in answered for key in zip(sends["customer_id"], sends["event_timestamp"], strict=True)]
    )
    return sends, engaged


def test_channels_have_their_own_hours_of_day(data: sim.SimulatedData) -> None:
    """Push is answered in the evening, email in the morning, sms about evenly: measured as
    each channel's engagement rate against email's at the same local hours (the customers'
    own hours cancel out), and planted as documented."""
    multipliers = sim.channel_hour_multipliers()
    assert multipliers.shape == (3, 24)
    np.testing.assert_allclose(multipliers.mean(axis=1), 1.0)
    email, sms, push = (multipliers[sim.CHANNELS.index(name)] for name in ("email", "sms", "push"))
    assert 7 <= int(email.argmax()) <= 12 and 18 <= int(push.argmax()) <= 22
    assert sms.max() / sms.min() < 1.5 < min(email.max() / email.min(), push.max() / push.min())

    def rate_by_hours(channel: str, hours: range) -> float:
        sends, engaged = sends_and_outcomes(data, channel)
        _, slot = local_slots(sends, data.truth)
        return float(engaged[np.isin(slot % 24, hours)].mean())

    evening, morning = range(18, 23), range(7, 12)
    push_vs_email = {
        name: rate_by_hours("push", hours) / rate_by_hours("email", hours)
        for name, hours in (("evening", evening), ("morning", morning))
    }
    assert push_vs_email["evening"] > 2.5 * push_vs_email["morning"], push_vs_email


def test_engagement_oracle_is_exact_per_channel_and_hour(data: sim.SimulatedData) -> None:
    """true_engagement_probability at each send's slot matches the simulated responses, per
    channel and per block of local hours (4 standard errors: sends are independent draws)."""
    for channel in sim.CHANNELS:
        sends, engaged = sends_and_outcomes(data, channel)
        _, slot = local_slots(sends, data.truth)
        p = sim.true_engagement_probability(data.truth, sends["customer_id"], slot[:, None])
        assert p.shape == (len(sends), 3, 1)
        p = p[:, sim.CHANNELS.index(channel), 0]
        for block in range(4):
            part = (slot % 24) // 6 == block
            sd = np.sqrt(np.sum(p[part] * (1 - p[part]))) / part.sum()
            assert abs(p[part].mean() - engaged[part].mean()) < 4 * sd, (channel, block)
    with pytest.raises(ValueError, match="absent from truth"):
        sim.true_engagement_probability(data.truth, ["nobody"], [[0]])


# --- purchase process -----------------------------------------------------------------------------


def test_dormant_customers_never_buy_again(data: sim.SimulatedData) -> None:
    purchases = data.events[data.events["event_type"] == "purchase"]
    churn = data.truth.set_index("customer_id")["churn_timestamp"]
    when = churn.reindex(purchases["customer_id"]).to_numpy()
    assert not (purchases["event_timestamp"].to_numpy() > when).any()
    churned_in_window = churn[churn >= START]
    assert len(churned_in_window) > 100
    assert purchases["customer_id"].isin(churned_in_window.index).sum() > 100  # they did buy before


def test_new_customers_start_after_signup(data: sim.SimulatedData) -> None:
    signup = data.customers.set_index("customer_id")["signup_timestamp"]
    new = data.truth.set_index("customer_id")["new_customer"]
    assert 0.08 < new.mean() < 0.25
    assert (signup[new] >= START).all() and (signup[~new] < START).all()
    first = data.events.groupby("customer_id")["event_timestamp"].min()
    assert (first >= signup.reindex(first.index)).all()
    buyers = set(data.events.loc[data.events["event_type"] == "purchase", "customer_id"])
    assert 0 < sum(c not in buyers for c in new[new].index) < new.sum()  # some never buy (yet)


def test_purchases_burst_after_clicks_and_the_oracle_sees_it(data: sim.SimulatedData) -> None:
    events = data.events
    clicks = events[events["event_type"].isin(["email_click", "sms_click"])]
    rows = pd.DataFrame({"customer_id": clicks["customer_id"], "cutoff": clicks["event_timestamp"]})
    rows = rows.reset_index(drop=True)
    ahead = purchase_labels(events, rows, 2)
    behind = purchase_labels(events, rows.assign(cutoff=rows["cutoff"] - pd.Timedelta(days=2)), 2)
    assert len(rows) > 1000
    assert ahead.mean() > 2 * behind.mean()
    # The oracle's probability jumps at the click and matches what follows.
    at_click = sim.true_purchase_probability(data.truth, events, rows, 2)
    just_before = sim.true_purchase_probability(
        data.truth, events, rows.assign(cutoff=rows["cutoff"] - pd.Timedelta(seconds=1)), 2
    )
    assert np.all(at_click > just_before)
    assert abs(at_click.mean() - ahead.mean()) < 0.05


# --- the oracle -----------------------------------------------------------------------------------


def test_oracle_is_calibrated_and_discriminates(data: sim.SimulatedData) -> None:
    """Rows at cutoffs ≥ H apart: each y − p is then a martingale difference (p conditions on
    everything before its cutoff, which includes earlier windows), so the sum of y − p has
    variance Σ p(1 − p) whatever the dependence between a customer's rows. We allow four
    standard errors plus 0.01 for the documented approximation (bursts from future opens)."""
    horizon = 14
    rng = np.random.default_rng(0)
    ids = data.truth["customer_id"]
    rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "customer_id": ids,
                    "cutoff": START
                    + pd.Timedelta(days=day)
                    + pd.to_timedelta(rng.random(len(ids)), unit="D"),
                }
            )
            for day in (20, 50, 80, 104)
        ],
        ignore_index=True,
    )
    p = sim.true_purchase_probability(data.truth, data.events, rows, horizon)
    y = purchase_labels(data.events, rows, horizon)
    assert np.all((p >= 0) & (p <= 1))
    quintile = pd.qcut(p, 5, labels=False, duplicates="drop")
    for part in [np.ones(p.size, bool)] + [quintile == q for q in np.unique(quintile)]:
        sd = np.sqrt(np.sum(p[part] * (1 - p[part]))) / part.sum()
        assert abs(p[part].mean() - y[part].mean()) < 4 * sd + 0.01, (
            part.sum(),
            p[part].mean(),
            y[part].mean(),
        )
    assert roc_auc_score(y, p) > 0.8


def test_oracle_before_signup_and_bad_rows() -> None:
    data = sim.simulate(400, 30, seed=5)
    truth = data.truth
    new = truth[truth["new_customer"] & (truth["signup_timestamp"] > START + pd.Timedelta(days=5))]
    rows = pd.DataFrame({"customer_id": new["customer_id"], "cutoff": START})
    p = sim.true_purchase_probability(truth, data.events, rows, 1)
    # A one-day window that closes before signup holds nothing.
    assert np.all(p == 0)
    assert sim.true_purchase_probability(truth, data.events, rows.iloc[:0], 1).shape == (0,)
    with pytest.raises(ValueError, match="absent from truth"):
        sim.true_purchase_probability(
            truth, data.events, pd.DataFrame({"customer_id": ["x"], "cutoff": [START]}), 14
        )
    existing = truth[~truth["new_customer"]].iloc[:1]
    early = pd.DataFrame(
        {
            "customer_id": existing["customer_id"],
            "cutoff": existing["anchor_timestamp"] - pd.Timedelta(days=1),
        }
    )
    with pytest.raises(ValueError, match="precedes"):
        sim.true_purchase_probability(truth, data.events, early, 14)


# --- the operational clock ------------------------------------------------------------------------


def test_clock_agrees_with_the_tz_database_and_inverts(data: sim.SimulatedData) -> None:
    """Every zone over a whole year (all DST changes): local time as pandas computes it, a
    clock that never runs backwards, and inverse(forward(t)) == t."""
    customers = sim._customers_from_truth(data.truth)
    lo, hi = (
        float(sim._hours(pd.DatetimeIndex([START]))[0]),
        float(sim._hours(pd.DatetimeIndex([START + pd.Timedelta(days=365)]))[0]),
    )
    clock = sim._Clock(customers, lo, hi)
    firsts = data.truth.groupby("time_zone").head(1).index.to_numpy()
    c = np.repeat(firsts, 4000)
    hours = np.tile(np.sort(np.random.default_rng(1).uniform(lo, hi, 4000)), firsts.size)
    stamps = sim._timestamps(hours)
    expected = np.empty(c.size)
    zones = data.truth["time_zone"].to_numpy()[c]
    for zone in np.unique(zones):
        rows = zones == zone
        local = stamps[rows].tz_convert(zone)
        expected[rows] = local.dayofweek * 24 + local.hour + local.minute / 60 + local.second / 3600
    # compare at the second the timestamp was floored to
    floored = np.floor(hours * 3600) / 3600
    np.testing.assert_allclose(clock.local_hours(c, floored) % 168, expected, atol=1e-6)
    forward = clock.forward(c, hours).reshape(firsts.size, -1)
    assert np.all(np.diff(forward, axis=1) > 0)
    np.testing.assert_allclose(clock.inverse(c, forward.ravel()), hours, atol=1e-6)
