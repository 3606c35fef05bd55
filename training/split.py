"""The time split both models share, never at random: train → gap → test.

Propensity cutoffs are snapshot times whose label window (t, t + H] lies inside the data;
training cutoffs end one horizon before the first test cutoff, so no training label window
overlaps a test one. Inside the training period, its last part is the *selection* period
where the send-time structure is chosen, by models fitted on engagements ending one horizon
earlier (the same gap). The send-time model uses the same dates for its engagements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

TEST_SHARE = 0.2  # share of usable cutoffs held out at the end
SELECTION_SHARE = 0.25  # share of the training cutoffs where the send-time structure is chosen


@dataclass(frozen=True)
class TimeSplit:
    """Cutoffs of each part, and the engagement-time boundaries derived from them."""

    horizon: pd.Timedelta
    data_start: pd.Timestamp
    data_end: pd.Timestamp
    train: tuple[pd.Timestamp, ...]
    selection: tuple[pd.Timestamp, ...]  # the last training cutoffs
    test: tuple[pd.Timestamp, ...]

    @property
    def train_end(self) -> pd.Timestamp:
        """Training engagements are strictly before this time (the last label window's end)."""
        return self.test[0] - self.horizon

    @property
    def selection_start(self) -> pd.Timestamp:
        return self.selection[0]

    @property
    def selection_fit_end(self) -> pd.Timestamp:
        """Models compared on the selection period are fitted on engagements before this."""
        return self.selection[0] - self.horizon

    def describe(self) -> dict[str, object]:
        """The split as the report states it."""

        def iso(ts: pd.Timestamp) -> str:
            return ts.isoformat()

        return {
            "scheme": "by time: train, gap of one horizon, test (send-time selection: last part of train)",
            "horizon_days": self.horizon / pd.Timedelta(days=1),
            "gap_days": self.horizon / pd.Timedelta(days=1),
            "data_start": iso(self.data_start),
            "data_end": iso(self.data_end),
            "propensity_train_cutoffs": [iso(self.train[0]), iso(self.train[-1]), len(self.train)],
            "propensity_test_cutoffs": [iso(self.test[0]), iso(self.test[-1]), len(self.test)],
            "send_time_train_engagements": [iso(self.data_start), iso(self.train_end)],
            "send_time_test_engagements": [iso(self.test[0]), iso(self.data_end)],
            "send_time_selection": {
                "fit_engagements": [iso(self.data_start), iso(self.selection_fit_end)],
                "scored_engagements": [iso(self.selection_start), iso(self.train_end)],
            },
        }


def make_split(
    snapshots: Sequence[pd.Timestamp], data_start: pd.Timestamp, data_end: pd.Timestamp, horizon: pd.Timedelta
) -> TimeSplit:
    """Assign the usable snapshot times to train (with its selection part) and test.

    Usable: after the first event (there is some history) and with the whole label window
    observed (t + H <= last event). Fails with a clear message when the data is too short.
    """
    usable = sorted(t for t in snapshots if data_start < t and t + horizon <= data_end)
    n_test = max(1, round(len(usable) * TEST_SHARE))
    test = usable[len(usable) - n_test :]
    train = [t for t in usable if test and t + horizon <= test[0]]
    selection = train[len(train) - max(1, round(len(train) * SELECTION_SHARE)) :]
    if selection and selection[0] + horizon >= test[0]:
        # Scored selection engagements are [selection[0], test[0] - H): with short data the
        # share above can leave that empty; start it at the last cutoff before its end.
        before = sum(t + horizon < test[0] for t in train)  # train is sorted: a prefix
        selection = train[before - 1 :] if before else []
    if not selection or not any(t + horizon <= selection[0] for t in train):
        days = (data_end - data_start) / pd.Timedelta(days=1)
        raise ValueError(
            f"{days:.0f} days of data with {len(usable)} usable snapshots cannot hold training, selection "
            f"and test periods separated by {horizon.days}-day gaps; use longer data or a shorter horizon"
        )
    return TimeSplit(horizon, data_start, data_end, tuple(train), tuple(selection), tuple(test))
