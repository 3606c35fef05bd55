"""The time split: train → gap → test, with a selection period that always holds engagements."""

from __future__ import annotations

import pandas as pd
import pytest

from training.split import make_split

H = pd.Timedelta(days=14)


def weekly(start: str, weeks: int) -> list[pd.Timestamp]:
    return [pd.Timestamp(start, tz="UTC") + pd.Timedelta(weeks=w) for w in range(weeks)]


@pytest.mark.parametrize("days", [60, 90, 180, 365])
def test_every_period_is_non_empty_and_separated_by_the_horizon(days: int) -> None:
    start = pd.Timestamp("2026-01-05", tz="UTC")
    end = start + pd.Timedelta(days=days)
    split = make_split(weekly("2026-01-12", days // 7), start, end, H)
    assert split.train and split.test and split.selection
    assert split.train[-1] + H <= split.test[0], "no training label window overlaps a test one"
    assert split.selection_start < split.train_end, "selection engagements exist"
    assert split.data_start < split.selection_fit_end, "selection models have engagements to fit"
    assert set(split.selection) <= set(split.train) and split.selection[-1] == split.train[-1]


def test_too_short_data_is_one_clear_error() -> None:
    start = pd.Timestamp("2026-01-05", tz="UTC")
    with pytest.raises(ValueError, match="cannot hold training, selection and test"):
        make_split(weekly("2026-01-12", 4), start, start + pd.Timedelta(days=30), H)
