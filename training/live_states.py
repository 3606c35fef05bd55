"""Every customer's live record, built by the batch (the bootstrap of the live states).

``nudge features`` folds each customer's events — the event files and Ingest's event log — into
the contract's :class:`~nudge.contract.live_state.CustomerState` with the same ``apply`` Ingest
uses, and writes one record per customer to ``REPO/data/live_states.parquet``; ``nudge
load-states`` (service/load_states.py) puts them in the live state store, where Score finalises
them at each request's time. The batch is the source of truth: loading overwrites whatever
the live states drifted to, after re-applying the events logged since this read (the offset in
the file's metadata says where this read of the log stopped).

The log's events join the batch's events (and its feature tables); a customer the log knows and
the customers file does not is added in the zone the log gives, else ``default_zone`` (as
Ingest created them). A record also keeps the event ids Ingest dedupes by (the logged events of
its newest day), so a retried Ingest call after the load is still a DUPLICATE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from nudge.contract.event_log import LoggedEvent
from nudge.contract.events import EVENT_TYPES
from nudge.contract.live_record import LOG_OFFSET_KEY, LiveRecord, encode_record, trim_recent
from nudge.contract.live_state import Event, apply, new_state, whole_seconds

SCHEMA = pa.schema([("customer_id", pa.string()), ("record", pa.binary())])


def with_logged(
    events: pd.DataFrame, customers: pd.DataFrame, logged: Sequence[LoggedEvent], default_zone: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The validated events and customers with the log's events (and new customers) added."""
    if not logged:
        return events, customers
    extra = pd.DataFrame(
        {
            "customer_id": [e.customer_id for e in logged],
            "event_timestamp": pd.to_datetime([e.event_time for e in logged], utc=True),
            "event_type": pd.Categorical([e.event_type for e in logged], categories=EVENT_TYPES),
            "amount": np.array([np.nan if e.amount is None else e.amount for e in logged], dtype=np.float64),
        }
    ).astype({"event_timestamp": events["event_timestamp"].dtype})
    known = set(customers["customer_id"])
    zones: dict[str, str] = {}
    for e in logged:
        if e.customer_id not in known and e.customer_id not in zones:
            zones[e.customer_id] = e.time_zone or default_zone
    new = pd.DataFrame(
        {
            "customer_id": list(zones),
            "time_zone": list(zones.values()),
            "signup_timestamp": pd.Series(
                pd.NaT, index=range(len(zones)), dtype=customers["signup_timestamp"].dtype
            ),
        }
    )
    return (
        pd.concat([events, extra[events.columns]], ignore_index=True),
        pd.concat([customers, new[customers.columns]], ignore_index=True) if zones else customers,
    )


def build_records(events: pd.DataFrame, customers: pd.DataFrame, logged: Sequence[LoggedEvent]) -> pa.Table:
    """One record per customer: every event applied in time order (equal times in the frame's
    order, as the batch features read them), and the logged ids of the newest day."""
    seconds = events["event_timestamp"].astype("int64").to_numpy() // 1_000_000_000
    order = np.lexsort((seconds, events["customer_id"].to_numpy()))
    ids = events["customer_id"].to_numpy()[order].tolist()
    times = seconds[order].tolist()
    kinds = events["event_type"].astype(str).to_numpy()[order].tolist()
    amounts = [None if math.isnan(a) else a for a in events["amount"].to_numpy(np.float64)[order].tolist()]
    by_customer: dict[str, list[int]] = {}
    for i, customer_id in enumerate(ids):
        by_customer.setdefault(customer_id, []).append(i)
    recent: dict[str, dict[str, int]] = {}
    for e in sorted(logged, key=lambda e: e.event_time):
        recent.setdefault(e.customer_id, {})[e.event_id] = whole_seconds(e.event_time, up=False)
    signups = customers["signup_timestamp"]
    out_ids, out_records = [], []
    for customer_id, zone, signup in zip(
        customers["customer_id"], customers["time_zone"], signups, strict=True
    ):
        state = new_state(customer_id, zone, None if pd.isna(signup) else signup.to_pydatetime())
        for i in by_customer.get(customer_id, ()):
            apply(state, Event(times[i], kinds[i], amounts[i]))
        kept = trim_recent(recent.get(customer_id, {}), state.last_event) if state.last_event else {}
        out_ids.append(customer_id)
        out_records.append(encode_record(LiveRecord(state, kept)))
    return pa.table([out_ids, out_records], schema=SCHEMA)


def with_offset(table: pa.Table, offset: int) -> pa.Table:
    """The table with the offset of the log's first byte it does not hold."""
    return table.replace_schema_metadata({LOG_OFFSET_KEY: str(offset).encode()})
