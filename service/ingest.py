"""Live events into customers' feature states: validate, log durably, apply, commit. No gRPC.

One call takes a batch of events of any customers. Each event is validated on its own (a bad
one is REJECTED with its reason, the others go on); the valid ones are grouped by customer and
folded into that customer's :class:`~nudge.contract.live_state.CustomerState` in event-time
order (equal times keep request order), through :func:`nudge.contract.live_state.apply`, the
same code the batch features are parity-tested against. Per event:

* APPLIED: folded in. A customer never seen is created, in the event's time zone or the
  server's default (the reason says which);
* DUPLICATE: its ``event_id`` is among the customer's recent applied ids: ignored, so a
  retried call (or a log consumer restarting) never counts an event twice;
* LATE: older than the customer's newest applied event. ``apply`` folds in time order only and
  raises :class:`~nudge.contract.live_state.LateEventError`; the event is reported, never
  folded in out of order (the next batch rebuild from the event files sees it).

Durability and atomicity, per round:

1. read every customer's record (state + recent event ids) from the :class:`StateStore`;
2. compute the new records in memory;
3. append every newly APPLIED event to the :class:`EventLog` and fsync it, once for the call;
4. commit each changed record with a compare-and-set on the bytes read in 1 (a Redis Lua
   script on the customer's key, a SQLite ``BEGIN IMMEDIATE`` transaction). A record another
   writer changed meanwhile is not overwritten: that customer goes to the next round (re-read,
   recomputed), so concurrent writers never lose an update.

The log is written before any state commit, so every event a state holds is in the log and
nothing acknowledged is lost; the answer is returned only after the commits. The log is
at-least-once: an event logged in a round whose commit did not happen (a crash, a conflict that
turned it into a DUPLICATE) may be logged again; readers keep one line per
(customer_id, event_id). A call that fails midway (store or log down) may have applied some
events; retrying it is safe, those come back DUPLICATE.
"""

from __future__ import annotations

import enum
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from nudge.contract.events import EVENT_TYPES
from nudge.contract.live_record import LiveRecord, decode_record, encode_record, trim_recent
from nudge.contract.live_state import Event, LateEventError, apply, new_state, whole_seconds
from service.config import Settings, id_problem
from service.zones import is_known_zone

# Compare-and-set rounds before a call gives up on a customer other writers keep changing.
MAX_ROUNDS = 16


class Outcome(enum.Enum):
    APPLIED = "APPLIED"
    DUPLICATE = "DUPLICATE"
    REJECTED = "REJECTED"
    LATE = "LATE"


@dataclass(frozen=True)
class IngestEvent:
    """One event as a caller sent it: ``event_time`` timezone-aware, None when not given."""

    event_id: str
    customer_id: str
    event_time: datetime | None
    event_type: str
    amount: float | None = None
    time_zone: str | None = None


@dataclass(frozen=True)
class EventResult:
    event_id: str
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True)
class Counts:
    """The answer's totals: LATE events count as rejected (not applied, not duplicates)."""

    applied: int
    duplicates: int
    rejected: int

    @classmethod
    def of(cls, results: Sequence[EventResult]) -> Counts:
        applied = sum(r.outcome is Outcome.APPLIED for r in results)
        duplicates = sum(r.outcome is Outcome.DUPLICATE for r in results)
        return cls(applied, duplicates, len(results) - applied - duplicates)


class IngestUnavailable(RuntimeError):
    """The state store or the event log failed (or contention outlasted the retries)."""


Change = tuple[str, bytes | None, bytes]  # customer_id, the record read (None: absent), the new one


