"""Replay an events file through a running server's Ingest API:
`nudge ingest --events FILE --target HOST:PORT [--customers FILE]`.

For backfills and load tests. A customer's state folds events in time order (an older event
sent after a newer one would come back LATE), so each customer's events go in time order, in
batches of ``--batch-size``. The customers are split into ``--in-flight`` lanes by a hash of
their id, each lane on its own connection with one call in flight, as a partitioned log keyed by
customer is consumed: the lanes never share a customer, so per-customer order holds while the
client builds the next batch as the server applies the last (and a server with several workers
gets calls on each). Each event's id is the file's ``event_id`` column when it has one, else made
from the row itself (customer, time, type and how many identical rows came before), so
replaying the same file again applies nothing twice: events within the server's dedupe window
(a day before the customer's newest event) come back DUPLICATE, older ones LATE. With
``--customers`` (the customers file of the events schema) a customer's time zone goes with their
events, for customers the server has not seen yet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd

from nudge.client.credentials import add_client_arguments, client_security
from nudge.inputs import UserError, check, missing_input, positive_int, user_errors
from nudge.v1 import ingest_pb2 as pb
from nudge.v1 import ingest_pb2_grpc

OUTCOMES = ("APPLIED", "DUPLICATE", "REJECTED", "LATE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=Path, required=True, help="Events file (.parquet or .csv).")
    parser.add_argument("--customers", type=Path, help="Customers file: their time zones go with the events.")
    parser.add_argument("--target", default="localhost:50051", help="Server address HOST:PORT.")
    parser.add_argument(
        "--batch-size", type=positive_int, default=500, help="Events per Ingest call (default 500)."
    )
    parser.add_argument(
        "--in-flight",
        type=positive_int,
        default=8,
        help="Lanes of customers, each on its own connection with one call in flight (default 8: "
        "enough connections that a server's workers all get some).",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="Deadline of each call, seconds.")
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    add_client_arguments(parser)


def _read(path: Path) -> pd.DataFrame:
    """A Parquet or CSV table (by suffix); a file that is not one is named in the error."""
    try:
        return pd.read_csv(path, dtype=str) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable Parquet or CSV table ({exc})") from exc


def load_events(events: Path, customers: Path | None) -> list[pb.Event]:
    """The file's events as Ingest messages, in time order (ties keep file order)."""
    frame = _read(events)
    missing = {"customer_id", "event_timestamp", "event_type"} - set(frame.columns)
    if missing:
        raise ValueError(f"{events}: missing column(s) {', '.join(sorted(missing))}")
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    amounts = pd.to_numeric(frame["amount"], errors="coerce") if "amount" in frame else None
    zones: dict[str, str] = {}
    if customers is not None:
        people = _read(customers)
        zones = dict(zip(people["customer_id"].astype(str), people["time_zone"].astype(str), strict=True))
    if "event_id" in frame:
        ids = frame["event_id"].astype(str).tolist()
    else:  # the row itself, numbered among identical rows: the same file gives the same ids
        key = ["customer_id", "event_timestamp", "event_type"]
        repeat = frame.groupby(key, sort=False).cumcount().to_numpy()
        nanos = frame["event_timestamp"].astype("int64").to_numpy()
        ids = [
            f"{c}/{t}/{k}/{n}"
            for c, t, k, n in zip(frame["customer_id"], nanos, frame["event_type"], repeat, strict=True)
        ]
    out = []
    for i, (cid, when, kind) in enumerate(
        zip(frame["customer_id"], frame["event_timestamp"], frame["event_type"], strict=True)
    ):
        event = pb.Event(event_id=ids[i], customer_id=cid, event_type=str(kind))
        event.event_time.FromDatetime(when.to_pydatetime())
        if amounts is not None and not np.isnan(amounts.iloc[i]):
            event.amount = float(amounts.iloc[i])
        if cid in zones:
            event.time_zone = zones[cid]
        out.append(event)
    return out


