"""The events/customers contract: every kind of bad input is refused with a clear, counted
message; good input in either format comes back normalised; dropping is explicit and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.events import (
    EVENT_TYPES,
    EventDataError,
    load_customers,
    load_event_data,
    load_events,
    validate,
)


def events_frame(*rows: tuple[object, ...]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["customer_id", "event_timestamp", "event_type", "amount"])


def customers_frame(*rows: tuple[object, ...]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["customer_id", "time_zone", "signup_timestamp"])


GOOD_EVENTS = events_frame(
    ("c1", "2025-03-01 09:00:00", "site_visit", None),
    ("c1", "2025-03-01T10:00:00+02:00", "purchase", 12.5),
    ("c2", "2025-03-02T08:00:00Z", "email_send", None),
    ("c2", "2025-03-02 08:30", "email_open", None),
)
GOOD_CUSTOMERS = customers_frame(
    ("c1", "Europe/Berlin", "2025-01-01"),
    ("c2", "Asia/Kolkata", None),
)


def problems_of(error: pytest.ExceptionInfo[EventDataError]) -> dict[str, int]:
    """reason -> rows, with the table name in front: what a user reads in the message."""
    return {f"{p.table}: {p.reason}": p.rows for p in error.value.problems}


def refuse(events: pd.DataFrame, customers: pd.DataFrame) -> tuple[dict[str, int], str]:
    with pytest.raises(EventDataError) as error:
        validate(events, customers)
    return problems_of(error), str(error.value)


def test_good_data_is_normalised() -> None:
    data = validate(GOOD_EVENTS, GOOD_CUSTOMERS)
    events = data.events
    assert list(events.columns) == ["customer_id", "event_timestamp", "event_type", "amount"]
    assert str(events["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert list(events["event_type"].cat.categories) == list(EVENT_TYPES)
    # Naive text means UTC; offsets are converted to UTC.
    assert events["event_timestamp"].tolist() == [
        pd.Timestamp("2025-03-01 09:00", tz="UTC"),
        pd.Timestamp("2025-03-01 08:00", tz="UTC"),
        pd.Timestamp("2025-03-02 08:00", tz="UTC"),
        pd.Timestamp("2025-03-02 08:30", tz="UTC"),
    ]
    assert events["amount"].isna().tolist() == [True, False, True, True]
    assert data.customers["signup_timestamp"].tolist()[0] == pd.Timestamp("2025-01-01", tz="UTC")
    assert pd.isna(data.customers["signup_timestamp"].tolist()[1])
    assert data.dropped == {}


def test_amount_of_non_purchases_is_ignored() -> None:
    events = events_frame(("c1", "2025-03-01", "site_visit", 99.0), ("c1", "2025-03-02", "purchase", 1.0))
    assert validate(events, GOOD_CUSTOMERS).events["amount"].tolist()[1] == 1.0
    assert np.isnan(validate(events, GOOD_CUSTOMERS).events["amount"].tolist()[0])


def test_naive_datetime_columns_mean_utc_and_aware_ones_are_converted() -> None:
    events = GOOD_EVENTS.assign(
        event_timestamp=pd.to_datetime(["2025-03-01 09:00"] * 4),
    )
    assert validate(events, GOOD_CUSTOMERS).events["event_timestamp"][0] == pd.Timestamp(
        "2025-03-01 09:00", tz="UTC"
    )
    berlin = events.assign(event_timestamp=events["event_timestamp"].dt.tz_localize("Europe/Berlin"))
    assert validate(berlin, GOOD_CUSTOMERS).events["event_timestamp"][0] == pd.Timestamp(
        "2025-03-01 08:00", tz="UTC"
    )


def test_purchases_only_and_no_signup_column_pass() -> None:
    events = events_frame(("c1", "2025-03-01", "purchase", 3.0), ("c2", "2025-03-02", "purchase", 0.0))
    customers = GOOD_CUSTOMERS.drop(columns="signup_timestamp")
    data = validate(events, customers)
    assert len(data.events) == 2
    assert data.customers["signup_timestamp"].isna().all()


def test_amount_column_may_be_absent_only_without_purchases() -> None:
    no_purchases = GOOD_EVENTS[GOOD_EVENTS["event_type"] != "purchase"].drop(columns="amount")
    assert validate(no_purchases, GOOD_CUSTOMERS).events["amount"].isna().all()
    problems, _ = refuse(GOOD_EVENTS.drop(columns="amount"), GOOD_CUSTOMERS)
    assert list(problems) == [
        "events: missing column 'amount' (columns found: customer_id, event_timestamp, event_type)"
        " (required when there are purchase events)"
    ]


def test_missing_columns_are_named() -> None:
    problems, _ = refuse(GOOD_EVENTS.drop(columns=["event_type"]), GOOD_CUSTOMERS.drop(columns=["time_zone"]))
    assert set(problems) == {
        "events: missing column 'event_type' (columns found: customer_id, event_timestamp, amount)",
        "customers: missing column 'time_zone' (columns found: customer_id, signup_timestamp)",
    }


def test_wrong_column_types_are_named() -> None:
    events = GOOD_EVENTS.assign(event_timestamp=[1, 2, 3, 4], customer_id=[1.5, 2.5, 1.5, 2.5])
    customers = GOOD_CUSTOMERS.assign(time_zone=[1, 2])
    problems, message = refuse(events, customers)
    assert set(problems) == {
        "events: column 'customer_id' has type float64; expected text",
        "events: column 'event_timestamp' has type int64; expected a timestamp or ISO 8601 text",
        "customers: column 'time_zone' has type int64; expected text",
    }
    assert "drop_invalid" not in message  # dropping rows cannot fix a column


def test_every_row_problem_is_counted_with_examples_in_one_error() -> None:
    events = events_frame(
        ("c1", "2025-03-01", "purchase", -5.0),  # negative amount
        ("c1", "2025-03-01", "purchase", None),  # missing amount
        ("c1", "yesterday", "site_visit", None),  # unparseable timestamp
        ("c1", "2025-03-02", "purchse", None),  # unknown type
        ("c1", "2025-03-02", "purchse", None),  # unknown type
        ("c9", "2025-03-03", "site_visit", None),  # customer absent
        (None, "2025-03-03", "site_visit", None),  # missing id
        ("c1", None, "site_visit", None),  # missing timestamp
        ("c1", "2025-03-04", "purchase", "ten"),  # not a number
    )
    customers = customers_frame(
        ("c1", "Europe/Berlin", None),
        ("c2", "Mars/Olympus_Mons", None),  # unknown zone
        ("c2", "UTC", None),  # duplicate
        ("c3", "UTC", "soon"),  # unparseable signup
    )
    problems, message = refuse(events, customers)
    assert problems == {
        "events: missing customer_id": 1,
        "events: unparseable event_timestamp": 1,
        "events: missing event_timestamp": 1,
        "events: unknown event_type": 2,
        "events: purchase amount missing": 1,
        "events: purchase amount not a finite number": 1,
        "events: purchase amount negative": 1,
        "events: customer_id absent from customers": 1,
        "customers: duplicate customer_id (the first row is kept)": 1,
        "customers: unknown time_zone": 1,
        "customers: unparseable signup_timestamp": 1,
    }
    assert "events: unknown event_type: 2 rows (values: 'purchse' x2)" in message
    assert "e.g. row 2: customer_id='c1', event_timestamp='yesterday', event_type='site_visit'" in message
    assert "customers: unknown time_zone: 1 row (values: 'Mars/Olympus_Mons' x1)" in message
    assert "drop_invalid=True" in message


def test_events_of_a_customer_whose_row_is_invalid_are_reported() -> None:
    customers = customers_frame(("c1", "Europe/Berlin", None), ("c2", "Nowhere/Land", None))
    problems, _ = refuse(GOOD_EVENTS, customers)
    assert problems["events: customer's row in customers is invalid"] == 2


def test_drop_invalid_drops_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    events = events_frame(
        *GOOD_EVENTS.itertuples(index=False),
        ("c1", "2025-03-05", "buy", None),
        ("c3", "2025-03-05", "site_visit", None),
    )
    customers = customers_frame(*GOOD_CUSTOMERS.itertuples(index=False), ("c3", "Not/A_Zone", None))
    data = validate(events, customers, drop_invalid=True)
    assert len(data.events) == len(GOOD_EVENTS)
    assert data.customers["customer_id"].tolist() == ["c1", "c2"]
    assert data.dropped == {
        "events": {"unknown event_type": 1, "customer's row in customers is invalid": 1},
        "customers": {"unknown time_zone": 1},
    }
    printed = capsys.readouterr().err
    assert "events: dropped 2 of 6 rows" in printed
    assert "customers: dropped 1 of 3 rows: unknown time_zone: 1" in printed


def test_drop_invalid_cannot_fix_a_missing_column() -> None:
    with pytest.raises(EventDataError, match="missing column 'event_type'"):
        validate(GOOD_EVENTS.drop(columns="event_type"), GOOD_CUSTOMERS, drop_invalid=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_files_load_the_same_in_both_formats(tmp_path: Path, suffix: str) -> None:
    events = GOOD_EVENTS.assign(customer_id=["007", "007", "010", "010"])
    customers = GOOD_CUSTOMERS.assign(customer_id=["007", "010"])
    paths = tmp_path / f"events{suffix}", tmp_path / f"customers{suffix}"
    for frame, path in zip((events, customers), paths, strict=True):
        frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    expected = validate(events, customers)
    data = load_event_data(*paths)
    pd.testing.assert_frame_equal(data.events, expected.events)
    pd.testing.assert_frame_equal(data.customers, expected.customers)
    assert data.events["customer_id"].tolist()[0] == "007"  # CSV ids stay text
    pd.testing.assert_frame_equal(load_events(paths[0]), expected.events)
    pd.testing.assert_frame_equal(load_customers(paths[1]), expected.customers)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "my_events.csv"
    GOOD_EVENTS.assign(event_type="teleport").to_csv(path, index=False)
    with pytest.raises(EventDataError, match=r"my_events\.csv: unknown event_type: 4 rows"):
        load_events(path)
    with pytest.raises(ValueError, match=r"unsupported file type '\.json'"):
        load_events(tmp_path / "events.json")


def test_integer_ids_in_parquet_become_text(tmp_path: Path) -> None:
    path = tmp_path / "customers.parquet"
    GOOD_CUSTOMERS.assign(customer_id=[7, 10]).to_parquet(path)
    assert load_customers(path)["customer_id"].tolist() == ["7", "10"]
