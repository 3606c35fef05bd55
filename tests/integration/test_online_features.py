"""nudge's online feature readers against real Feast stores (SQLite and Redis), never mocks.

Random feature tables matching the repo's two views are written to a temp copy of the Feast
repo, then ``feast apply`` and ``feast materialize`` run for real (once per store: Feast is
slow). The fast readers must return exactly what Feast's SDK returns, field by field, except
where nudge's TTL rule says a value is too old: the SDK does not apply TTL online, so the test
computes which views are expired from the data it wrote and expects None there.
"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from feast import FeatureStore
from feast.data_source import PushMode
from feast.field import Field
from feast.protos.feast.types.Value_pb2 import DoubleList, FloatList, Int32List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Array, Float32, String

from service.online.base import CustomerFeatures, FeatureStoreUnavailable, OnlineFeatureReader
from service.online.feast_sdk import FeastSdkReader
from service.online.layout import feature_service_refs
from service.online.readers import build_reader
from service.online.redis_store import RedisFeatureReader
from service.online.sqlite_store import SqliteFeatureReader
from service.online.wire import decode_value
from tests.support.stack import FEATURE_REPO, RedisServer, copy_feature_repo, registry_file, start_redis

FEAST = Path(sys.executable).with_name("feast")
STATS, HISTS = "customer_stats", "customer_time_histograms"
TTL = {STATS: timedelta(days=30), HISTS: timedelta(days=365)}
SERVICES = ("propensity_v1", "send_time_v1")
TIME_ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC", ""]
TIMEOUT_S = 0.1  # the fault tests' store timeout (the service default is 50 ms)
PATIENT_TIMEOUT_S = 5.0  # elsewhere: a loaded shared machine must not fail a comparison by timing out
PASSWORD, DB = "nudge-test-secret", 2  # Redis connection-string options the fault tests use
FAILS_FAST_S = 1.0  # "fails within about the timeout": far below redis-py's retries or SQLite's 5 s wait
HIST_LENGTHS = {"hist_hour_of_week": 168, "hist_hour_of_day": 24, "hist_day_of_week": 7}


def _definitions() -> ModuleType:
    """The repo's Feast definitions, so the generated tables follow the real schemas."""
    spec = importlib.util.spec_from_file_location(
        "nudge_feature_definitions", FEATURE_REPO / "definitions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Generated:
    """What the test wrote: the latest event time per view per customer (what Feast keeps online)."""

    now: datetime
    latest: dict[str, dict[str, datetime]]  # view -> customer id -> newest event time
    absent: list[str]  # ids never written

    def present(self, view: str) -> list[str]:
        return list(self.latest[view])

    def expired(self, view: str, customer_id: str, now: datetime) -> bool:
        return now - self.latest[view][customer_id] > TTL[view]


def _column(dtype: object, length: int, n: int, rng: np.random.Generator) -> pa.Array:
    """Random values of one Feast dtype (arrays of ``length``), with nulls, NaN, -0.0, empty arrays."""
    if dtype == Float32:
        values = rng.normal(0, 100, n).astype(np.float32)
        values[rng.random(n) < 0.05] = -0.0
        values[rng.random(n) < 0.05] = np.float32(1e-42)  # subnormal
        return pa.array(values, type=pa.float32(), mask=rng.random(n) < 0.15)
    if dtype == String:
        return pa.array([None if rng.random() < 0.1 else str(rng.choice(TIME_ZONES)) for _ in range(n)])
    assert dtype == Array(Float32)
    rows: list[list[float] | None] = []
    for _ in range(n):
        draw = rng.random()
        if draw < 0.1:
            rows.append(None)
        elif draw < 0.15:
            rows.append([])
        else:
            row = rng.dirichlet(np.ones(length)).astype(np.float32)
            if draw < 0.25:
                row[int(rng.integers(length))] = np.nan
            rows.append(row.tolist())
    return pa.array(rows, type=pa.list_(pa.float32()))


def _write_view(
    path: Path, fields: list[Field], rows: list[tuple[str, datetime]], rng: np.random.Generator
) -> None:
    columns = {
        "customer_id": pa.array([customer for customer, _ in rows]),
        "event_timestamp": pa.array([ts for _, ts in rows], type=pa.timestamp("us", tz="UTC")),
    }
    for field in fields:
        columns[field.name] = _column(field.dtype, HIST_LENGTHS.get(field.name, 0), len(rows), rng)
    pq.write_table(pa.table(columns), path)


def _snapshots(
    customers: list[str], ages: tuple[float, float], rng: np.random.Generator, now: datetime
) -> tuple[list[tuple[str, datetime]], dict[str, datetime]]:
    """1–3 rows per customer, the newest ``ages`` days old (float days: sub-second timestamps)."""
    rows, latest = [], {}
    for customer in customers:
        newest = now - timedelta(days=float(rng.uniform(*ages)))
        latest[customer] = newest
        for back in range(int(rng.integers(1, 4))):
            rows.append((customer, newest - timedelta(days=7 * back)))
    rng.shuffle(rows)
    return rows, latest


def generate(data_dir: Path, prefix: str) -> Generated:
    """customer_stats and customer_time_histograms parquet files; some rows beyond TTL, some views absent.

    Customers 0–44 fresh stats, 45–59 stats older than 30 days, 60–79 no stats;
    0–19 no histograms, 20–64 fresh histograms, 65–79 histograms older than 365 days.
    """
    rng = np.random.default_rng(20261123)
    definitions = _definitions()
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    ids = [f"{prefix}-{i:04d}" for i in range(80)]
    fresh_stats, old_stats = (
        _snapshots(ids[:45], (0, 20), rng, now),
        _snapshots(ids[45:60], (35, 80), rng, now),
    )
    fresh_hist, old_hist = (
        _snapshots(ids[20:65], (0, 300), rng, now),
        _snapshots(ids[65:], (400, 600), rng, now),
    )
    _write_view(
        data_dir / "customer_stats.parquet",
        definitions.customer_stats.features,
        fresh_stats[0] + old_stats[0],
        rng,
    )
    _write_view(
        data_dir / "customer_time_histograms.parquet",
        definitions.customer_time_histograms.features,
        fresh_hist[0] + old_hist[0],
        rng,
    )
    return Generated(
        now=now,
        latest={STATS: {**fresh_stats[1], **old_stats[1]}, HISTS: {**fresh_hist[1], **old_hist[1]}},
        absent=[f"{prefix}-absent-{uuid.uuid4().hex[:8]}" for _ in range(10)],
    )


def _feast(repo: Path, *args: str) -> None:
    """Run the real Feast CLI on the repo."""
    done = subprocess.run(
        [str(FEAST), "-c", str(repo), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"feast {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@dataclass
class Materialized:
    """A Feast repo copy with the generated data applied and materialised into one online store."""

    kind: str  # "sqlite" or "redis"
    repo: Path
    store: FeatureStore
    data: Generated
    refs: list[str]


@pytest.fixture(scope="module")
def id_prefix() -> str:
    """Unique customer ids, so the session's shared Redis never mixes this module's rows with others'."""
    return f"oft{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def materialized(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, id_prefix: str
) -> Materialized:
    kind = request.param
    address = request.getfixturevalue("redis_server").address if kind == "redis" else None
    repo = copy_feature_repo(tmp_path_factory.mktemp(f"repo_{kind}"), redis_address=address)
    data = generate(repo / "data", id_prefix)
    _feast(repo, "apply")
    start = (data.now - timedelta(days=1000)).isoformat()
    _feast(repo, "materialize", start, (data.now + timedelta(seconds=1)).isoformat())
    store = FeatureStore(repo_path=str(repo))
    return Materialized(kind, repo, store, data, feature_service_refs(store, SERVICES))


@pytest.fixture(scope="module")
def readers(materialized: Materialized) -> Iterator[tuple[OnlineFeatureReader, FeastSdkReader]]:
    """The fast reader and the SDK reader over the same store."""
    fast = build_reader(materialized.store, materialized.refs, timeout_s=PATIENT_TIMEOUT_S)
    sdk = build_reader(materialized.store, materialized.refs, fast=False)
    assert isinstance(sdk, FeastSdkReader)
    yield fast, sdk
    fast.close()


# --------------------------------------------------------------------------- comparison


def _assert_same(actual: object, expected: object, where: str) -> None:
    """Bit-exact equality: float32 scalars and arrays (NaN, -0.0 included), strings, None."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), where
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
        assert actual.tobytes() == expected.tobytes(), where
    elif isinstance(expected, float):
        assert isinstance(actual, float), where
        assert struct.pack("<d", actual) == struct.pack("<d", expected), f"{where}: {actual} != {expected}"
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


def _sdk_raw(store: FeatureStore, refs: list[str], ids: list[str]) -> dict[str, list[object]]:
    """Feast's own answer, untouched: ``get_online_features(...).to_dict()``."""
    response = store.get_online_features(
        features=refs, entity_rows=[{"customer_id": i} for i in ids], full_feature_names=True
    )
    return response.to_dict()


def _stored_time(kind: str, event_time: datetime) -> datetime:
    """An event time as the store keeps it: SQLite's ``event_ts`` holds whole seconds."""
    return event_time.replace(microsecond=0) if kind == "sqlite" else event_time


def _sample_ids(data: Generated, seed: int) -> list[str]:
    everyone = sorted(set(data.present(STATS)) | set(data.present(HISTS)))
    rng = np.random.default_rng(seed)
    return [str(i) for i in rng.permutation(everyone + data.absent)]


def test_fast_reader_matches_feast_sdk_values(
    materialized: Materialized, readers: tuple[OnlineFeatureReader, FeastSdkReader]
) -> None:
    """Every value of every customer equals the SDK's, except views older than their TTL (None)."""
    fast, _ = readers
    data, now = materialized.data, datetime.now(UTC)
    ids = _sample_ids(data, seed=1)
    raw = _sdk_raw(materialized.store, materialized.refs, ids)
    got = fast.read(ids, now)
    hidden_by_ttl = 0
    for row, (customer_id, features) in enumerate(zip(ids, got, strict=True)):
        assert features.customer_id == customer_id
        assert set(features.values) == set(materialized.refs)
        for ref in materialized.refs:
            view, feature = ref.split(":")
            sdk_value = raw[f"{view}__{feature}"][row]
            stored = customer_id in data.latest[view]
            expired = stored and data.expired(view, customer_id, now)
            if expired and sdk_value is not None:
                hidden_by_ttl += 1
            expected = None if not stored or expired or sdk_value is None else sdk_value
            if isinstance(expected, list):
                expected = np.asarray(expected, dtype=np.float32)
            _assert_same(features.values[ref], expected, f"{materialized.kind} {customer_id} {ref}")
        for view, latest in data.latest.items():
            fresh = customer_id in latest and not data.expired(view, customer_id, now)
            expected_time = _stored_time(materialized.kind, latest[customer_id]) if fresh else None
            assert features.event_timestamps[view] == expected_time, (customer_id, view)
    # Feast 0.67's SDK does not apply TTL online: it returns the expired rows nudge hides.
    assert hidden_by_ttl > 100, "the SDK returned no expired values: does Feast apply TTL online now?"


def test_fast_and_sdk_readers_agree(
    materialized: Materialized, readers: tuple[OnlineFeatureReader, FeastSdkReader]
) -> None:
    """Same interface, same answers, for batches of 1 and many (with duplicates, in order)."""
    fast, sdk = readers
    ids = _sample_ids(materialized.data, seed=2)
    ids = [*ids[:30], ids[0], materialized.data.absent[0], ids[1]]
    now = datetime.now(UTC)
    for batch in ([ids[0]], ids):
        for ours, theirs in zip(fast.read(batch, now), sdk.read(batch, now), strict=True):
            assert ours.customer_id == theirs.customer_id
            assert ours.event_timestamps == theirs.event_timestamps, ours.customer_id
            assert ours.values.keys() == theirs.values.keys()
            for ref, value in theirs.values.items():
                _assert_same(ours.values[ref], value, f"{ours.customer_id} {ref}")


def test_absent_customers_and_empty_batches(readers: tuple[OnlineFeatureReader, FeastSdkReader]) -> None:
    for reader in readers:
        assert reader.read([], datetime.now(UTC)) == []
        (features,) = reader.read([f"nobody-{uuid.uuid4().hex}"], datetime.now(UTC))
        assert set(features.values.values()) == {None}
        assert features.event_timestamps == {STATS: None, HISTS: None}


def test_ttl_rule(materialized: Materialized, readers: tuple[OnlineFeatureReader, FeastSdkReader]) -> None:
    """A view's values vanish once older than its TTL (relative to ``now``), not at exactly the TTL."""
    data = materialized.data
    customer_id = next(c for c in data.present(STATS) if c in data.latest[HISTS])
    event_time = _stored_time(materialized.kind, data.latest[STATS][customer_id])
    for reader in readers:
        (at_ttl,) = reader.read([customer_id], event_time + TTL[STATS])
        (past_ttl,) = reader.read([customer_id], event_time + TTL[STATS] + timedelta(microseconds=1))
        stats_refs = [ref for ref in materialized.refs if ref.startswith(f"{STATS}:")]
        assert at_ttl.event_timestamps[STATS] == event_time
        assert any(at_ttl.values[ref] is not None for ref in stats_refs)
        assert past_ttl.event_timestamps[STATS] is None
        assert all(past_ttl.values[ref] is None for ref in stats_refs)
        assert past_ttl.event_timestamps[HISTS] == at_ttl.event_timestamps[HISTS] is not None


def test_pushed_values_are_read_back_identically(
    materialized: Materialized, readers: tuple[OnlineFeatureReader, FeastSdkReader], id_prefix: str
) -> None:
    """Rows pushed to the push source (online) read back bit for bit, as the SDK reads them."""
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    ids = [f"{id_prefix}-pushed-{materialized.kind}-{i}" for i in range(5)]
    times = [now - timedelta(seconds=i, microseconds=123_456) for i in range(len(ids))]
    hists = {name: [rng.random(n, dtype=np.float32) for _ in ids] for name, n in HIST_LENGTHS.items()}
    counts = rng.random(len(ids), dtype=np.float32) * 50
    pushed = pd.DataFrame({"customer_id": ids, "event_timestamp": times, **hists, "hist_event_count": counts})
    materialized.store.push("customer_time_histograms_push", pushed, to=PushMode.ONLINE)
    fast, sdk = readers
    for i, (ours, theirs) in enumerate(zip(fast.read(ids, now), sdk.read(ids, now), strict=True)):
        assert ours.event_timestamps[HISTS] == _stored_time(materialized.kind, times[i])
        for name, arrays in hists.items():
            _assert_same(ours.values[f"{HISTS}:{name}"], arrays[i], f"{ids[i]} {name}")
        _assert_same(ours.values[f"{HISTS}:hist_event_count"], float(counts[i]), ids[i])
        assert ours.event_timestamps == theirs.event_timestamps
        for ref, value in theirs.values.items():
            _assert_same(ours.values[ref], value, f"{ids[i]} {ref}")


# --------------------------------------------------------------------------- choice of reader


def test_build_reader_picks_the_direct_reader(
    materialized: Materialized, readers: tuple[OnlineFeatureReader, FeastSdkReader]
) -> None:
    fast, _ = readers
    expected = SqliteFeatureReader if materialized.kind == "sqlite" else RedisFeatureReader
    assert isinstance(fast, expected)
    assert set(fast.feature_refs) == set(materialized.refs)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("customer_stats", "not 'view:feature'"),
        ("customer_stats:no_such_feature", "has no feature"),
    ],
)
def test_bad_feature_refs_fail_at_start_up(materialized: Materialized, ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_reader(materialized.store, [ref])


# --------------------------------------------------------------------------- store failures


@pytest.mark.parametrize("materialized", ["sqlite"], indirect=True)
def test_locked_sqlite_raises_unavailable_within_timeout(materialized: Materialized) -> None:
    """A writer holding the lock (e.g. materialize) costs a read at most ~the timeout."""
    fast = build_reader(materialized.store, materialized.refs, timeout_s=TIMEOUT_S)
    db_path = materialized.repo / "data" / "online_store.db"
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(FeatureStoreUnavailable):
            fast.read(materialized.data.present(STATS)[:3], datetime.now(UTC))
        assert time.monotonic() - started < FAILS_FAST_S
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert fast.read(materialized.data.present(STATS)[:1], datetime.now(UTC))[0].event_timestamps[STATS]
    fast.close()


def _require_password(server: RedisServer) -> None:
    """Make the server ask for a password, as a production Redis would."""
    redis.Redis(host=server.host, port=server.port).config_set("requirepass", PASSWORD)


@pytest.fixture
def own_redis(tmp_path: Path, materialized: Materialized) -> Iterator[tuple[RedisServer, FeatureStore]]:
    """A redis-server this test may kill, and a store (same registry) pointing at it.

    The connection string carries a password and a database number, as Feast allows.
    """
    server = start_redis()
    _require_password(server)
    address = f"{server.address},db={DB},password={PASSWORD}"
    repo = copy_feature_repo(tmp_path / "repo", redis_address=address)
    registry_file(repo).write_bytes(registry_file(materialized.repo).read_bytes())
    yield server, FeatureStore(repo_path=str(repo))
    server.stop()


def _push_one(store: FeatureStore, customer_id: str, count: float) -> None:
    row = {
        "customer_id": [customer_id],
        "event_timestamp": [datetime.now(UTC)],
        "hist_hour_of_week": [np.zeros(168, dtype=np.float32)],
        "hist_hour_of_day": [np.zeros(24, dtype=np.float32)],
        "hist_day_of_week": [np.zeros(7, dtype=np.float32)],
        "hist_event_count": [count],
    }
    store.push("customer_time_histograms_push", pd.DataFrame(row), to=PushMode.ONLINE)


def _count(reader: OnlineFeatureReader, customer_id: str) -> object:
    features: CustomerFeatures = reader.read([customer_id], datetime.now(UTC))[0]
    return features.values[f"{HISTS}:hist_event_count"]


def _timed_failure(reader: OnlineFeatureReader, customer_id: str) -> float:
    started = time.monotonic()
    with pytest.raises(FeatureStoreUnavailable):
        reader.read([customer_id], datetime.now(UTC))
    return time.monotonic() - started


@pytest.mark.parametrize("materialized", ["redis"], indirect=True)
def test_connection_string_password_and_db_are_used(own_redis: tuple[RedisServer, FeatureStore]) -> None:
    server, store = own_redis
    reader = build_reader(store, feature_service_refs(store, SERVICES), timeout_s=PATIENT_TIMEOUT_S)
    _push_one(store, "c-0", 6.0)
    assert _count(reader, "c-0") == 6.0
    reader.close()
    for db, keys in ((DB, 1), (0, 0)):
        assert redis.Redis(host=server.host, port=server.port, db=db, password=PASSWORD).dbsize() == keys


@pytest.mark.parametrize("materialized", ["redis"], indirect=True)
def test_redis_down_raises_quickly_and_reconnects_after_restart(
    own_redis: tuple[RedisServer, FeatureStore],
) -> None:
    server, store = own_redis
    reader = build_reader(store, feature_service_refs(store, SERVICES), timeout_s=TIMEOUT_S)
    _push_one(store, "c-1", 3.0)
    assert _count(reader, "c-1") == 3.0
    server.stop()
    assert _timed_failure(reader, "c-1") < FAILS_FAST_S
    restarted = start_redis(server.port)  # no persistence: an empty Redis on the same address
    try:
        _require_password(restarted)
        assert _count(reader, "c-1") is None  # the same reader, reconnected
        _push_one(store, "c-1", 4.0)
        assert _count(reader, "c-1") == 4.0
    finally:
        reader.close()
        restarted.stop()


@pytest.mark.parametrize("materialized", ["redis"], indirect=True)
def test_hung_redis_raises_within_the_timeout(own_redis: tuple[RedisServer, FeatureStore]) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP) must not hang a request."""
    server, store = own_redis
    reader = build_reader(store, feature_service_refs(store, SERVICES), timeout_s=TIMEOUT_S)
    _push_one(store, "c-2", 5.0)
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        elapsed = _timed_failure(reader, "c-2")
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert TIMEOUT_S * 0.9 < elapsed < FAILS_FAST_S
    assert _count(reader, "c-2") == 5.0
    reader.close()


# --------------------------------------------------------------------------- decoding


def _values() -> Iterator[ValueProto]:
    """Value protos of every shape the direct decoder handles or must hand over to protobuf."""
    yield ValueProto()
    for x in (0.0, -0.0, 1.5, -3.25e-39, float("inf"), float("nan"), 3.4e38):
        yield ValueProto(float_val=x)
    for s in ("", "UTC", "Europe/Paris", "ü" * 60, "x" * 127, "x" * 128, "y" * 5000):
        yield ValueProto(string_val=s)
    for n in (0, 1, 7, 24, 31, 32, 168, 5000):
        array = np.random.default_rng(n).normal(size=n).astype(np.float32)
        yield ValueProto(float_list_val=FloatList(val=array.tolist()))
    yield ValueProto(float_list_val=FloatList(val=[float("nan"), -0.0]))
    yield ValueProto(double_val=0.1)
    yield ValueProto(int64_val=-(2**40))
    yield ValueProto(bool_val=True)
    yield ValueProto(double_list_val=DoubleList(val=[0.1, 0.2]))
    yield ValueProto(int32_list_val=Int32List(val=[1, -2]))
    yield ValueProto(string_list_val=StringList(val=["a", "b"]))


def test_decode_value_matches_protobuf() -> None:
    """The wire-format shortcuts decode exactly what protobuf parses, and hand over the rest."""
    assert decode_value(None) is None
    numpy_kinds = {"float_list_val": np.float32, "double_list_val": np.float64, "int32_list_val": np.int32}
    for proto in _values():
        kind = proto.WhichOneof("val")
        expected: object = None if kind is None else getattr(proto, kind)
        if kind in numpy_kinds:
            expected = np.array(getattr(proto, kind).val, dtype=numpy_kinds[kind])
        elif kind == "string_list_val":
            expected = list(proto.string_list_val.val)
        actual = decode_value(proto.SerializeToString())
        if isinstance(expected, float) and math.isnan(expected):
            assert isinstance(actual, float) and math.isnan(actual)
        else:
            _assert_same(actual, expected, str(proto)[:80])
        if isinstance(actual, np.ndarray):
            assert not actual.flags.writeable