class StateStore(Protocol):
    """One record (opaque bytes) per customer, changed only by compare-and-set.

    Implementations (service/live_stores.py) raise :class:`IngestUnavailable` when the store
    cannot be reached."""

    def read(self, customer_ids: Sequence[str]) -> dict[str, bytes]:
        """The records of those customers that have one."""
        ...

    def compare_and_set(self, changes: Sequence[Change]) -> set[str]:
        """For each (customer_id, expected, value): store ``value`` if the record is still
        ``expected`` (None: absent), atomically per customer; returns the customers another
        writer changed meanwhile (nothing stored for them). One call for a whole batch, so a
        store commits it at once (one SQLite transaction, one Redis round trip per node)."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- the event log


class EventLog:
    """Append-only JSON lines, fsynced before :meth:`append` returns.

    Opened with ``O_APPEND`` and written with one ``write`` per call, so the server's worker
    processes can share the file without interleaving lines. Columns follow the batch's event
    data contract (training/events.py: customer_id, event_timestamp, event_type, amount) plus
    the event id, the zone the caller gave and when the server received it, so the next batch
    run can read it beside the event files.

    Each write starts with a newline: a write cut short (a full disk) leaves a fragment, which
    the next write's newline ends, so an acknowledged line is never glued to one. Readers
    (nudge/contract/event_log.py) skip blank lines and fragments: a fragment's call failed, so
    none of its events was acknowledged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise IngestUnavailable(f"event log {path}: {exc}") from exc

    def append(self, events: Sequence[IngestEvent], received: datetime) -> None:
        if not events:
            return
        if self._fd is None:
            raise IngestUnavailable(f"event log {self.path} is closed")
        at = received.isoformat()
        data = "\n" + "".join(
            json.dumps(
                {
                    "event_id": e.event_id,
                    "customer_id": e.customer_id,
                    "event_timestamp": e.event_time.isoformat() if e.event_time else None,
                    "event_type": e.event_type,
                    "amount": e.amount if e.event_type == "purchase" else None,
                    "time_zone": e.time_zone,
                    "received_at": at,
                },
                ensure_ascii=False,
            )
            + "\n"
            for e in events
        )
        encoded = data.encode()
        try:
            written = os.write(self._fd, encoded)
            if written != len(encoded):  # a regular file takes it all unless the disk is full
                raise OSError(f"short write: {written} of {len(encoded)} bytes")
            os.fdatasync(self._fd)
        except OSError as exc:
            raise IngestUnavailable(f"event log {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------- the core


@dataclass
class _Pending:
    """A valid event waiting to be applied: its request position and whole Unix second."""

    index: int
    event: IngestEvent
    second: int


@dataclass
class _Plan:
    """One customer's round: outcomes by request position, the events newly applied, and the
    record to commit (None when nothing was applied: nothing to write)."""

    results: dict[int, EventResult]
    applied: list[IngestEvent]
    value: bytes | None


class Ingestor:
    """Applies events to customers' states in a :class:`StateStore`, logging them first."""

    def __init__(self, store: StateStore, log: EventLog, settings: Settings) -> None:
        self.store = store
        self.log = log
        self.settings = settings

    def close(self) -> None:
        self.store.close()
        self.log.close()

    def ingest(self, events: Sequence[IngestEvent], clock: datetime | None = None) -> list[EventResult]:
        """One result per event, in request order (see the module docstring)."""
        clock = clock or datetime.now(UTC)
        results: list[EventResult | None] = [None] * len(events)
        pending: dict[str, list[_Pending]] = {}
        for index, event in enumerate(events):
            problem = self._problem(event, clock)
            if problem is not None:
                results[index] = EventResult(event.event_id, Outcome.REJECTED, problem)
                continue
            assert event.event_time is not None
            second = whole_seconds(event.event_time, up=False)
            pending.setdefault(event.customer_id, []).append(_Pending(index, event, second))
        for items in pending.values():
            items.sort(key=lambda p: p.second)  # stable: equal times keep request order
        logged: set[tuple[str, str]] = set()
        rounds = 0
        while pending:
            if rounds == MAX_ROUNDS:
                raise IngestUnavailable(
                    f"{len(pending)} customer(s) changed by other writers in each of {MAX_ROUNDS} tries; retry"
                )
            pending = self._round(pending, logged, clock, results)
            rounds += 1
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _round(
        self,
        pending: dict[str, list[_Pending]],
        logged: set[tuple[str, str]],
        clock: datetime,
        results: list[EventResult | None],
    ) -> dict[str, list[_Pending]]:
        """Read, compute, log, commit; returns the customers whose commit lost a race."""
        stored = self.store.read(list(pending))
        plans = {cid: self._plan(cid, items, stored.get(cid)) for cid, items in pending.items()}
        fresh = [
            e for plan in plans.values() for e in plan.applied if (e.customer_id, e.event_id) not in logged
        ]
        self.log.append(fresh, clock)
        logged.update((e.customer_id, e.event_id) for e in fresh)
        lost = self.store.compare_and_set(
            [(cid, stored.get(cid), plan.value) for cid, plan in plans.items() if plan.value is not None]
        )
        conflicts = {}
        for cid, plan in plans.items():
            if cid in lost:
                conflicts[cid] = pending[cid]
                continue
            for index, result in plan.results.items():
                results[index] = result
        return conflicts

    def _plan(self, customer_id: str, items: list[_Pending], raw: bytes | None) -> _Plan:
        """Fold one customer's events (in time order) into a copy of their record."""
        notes = []
        if raw is None:
            given = next((p.event.time_zone for p in items if p.event.time_zone is not None), None)
            zone = given if given is not None else self.settings.default_time_zone
            record = LiveRecord(new_state(customer_id, zone))
            notes.append(
                "new customer" if given is not None else f"new customer, time zone defaulted to {zone}"
            )
        else:
            record = decode_record(raw)
        state = record.state
        results: dict[int, EventResult] = {}
        applied: list[IngestEvent] = []
        for item in items:
            event = item.event
            if event.event_id in record.recent:
                results[item.index] = EventResult(
                    event.event_id, Outcome.DUPLICATE, "event_id already applied for this customer"
                )
                continue
            try:
                apply(state, Event(item.second, event.event_type, event.amount))
            except LateEventError:
                results[item.index] = EventResult(
                    event.event_id,
                    Outcome.LATE,
                    f"event_time is older than the customer's newest applied event "
                    f"({_iso(state.last_event)}); not applied",
                )
                continue
            record.recent[event.event_id] = item.second
            reason = ["applied", *notes]
            notes = []  # said once, on the event that created the customer
            if event.time_zone is not None and event.time_zone != state.time_zone:
                reason.append(f"time_zone {event.time_zone} ignored: the customer's is {state.time_zone}")
            results[item.index] = EventResult(event.event_id, Outcome.APPLIED, "; ".join(reason))
            applied.append(event)
        if not applied:
            return _Plan(results, applied, None)
        assert state.last_event is not None
        record.recent = trim_recent(record.recent, state.last_event)
        return _Plan(results, applied, encode_record(record))

    def _problem(self, event: IngestEvent, clock: datetime) -> str | None:
        """Why an event cannot be applied on its own merits, or None."""
        for name in ("event_id", "customer_id"):
            problem = id_problem(name, getattr(event, name), self.settings.max_id_length)
            if problem is not None:
                return problem
        if event.event_type not in EVENT_TYPES:
            return f"unknown event_type {event.event_type[:64]!r}; expected one of {', '.join(EVENT_TYPES)}"
        if event.event_time is None:
            return "event_time is missing"
        ahead = (event.event_time - clock).total_seconds()
        if ahead > self.settings.ingest_max_skew_seconds:
            return (
                f"event_time is {ahead:.0f} s ahead of the server clock; "
                f"the limit is {self.settings.ingest_max_skew_seconds:.0f} s"
            )
        if event.event_type == "purchase":
            if event.amount is None:
                return "a purchase needs an amount"
            if not math.isfinite(event.amount) or event.amount < 0:
                return f"amount must be finite and >= 0, got {event.amount}"
        if event.time_zone is not None and not is_known_zone(event.time_zone):
            return f"unknown time_zone {event.time_zone[:64]!r}; expected an IANA name such as Europe/Berlin"
        return None


def _iso(second: int | None) -> str:
    return "none" if second is None else datetime.fromtimestamp(second, UTC).isoformat()
