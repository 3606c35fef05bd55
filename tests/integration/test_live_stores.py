"""The live state stores against a real redis-server (the session's own) and a real SQLite
file: compare-and-set semantics, the key layout, failures as IngestUnavailable, and two
processes ingesting interleaved events for the same customers with no update lost."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from nudge.contract.live_record import decode_record
from service.config import Settings
from service.ingest import EventLog, IngestEvent, Ingestor, IngestUnavailable, StateStore
from service.live_stores import (
    RedisStateStore,
    SqliteStateStore,
    UnsupportedStore,
    redis_key,
    state_store_for,
)
from service.online.redis_store import redis_client
from tests.support.live_writers import CLOCK, TIMEOUT_S, assert_two_writers_lose_no_update, open_store
from tests.support.stack import RedisServer, free_port


@pytest.fixture(params=["redis", "sqlite"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, address or file). Redis is shared by the session: tests use customer ids of their
    own (``prefix``) and never flush it."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return "redis", server.address
    return "sqlite", str(tmp_path / "nudge_live.db")


@pytest.fixture
def store(where: tuple[str, str]) -> Iterator[StateStore]:
    opened = open_store(*where)
    yield opened
    opened.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


def test_compare_and_set_writes_only_over_what_was_read(store: StateStore, prefix: str) -> None:
    a, b = prefix + "a", prefix + "b"
    assert store.read([a, b]) == {}
    assert store.compare_and_set([(a, None, b"v1")]) == set()
    assert store.compare_and_set([(a, None, b"other")]) == {a}  # created meanwhile: not overwritten
    assert store.compare_and_set([(a, b"stale", b"other")]) == {a}
    assert store.compare_and_set([(a, b"v1", b"v2")]) == set()
    assert store.read([a, b]) == {a: b"v2"}


def test_a_batch_writes_what_was_read_and_reports_the_rest(store: StateStore, prefix: str) -> None:
    """One call, many customers (one transaction / one round trip): each compared on its own."""
    ids = [f"{prefix}{i}" for i in range(700)]  # beyond one SQLite statement's parameters
    assert store.compare_and_set([(cid, None, b"v1") for cid in ids[::2]]) == set()
    stale = set(ids[:10:2])
    batch = [(cid, None if cid in stale else b"v1", b"v2") for cid in ids[::2]]
    batch += [(cid, None, b"new") for cid in ids[1::2]]
    assert store.compare_and_set(batch) == stale
    expected = {cid: b"v1" for cid in stale} | {cid: b"v2" for cid in ids[10::2]}
    assert store.read(ids) == expected | {cid: b"new" for cid in ids[1::2]}
    assert store.compare_and_set([]) == set()


def test_reads_many_customers_at_once(store: StateStore, prefix: str) -> None:
    ids = [f"{prefix}{i}" for i in range(1200)]  # beyond one SQLite statement's parameters
    for cid in ids[::7]:
        assert store.compare_and_set([(cid, None, cid.encode())]) == set()
    assert store.read(ids) == {cid: cid.encode() for cid in ids[::7]}


def test_ingest_through_a_real_store(store: StateStore, prefix: str, tmp_path: Path) -> None:
    core = Ingestor(store, EventLog(tmp_path / "events.jsonl"), Settings())
    cid = prefix + "c"
    batch = [
        IngestEvent(
            "e1", cid, CLOCK - timedelta(hours=1), "purchase", amount=20.0, time_zone="Europe/Berlin"
        ),
        IngestEvent("e1", cid, CLOCK - timedelta(hours=1), "purchase", amount=20.0),
        IngestEvent("e2", cid, CLOCK - timedelta(minutes=5), "site_visit"),
    ]
    assert [r.outcome.value for r in core.ingest(batch, clock=CLOCK)] == ["APPLIED", "DUPLICATE", "APPLIED"]
    assert [r.outcome.value for r in core.ingest(batch[1:], clock=CLOCK)] == ["DUPLICATE", "DUPLICATE"]
    record = decode_record(store.read([cid])[cid])
    assert record.state.time_zone == "Europe/Berlin"
    assert (record.state.purchase_count, record.state.amount_total) == (1, 20.0)
    assert list(record.recent) == ["e1", "e2"]


def test_redis_key_is_one_per_customer_with_its_hash_tag(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStateStore(redis_client(redis_server.address, TIMEOUT_S))
    cid = prefix + "x"
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    client.script_flush()  # the first compare-and-set sends the script's text, the next its SHA1
    assert store.compare_and_set([(cid, None, b"v")]) == set()
    assert store.compare_and_set([(cid, b"v", b"w")]) == set()
    assert redis_key(cid) == f"nudge:{{{cid}}}:state".encode()
    assert client.get(f"nudge:{{{cid}}}:state") == b"w"
    client.close()
    store.close()


def test_an_online_store_without_a_live_state_store_is_named() -> None:
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    online = RedisOnlineStoreConfig(redis_type=RedisType.redis_sentinel, connection_string="127.0.0.1:7000")
    feast_store = SimpleNamespace(config=SimpleNamespace(online_store=online))
    with pytest.raises(
        UnsupportedStore, match=r"online store redis \(redis_sentinel\): SQLite and Redis \(one node or a"
    ):
        state_store_for(feast_store, TIMEOUT_S)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_unreachable_redis_is_unavailable(kind: str) -> None:
    """Also a cluster none of whose nodes answers: its client is made at first use, so opening
    the store does not fail (nudge starts), each call does."""
    store = open_store(kind, f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}", 0.05)
    with pytest.raises(IngestUnavailable, match="Redis live state store"):
        store.read(["c"])
    with pytest.raises(IngestUnavailable, match="Redis live state store"):
        store.compare_and_set([("c", None, b"v")])


def test_locked_sqlite_is_unavailable_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "nudge_live.db"
    store = SqliteStateStore(path, 0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        assert store.read(["c"]) == {}  # WAL: reads go on
        with pytest.raises(IngestUnavailable, match="database is locked"):
            store.compare_and_set([("c", None, b"v")])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.compare_and_set([("c", None, b"v")]) == set()
    store.close()


def _open_at(path: str, start_at: float, index: int) -> bool:
    """A worker process starting: open the live store at ``start_at``, write one record."""
    time.sleep(max(start_at - time.time(), 0.0))
    store = SqliteStateStore(Path(path), 5.0)
    lost = store.compare_and_set([(f"c-{index}", None, b"v")])
    store.close()
    return not lost


def test_workers_opening_a_new_sqlite_file_at_once_all_start(tmp_path: Path) -> None:
    """Switching a new file to WAL takes a lock SQLite does not always wait for: two writers
    starting together on a new live store failed with "database is locked" (seen once in CI).
    Six processes open each of eight new files at the same instant: every open succeeds."""
    workers = 6
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(time.sleep, [0.2] * workers))  # every worker up, its imports done
        for attempt in range(8):
            path = tmp_path / f"new-{attempt}.db"
            start_at = time.time() + 0.3
            opened = list(pool.map(_open_at, [str(path)] * workers, [start_at] * workers, range(workers)))
            assert opened == [True] * workers
            store = SqliteStateStore(path, 5.0)
            assert len(store.read([f"c-{i}" for i in range(workers)])) == workers
            store.close()


# --------------------------------------------------------------------------- no lost update


def test_two_processes_interleaving_events_lose_no_update(
    where: tuple[str, str], prefix: str, tmp_path: Path
) -> None:
    assert_two_writers_lose_no_update(*where, prefix, tmp_path / "events.jsonl")
