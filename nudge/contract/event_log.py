"""Reading Ingest's event log: JSON lines, one per applied event, at-least-once.

Ingest (service/ingest.py, ``EventLog``) appends a line per applied event and fsyncs it before
any state holds the event. Two readers: ``nudge features`` (the batch reads the whole log beside
the event files, so a rebuild holds every acknowledged event) and ``nudge load-states`` (reads
the part written after the batch read, so events ingested meanwhile are not lost). Both keep
one event per (customer_id, event_id), the first line: a retried round may log an event twice.

A line is complete when it ends in a newline; an unfinished last line (a write in progress)
is left for the next read, which starts at the returned offset. Every write begins with a
newline, so a fragment a failed write left (never acknowledged) is a line of its own: blank
lines and lines that are not whole JSON objects are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One line of the log: times tz-aware; ``amount`` set on purchases only."""

    event_id: str
    customer_id: str
    event_time: datetime
    event_type: str
    amount: float | None
    time_zone: str | None


def read_event_log(path: Path, start: int = 0) -> tuple[list[LoggedEvent], int]:
    """The log's events from byte ``start`` (one per customer and event id; none when there is
    no log yet) and the offset after the last complete line."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    whole = data.rfind(b"\n") + 1
    return _unique(e for line in data[:whole].splitlines() if (e := _parse(line))), start + whole


def _unique(events: Iterable[LoggedEvent]) -> list[LoggedEvent]:
    """The first of each (customer_id, event_id)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for event in events:
        key = (event.customer_id, event.event_id)
        if key not in seen:
            seen.add(key)
            kept.append(event)
    return kept


def _parse(line: bytes) -> LoggedEvent | None:
    """The line's event; None for a blank line or a fragment of a failed write."""
    try:
        row = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    amount = row.get("amount")
    return LoggedEvent(
        event_id=row["event_id"],
        customer_id=row["customer_id"],
        event_time=datetime.fromisoformat(row["event_timestamp"]),
        event_type=row["event_type"],
        amount=None if amount is None else float(amount),
        time_zone=row.get("time_zone"),
    )
