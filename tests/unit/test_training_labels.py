"""Training labels on hand-built events: the propensity window's edges, who is scored when,
and the send-time label's local hour of week across time zones and DST changes."""

from __future__ import annotations

import pandas as pd

from tests.support.stack import utc
from training.events import validate
from training.labels import propensity_rows, send_time_rows


def data(
    events: list[tuple[str, str, str]], customers: list[tuple[str, str, str | None]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validated (normalised) events and customers, as training reads them."""
    checked = validate(
        pd.DataFrame(
            [(c, t, kind, 10.0 if kind == "purchase" else None) for c, t, kind in events],
            columns=["customer_id", "event_timestamp", "event_type", "amount"],
        ),
        pd.DataFrame(customers, columns=["customer_id", "time_zone", "signup_timestamp"]),
    )
    return checked.events, checked.customers


def label_of(rows: pd.DataFrame, customer: str, cutoff: str) -> int:
    match = rows[(rows["customer_id"] == customer) & (rows["event_timestamp"] == utc(cutoff))]
    assert len(match) == 1, f"{len(match)} rows for {customer} at {cutoff}"
    return int(match["label"].iloc[0])


def test_propensity_label_is_a_purchase_in_the_half_open_window() -> None:
    events, customers = data(
        [
            ("at_cutoff", "2025-03-10 00:00:00", "purchase"),  # exactly at the cutoff: before it, not in it
            ("at_end", "2025-03-17 00:00:00", "purchase"),  # exactly cutoff + H: inside
            ("after_end", "2025-03-17 00:00:01", "purchase"),  # one second too late
            ("visit_only", "2025-03-12 00:00:00", "site_visit"),  # engagement is not a purchase
            ("inside", "2025-03-01 00:00:00", "site_visit"),
            ("inside", "2025-03-12 09:30:00", "purchase"),
        ],
        [
            ("at_cutoff", "UTC", "2025-01-01"),
            ("at_end", "UTC", "2025-01-01"),
            ("after_end", "UTC", "2025-01-01"),
            ("visit_only", "UTC", "2025-01-01"),
            ("inside", "UTC", None),
        ],
    )
    rows = propensity_rows(events, customers, [utc("2025-03-10")], pd.Timedelta(days=7))
    assert label_of(rows, "at_cutoff", "2025-03-10") == 0
    assert label_of(rows, "at_end", "2025-03-10") == 1
    assert label_of(rows, "after_end", "2025-03-10") == 0
    assert label_of(rows, "visit_only", "2025-03-10") == 0
    assert label_of(rows, "inside", "2025-03-10") == 1


def test_propensity_rows_start_when_the_customer_is_known() -> None:
    events, customers = data(
        [
            ("signed_up", "2025-03-20 00:00:00", "purchase"),
            ("first_event", "2025-03-05 12:00:00", "site_visit"),
            ("first_event", "2025-03-15 12:00:00", "purchase"),
        ],
        [("signed_up", "UTC", "2025-03-04"), ("first_event", "UTC", None), ("never", "UTC", None)],
    )
    rows = propensity_rows(events, customers, [utc("2025-03-03"), utc("2025-03-10")], pd.Timedelta(days=14))
    scored = set(zip(rows["customer_id"], rows["event_timestamp"].dt.strftime("%Y-%m-%d"), strict=True))
    # nobody before they signed up or first appeared; a customer with neither never
    assert scored == {("signed_up", "2025-03-10"), ("first_event", "2025-03-10")}
    assert label_of(rows, "signed_up", "2025-03-10") == 1  # 03-20 is inside (03-10, 03-24]
    assert label_of(rows, "first_event", "2025-03-10") == 1


def test_send_time_label_is_the_local_hour_of_week_across_dst() -> None:
    events, customers = data(
        [
            # Berlin: CET (UTC+1) until 2025-03-30 01:00 UTC, then CEST (UTC+2)
            ("berlin", "2025-03-29 10:30:00", "purchase"),  # Sat 11:30 CET -> 5*24+11
            ("berlin", "2025-03-30 01:30:00", "site_visit"),  # Sun 03:30 CEST (02:xx skipped) -> 6*24+3
            ("berlin", "2025-03-31 06:15:00", "email_open"),  # Mon 08:15 CEST -> 8
            # New York: EDT (UTC-4) until 2025-11-02 06:00 UTC, then EST (UTC-5)
            ("new_york", "2025-11-02 05:30:00", "push_open"),  # Sun 01:30 EDT -> 6*24+1
            ("new_york", "2025-11-02 06:40:00", "sms_click"),  # Sun 01:40 EST (the repeated hour) -> 6*24+1
            # Kathmandu, UTC+5:45, no DST
            ("kathmandu", "2025-06-01 18:14:00", "cart_add"),  # Sun 23:59 -> 6*24+23
            ("kathmandu", "2025-06-01 18:16:00", "email_send"),  # a send is not an engagement
            ("kathmandu", "2025-06-01 18:20:00", "purchase"),  # Mon 00:05 local, but same burst
        ],
        [
            ("berlin", "Europe/Berlin", None),
            ("new_york", "America/New_York", None),
            ("kathmandu", "Asia/Kathmandu", None),
        ],
    )
    rows = send_time_rows(events, customers)
    got = {c: list(rows.loc[rows["customer_id"] == c, "slot"]) for c in ("berlin", "new_york", "kathmandu")}
    assert got == {"berlin": [131, 147, 8], "new_york": [145, 145], "kathmandu": [167]}
    # each row's features are read just before its engagement
    assert (rows["event_timestamp"] < rows["engaged_at"]).all()
    assert (rows["engaged_at"] - rows["event_timestamp"]).max() <= pd.Timedelta(milliseconds=1)


def test_send_time_rows_collapse_bursts_within_an_hour() -> None:
    events, customers = data(
        [
            ("a", "2025-05-05 09:00:00", "email_open"),
            ("a", "2025-05-05 09:40:00", "email_click"),  # 40 min later: same engagement
            ("a", "2025-05-05 10:30:00", "site_visit"),  # 50 min after the previous: still chained
            ("a", "2025-05-05 12:00:00", "purchase"),  # 90 min later: a new engagement
        ],
        [("a", "UTC", None)],
    )
    rows = send_time_rows(events, customers)
    assert list(rows["engaged_at"]) == [utc("2025-05-05 09:00"), utc("2025-05-05 12:00")]
    assert list(rows["slot"]) == [9, 12]
