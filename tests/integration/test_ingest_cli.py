"""`nudge ingest` replays an events file through a real server's Ingest API, idempotently."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from nudge.client.ingest import lanes
from nudge.v1 import ingest_pb2 as pb
from tests.support.stack import BIN, ServerProcess, Stack, event_log_lines


def events_file(root: Path) -> tuple[Path, Path]:
    """Ten recent events of three customers new to the session's live store (ids of their own),
    out of time order, with a repeated row."""
    a, b, c = (f"cli-{uuid.uuid4().hex[:8]}-{name}" for name in "abc")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    rows = [
        (a, base + timedelta(minutes=50), "purchase", 20.0),
        (a, base, "site_visit", None),
        (b, base + timedelta(minutes=5), "cart_add", None),
        (b, base + timedelta(minutes=5), "cart_add", None),  # the same row twice: two events
        (b, base + timedelta(minutes=30), "purchase", 7.5),
        (c, base + timedelta(minutes=1), "email_send", None),
        (c, base + timedelta(minutes=2), "email_open", None),
        (c, base + timedelta(minutes=9), "teleport", None),  # rejected by the server
        (a, base + timedelta(minutes=70), "push_open", None),
        (c, base + timedelta(minutes=40), "purchase", 3.0),
    ]
    events = pd.DataFrame(rows, columns=["customer_id", "event_timestamp", "event_type", "amount"])
    customers = pd.DataFrame({"customer_id": [a, b, c], "time_zone": ["Asia/Tokyo", "UTC", "Europe/Berlin"]})
    events.to_parquet(root / "events.parquet")
    customers.to_parquet(root / "customers.parquet")
    return root / "events.parquet", root / "customers.parquet"


def ingest(server: ServerProcess, events: Path, customers: Path) -> dict[str, object]:
    argv = [str(BIN / "nudge"), "ingest", "--events", str(events), "--customers", str(customers)]
    argv += ["--target", server.target, "--batch-size", "4", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "10/10 events (100 %)" in done.stderr  # the progress line
    return json.loads(done.stdout)


def test_replay_applies_every_valid_event_once(stack: Stack, tmp_path: Path) -> None:
    events, customers = events_file(tmp_path)
    log = tmp_path / "events.log.jsonl"
    with ServerProcess(stack, "--event-log", str(log)) as server:
        first = ingest(server, events, customers)
        again = ingest(server, events, customers)
    assert (first["applied"], first["rejected"], first["late"], first["duplicate"]) == (9, 1, 0, 0)
    assert first["top_reasons"] and "teleport" in next(iter(first["top_reasons"]))  # type: ignore[call-overload]
    assert (again["applied"], again["duplicate"], again["rejected"]) == (0, 9, 1), "a replay changes nothing"
    logged = event_log_lines(log)
    assert len({(e["customer_id"], e["event_id"]) for e in logged}) == 9
    assert {e["time_zone"] for e in logged if e["customer_id"].endswith("-a")} == {"Asia/Tokyo"}


def test_lanes_keep_each_customer_whole_and_in_order() -> None:
    """Per-customer order is what makes a lane-parallel replay safe: every customer's events in
    one lane, in the order given; all events kept."""
    events = [pb.Event(event_id=str(i), customer_id=f"c{i % 7}") for i in range(100)]
    split = lanes(events, 3)
    assert sorted(int(e.event_id) for lane in split for e in lane) == list(range(100))
    for lane in split:
        ids = [int(e.event_id) for e in lane]
        assert ids == sorted(ids)
    homes = {e.customer_id: index for index, lane in enumerate(split) for e in lane}
    assert all(homes[e.customer_id] == index for index, lane in enumerate(split) for e in lane)
    assert len(set(homes.values())) > 1, "seven customers over three lanes use more than one"
