"""The test stack's preconditions hold whatever the date: the guard for the shared fixtures.

The stack's simulated history ends at today's 00:00 UTC, so what its draw contains changes
from day to day. Every precondition a test takes from it must hold on any end date; this
builds the stack's data (``stack_data``, the fixture's own builder) and its feature tables for
end dates across a year, both DST switches of Europe and the US included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from tests.support.stack import FEATURE_REPO, SIGNED_UP_ONLY, stack_data
from training.events import load_event_data
from training.features import build_feature_arrow, repo_tables

END_DATES = [
    "2026-01-01",
    "2026-03-08",  # US: clocks forward
    "2026-03-29",  # EU: clocks forward
    "2026-06-30",
    "2026-10-25",  # EU: clocks back
    "2026-11-01",  # US: clocks back
    "2026-12-02",  # the day the date-dependent fixture broke
]


@pytest.mark.parametrize("end", END_DATES)
def test_stack_preconditions_hold_on_any_end_date(end: str, tmp_path: Path) -> None:
    ended = datetime.fromisoformat(end).replace(tzinfo=UTC)
    stack_data(tmp_path, ended)
    data = load_event_data(tmp_path / "events.parquet", tmp_path / "customers.parquet")
    stats, histograms = (
        t.to_pandas() for t in build_feature_arrow(data.events, data.customers, repo_tables(FEATURE_REPO))
    )
    newest = stats["event_timestamp"].max()
    assert newest == pd.Timestamp(ended), "the newest snapshot is the end of the history (the stack's as_of)"

    counts = data.events["customer_id"].value_counts()
    assert SIGNED_UP_ONLY not in counts.index
    silent = stats[stats["customer_id"] == SIGNED_UP_ONLY]
    assert list(silent["event_timestamp"]) == [newest], "signed up, no events: one stats row, fresh"
    assert SIGNED_UP_ONLY not in set(histograms["customer_id"])

    known = str(counts.index[0])
    assert counts.iloc[0] >= 100, "the longest history is long"
    assert newest in set(stats.loc[stats["customer_id"] == known, "event_timestamp"])
    assert known in set(histograms["customer_id"])
