"""Entity rows and labels for both models, computed from the raw events.

Labels come from events, features from Feast: keeping them apart is what makes the training
set point-in-time correct (an entity row's features are read as of its timestamp, its label
looks only after it).

* Propensity: one row per (customer, cutoff) for customers known at the cutoff; the label is
  whether the customer purchases in ``(cutoff, cutoff + horizon]``.
* Send time: one row per engagement (customer-initiated event, bursts collapsed); the label
  is the engagement's hour of the week in the customer's own time zone (Monday 00h = 0), so
  DST shifts the UTC hour, never the label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nudge.contract.week import HOURS_PER_WEEK
from training import features

SLOTS = HOURS_PER_WEEK  # local hours of the week, Monday 00:00-00:59 = 0
HOURS = 24
# Feast joins a feature row when feature_ts <= entity_ts; stamping a send-time entity row one
# microsecond before its engagement keeps any row that already counts the engagement out.
BEFORE_EVENT = pd.Timedelta(microseconds=1)


def send_time_rows(events: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """One entity row per engagement, labelled with its local hour-of-week ``slot``.

    Engagements and their slots are exactly what ``nudge features`` counts into the histograms
    (customer-initiated events, bursts collapsed, slot in the customer's IANA zone). The row's
    ``event_timestamp`` is just before the engagement, so its features describe the customer
    before it; ``engaged_at`` keeps the engagement's time.
    """
    rows = features.engagements(events, customers).drop(columns="time_zone")
    rows.insert(2, "event_timestamp", rows["engaged_at"] - BEFORE_EVENT)
    return rows.sort_values(["engaged_at", "customer_id"], kind="stable").reset_index(drop=True)


def customer_start(events: pd.DataFrame, customers: pd.DataFrame) -> pd.Series:
    """When each customer becomes known: the earlier of signup (if given) and first event."""
    known = [events.groupby("customer_id")["event_timestamp"].min().reindex(customers["customer_id"])]
    if "signup_timestamp" in customers.columns:
        known.append(pd.Series(customers["signup_timestamp"].to_numpy(), index=customers["customer_id"]))
    start = pd.concat([pd.to_datetime(s, utc=True) for s in known], axis=1).min(axis=1)
    return start.dropna()


def propensity_rows(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    cutoffs: Sequence[pd.Timestamp],
    horizon: pd.Timedelta,
) -> pd.DataFrame:
    """Entity rows (customer, cutoff) with label = a purchase in (cutoff, cutoff + horizon].

    A customer enters at cutoffs after they became known (signup or first event), so nobody
    is scored before they exist. The caller chooses cutoffs whose label window is observed.
    """
    if not cutoffs:
        raise ValueError("no cutoffs to build propensity rows at")
    start = customer_start(events, customers)
    rows = pd.concat(
        [
            pd.DataFrame({"customer_id": start.index[start < cutoff], "event_timestamp": cutoff})
            for cutoff in cutoffs
        ],
        ignore_index=True,
    )
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    rows["label"] = purchased_within(events, rows, horizon)
    return rows


def purchased_within(events: pd.DataFrame, rows: pd.DataFrame, horizon: pd.Timedelta) -> pd.Series:
    """Per (customer_id, event_timestamp) row: 1 if the customer purchases in (t, t + horizon].

    The propensity label at any instant, not only at cutoffs: the served evaluation labels its
    random instants with it, so both evaluations mean the same thing by a positive.
    """
    purchases = events.loc[events["event_type"] == "purchase", ["customer_id", "event_timestamp"]]
    nxt = next_purchase_after(rows, purchases)
    return (nxt.notna() & (nxt <= rows["event_timestamp"] + horizon)).astype(np.int8)


def next_purchase_after(rows: pd.DataFrame, purchases: pd.DataFrame) -> pd.Series:
    """For each (customer_id, event_timestamp) row, the first purchase strictly after it (or NaT)."""
    left = rows[["customer_id", "event_timestamp"]].reset_index().sort_values("event_timestamp")
    right = purchases.rename(columns={"event_timestamp": "next_purchase"}).sort_values("next_purchase")
    right["next_purchase"] = pd.to_datetime(right["next_purchase"], utc=True)
    left["event_timestamp"] = left["event_timestamp"].astype(right["next_purchase"].dtype)
    joined = pd.merge_asof(
        left,
        right,
        left_on="event_timestamp",
        right_on="next_purchase",
        by="customer_id",
        direction="forward",
        allow_exact_matches=False,
    )
    return joined.set_index("index")["next_purchase"].reindex(rows.index)
