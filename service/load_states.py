"""``nudge load-states``: put the batch's live records in the live state store.

``nudge features`` writes ``REPO/data/live_states.parquet`` (training/live_states.py): every
customer's record, built from the event files and Ingest's event log up to an offset. This
command makes the store hold them, while a server may be ingesting:

* for each customer of the file, the new record is the batch's, plus the events logged after
  that offset (applied in time order; one already in the record's ids, or older than its
  newest event, is skipped: the next batch run has it). Every event a stored record holds is
  in the log (Ingest logs before it commits), and the log is read after the record, so the new
  record holds all of them: nothing acknowledged is lost, and drift is overwritten;
* written with the store's compare-and-set against the record read: a record Ingest changed
  meanwhile is re-read, with the log read further, and recomputed;
* customers only Ingest knows (created after the batch read) keep their records.

Rerunning it is safe: a record already equal to the new one is not written.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from nudge.contract.event_log import LoggedEvent, read_event_log
from nudge.contract.live_record import (
    LOG_OFFSET_KEY,
    decode_record,
    encode_record,
    live_states_path,
    trim_recent,
)
from nudge.contract.live_state import Event, apply, whole_seconds
from nudge.inputs import UserError, check, missing_input
from service.config import Settings
from service.ingest import MAX_ROUNDS, IngestUnavailable, StateStore

CHUNK = 1_000  # customers per store read


@dataclass(frozen=True)
class Loaded:
    written: int
    unchanged: int
    logged_since: int  # events of the log after the file's offset, re-applied
    skipped: int  # of those: already held, or older than the record's newest event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", type=Path, required=True, help="Feast repo whose online store holds the states."
    )
    parser.add_argument(
        "--feature-store-yaml", type=Path, help="Alternative feature_store.yaml (e.g. Redis)."
    )
    parser.add_argument("--states", type=Path, help="Records file (default: REPO/data/live_states.parquet).")
    parser.add_argument(
        "--event-log", type=Path, help="Ingest's event log (default: REPO/data/events.log.jsonl)."
    )


def run(args: argparse.Namespace) -> int:
    from service.live_stores import UnsupportedStore, state_store_for
    from service.server import open_store

    states = args.states or live_states_path(args.repo)
    check(missing_input(states, "--states", "run nudge features --repo REPO first"))
    settings = Settings(repo=args.repo, feature_store_yaml=args.feature_store_yaml, event_log=args.event_log)
    started = time.perf_counter()
    try:
        store = state_store_for(open_store(settings), timeout_s=5.0)
        try:
            loaded = load(store, states, settings.event_log_path)
        finally:
            store.close()
    except (UnsupportedStore, IngestUnavailable) as exc:
        raise UserError(str(exc), exit_code=1) from exc
    print(
        f"{loaded.written:,} records written, {loaded.unchanged:,} unchanged; "
        f"{loaded.logged_since:,} events logged since the batch re-applied ({loaded.skipped:,} skipped) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def load(store: StateStore, states: Path, log: Path) -> Loaded:
    """Make ``store`` hold the file's records plus the log's later events (module docstring)."""
    table = pq.read_table(states)
    offset = int((table.schema.metadata or {}).get(LOG_OFFSET_KEY, b"0"))
    batch = dict(zip(table["customer_id"].to_pylist(), table["record"].to_pylist(), strict=True))
    since: dict[str, list[LoggedEvent]] = {}
    position = offset
    written = unchanged = skipped = 0
    pending = list(batch)
    for _ in range(MAX_ROUNDS):
        conflicts = []
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start : start + CHUNK]
            stored = store.read(chunk)
            logged, position = read_event_log(log, position)  # after the read: see the docstring
            for event in logged:
                since.setdefault(event.customer_id, []).append(event)
            merged = {cid: _merged(batch[cid], since.get(cid, ())) for cid in chunk}
            changes = [
                (cid, stored.get(cid), value)
                for cid, (value, _) in merged.items()
                if stored.get(cid) != value
            ]
            lost = store.compare_and_set(changes)
            conflicts += sorted(lost)
            written += len(changes) - len(lost)
            unchanged += len(chunk) - len(changes)
            skipped += sum(late for cid, (_, late) in merged.items() if cid not in lost)
        if not conflicts:
            return Loaded(written, unchanged, sum(len(v) for v in since.values()), skipped)
        pending = conflicts
    raise UserError(
        f"{len(pending):,} customers changed by Ingest in each of {MAX_ROUNDS} tries; rerun", exit_code=1
    )


def _merged(record: bytes, logged: Sequence[LoggedEvent]) -> tuple[bytes, int]:
    """The batch's record with the events logged since applied; and how many were skipped."""
    if not logged:
        return record, 0
    live = decode_record(record)
    skipped = 0
    for event in sorted(logged, key=lambda e: e.event_time):  # stable: log order for ties
        t = whole_seconds(event.event_time, up=False)
        newest = live.state.last_event
        if event.event_id in live.recent or (newest is not None and t < newest):
            skipped += 1
            continue
        apply(live.state, Event(t, event.event_type, event.amount))
        live.recent[event.event_id] = t
    if live.state.last_event is not None:
        live.recent = trim_recent(live.recent, live.state.last_event)
    return encode_record(live), skipped