def _batches(events: list[pb.Event], size: int) -> Iterator[list[pb.Event]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


def lanes(events: list[pb.Event], count: int) -> list[list[pb.Event]]:
    """The events split into ``count`` lanes by a stable hash of the customer id, each lane in
    the events' order: a customer's events all go to one lane."""
    out: list[list[pb.Event]] = [[] for _ in range(count)]
    lane_of: dict[str, int] = {}
    for event in events:
        cid = event.customer_id
        if cid not in lane_of:
            lane_of[cid] = zlib.crc32(cid.encode()) % count
        out[lane_of[cid]].append(event)
    return out


class _Tally:
    """Outcome counts of every lane, shared across the lanes' threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.sent = 0
        self.failed = threading.Event()

    def add(self, reply: pb.IngestResponse, sent: int) -> None:
        with self.lock:
            for result in reply.results:
                outcome = pb.EventResult.Outcome.Name(result.outcome).removeprefix("OUTCOME_")
                self.counts[outcome] += 1
                if outcome in ("REJECTED", "LATE"):
                    self.reasons[result.reason] += 1
            self.sent += sent


def _send_lane(
    stub: Any, lane: list[pb.Event], size: int, timeout: float, metadata: Any, tally: _Tally
) -> None:
    for batch in _batches(lane, size):
        if tally.failed.is_set():
            return
        try:
            reply = stub.Ingest(pb.IngestRequest(events=batch), timeout=timeout, metadata=metadata)
        except Exception:  # the other lanes stop at their next batch; the caller raises it
            tally.failed.set()
            raise
        tally.add(reply, len(batch))


def replay(
    stubs: Sequence[Any], events: list[pb.Event], size: int, timeout: float, metadata: Any
) -> dict[str, Any]:
    """Send every batch, one lane per stub; returns the outcome counts, a few rejection
    reasons and the rate. A failed call stops every lane and is raised."""
    tally = _Tally()
    started = time.perf_counter()
    with ThreadPoolExecutor(len(stubs)) as pool:
        futures = [
            pool.submit(_send_lane, stub, lane, size, timeout, metadata, tally)
            for stub, lane in zip(stubs, lanes(events, len(stubs)), strict=True)
        ]
        shown = False  # a progress line is on the terminal, to be ended
        try:
            while not tally.failed.is_set():
                pending = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION).not_done
                if tally.failed.is_set():
                    break
                rate = tally.sent / max(time.perf_counter() - started, 1e-9)
                share = 100 * tally.sent / max(len(events), 1)
                line = f"{tally.sent:,}/{len(events):,} events ({share:.0f} %), {rate:,.0f}/s"
                print(f"\r{line}", end="", file=sys.stderr, flush=True)
                shown = True
                if not pending:
                    break
            for future in futures:
                future.result()
        finally:
            if shown:
                print(file=sys.stderr)
    elapsed = time.perf_counter() - started
    return {
        "events": len(events),
        **{outcome.lower(): tally.counts[outcome] for outcome in OUTCOMES},
        "top_reasons": dict(tally.reasons.most_common(5)),
        "seconds": round(elapsed, 3),
        "events_per_second": round(len(events) / elapsed, 1) if elapsed > 0 else None,
    }


def run(args: argparse.Namespace) -> int:
    check(missing_input(args.events, "--events"), missing_input(args.customers, "--customers"))
    with user_errors(ValueError, KeyError):
        events = load_events(args.events, args.customers)
    security = client_security(args)
    with contextlib.ExitStack() as stack:
        # A local subchannel pool: each lane's channel opens a TCP connection of its own.
        channels = [
            stack.enter_context(security.channel(args.target, [("grpc.use_local_subchannel_pool", 1)]))
            for _ in range(args.in_flight)
        ]
        stubs = [ingest_pb2_grpc.IngestServiceStub(channel) for channel in channels]
        try:
            summary = replay(stubs, events, args.batch_size, args.timeout, security.metadata)
        except grpc.RpcError as exc:  # unreachable, refused, timed out: one line, exit 1
            raise UserError(f"{exc.code().name}: {exc.details()}", exit_code=1) from exc
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            ", ".join(f"{summary[k]:,} {k}" for k in ("events", "applied", "duplicate", "rejected", "late"))
        )
        print(f"{summary['events_per_second'] or 0:,.0f} events/s over {summary['seconds']} s")
        for reason, count in summary["top_reasons"].items():
            print(f"  {count:,} × {reason}")
    return 0
