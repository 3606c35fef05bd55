"""Live state stores opened by kind, and two writer processes racing on the same customers
(tests/integration/test_live_stores.py on one Redis node and SQLite, test_redis_cluster.py on
a Redis Cluster)."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from nudge.contract.live_record import decode_record
from service.config import Settings
from service.ingest import EventLog, IngestEvent, Ingestor, StateStore
from service.live_stores import RedisStateStore, SqliteStateStore
from service.online.redis_store import cluster_client, redis_client
from tests.support.stack import event_log_lines

CLOCK = datetime(2026, 3, 27, 9, 30, tzinfo=UTC)
TIMEOUT_S = 5.0  # generous: the concurrency test's writers queue for each other's fsyncs
ROUNDS = 40


def open_store(kind: str, where: str, timeout_s: float = TIMEOUT_S) -> StateStore:
    """A store of its own (own connections): also what each worker process opens. ``kind`` is
    ``redis`` (``where``: one node's address), ``cluster`` (the nodes' addresses, Feast's
    cluster connection string) or ``sqlite`` (a file)."""
    if kind == "redis":
        return RedisStateStore(redis_client(where, timeout_s))
    if kind == "cluster":
        return RedisStateStore(cluster_client(where, timeout_s))
    return SqliteStateStore(Path(where), timeout_s)


def _worker(
    kind: str, where: str, log_path: str, batches: list[list[IngestEvent]], start_at: float
) -> list[str]:
    """One writer process: its own connection, its own Ingestor, the shared log file."""
    core = Ingestor(open_store(kind, where), EventLog(Path(log_path)), Settings())
    time.sleep(max(start_at - time.time(), 0.0))  # both start together, after their imports
    outcomes = [r.outcome.value for batch in batches for r in core.ingest(batch, clock=CLOCK)]
    core.close()
    return outcomes


def assert_two_writers_lose_no_update(kind: str, where: str, prefix: str, log: Path) -> None:
    """Two processes send their own purchases and the same shared ones for the same three
    customers, all at one instant (so none is LATE): each customer must end with every own
    purchase of both and each shared one once, whoever won each race."""
    customers = [f"{prefix}{i}" for i in range(3)]

    def batches(worker: str) -> list[list[IngestEvent]]:
        return [
            [
                IngestEvent(event_id, cid, CLOCK, "purchase", amount=1.0)
                for cid in customers
                for event_id in (f"{worker}-{k}", f"shared-{k}")
            ]
            for k in range(ROUNDS)
        ]

    start_at = time.time() + 3.0
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, kind, where, str(log), batches(w), start_at) for w in ("a", "b")]
        outcomes = [outcome for f in futures for outcome in f.result(timeout=120)]

    store = open_store(kind, where)
    records = {cid: decode_record(raw) for cid, raw in store.read(customers).items()}
    store.close()
    expected = 3 * ROUNDS  # a-k, b-k and shared-k for every k
    for cid in customers:
        assert records[cid].state.purchase_count == expected, cid
        assert records[cid].state.amount_total == float(expected)
        assert len(records[cid].recent) == expected
    assert outcomes.count("APPLIED") == expected * len(customers)
    assert outcomes.count("DUPLICATE") == ROUNDS * len(customers)  # each shared one, by the loser
    # Every applied event is in the log (at least once: a lost round may have logged it too).
    lines = {(line["customer_id"], line["event_id"]) for line in event_log_lines(log)}
    assert lines == {(cid, event_id) for cid in customers for event_id in records[cid].recent}
