"""nudge on a 3-node Redis Cluster started on loopback by the test (issue 11, "Beyond one
machine"): real Feast applies and materialises the stack's tables into the cluster, the real
server reads them through its direct reader and keeps live states there; Score and Ingest work
through gRPC, two processes racing on the same customers lose no update, a read costs one round
trip per node touched, and a slot moved between nodes (ASK, then MOVED) is followed."""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from feast import FeatureStore
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.connection import AbstractConnection

from nudge.contract.live_record import decode_record
from nudge.v1 import ingest_pb2 as ipb
from nudge.v1 import ingest_pb2_grpc, scoring_pb2_grpc
from nudge.v1 import scoring_pb2 as pb
from service.live_stores import RedisStateStore, redis_key, state_store_for
from service.online.base import CustomerFeatures, FeatureStoreUnavailable
from service.online.layout import build_layout, feature_service_refs
from service.online.readers import build_reader
from service.online.redis_store import RedisFeatureReader, cluster_client
from tests.support.live_writers import assert_two_writers_lose_no_update
from tests.support.stack import (
    RedisClusterServers,
    ServerProcess,
    Stack,
    copy_feature_repo,
    free_port,
    materialize,
    start_redis_cluster,
    timestamp,
)

SERVICES = ("propensity_v1", "send_time_v1")
PATIENT_S = 5.0  # a loaded shared machine must not fail a comparison by timing out
SAMPLE = 60  # customers per read: (2/3)^60 is the chance that one node owns none of them


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def cluster_stack(
    stack: Stack, cluster: RedisClusterServers, tmp_path_factory: pytest.TempPathFactory
) -> Stack:
    """The stack's data and models, its tables materialised by Feast into the cluster."""
    repo = copy_feature_repo(
        tmp_path_factory.mktemp("cluster_repo"), redis_address=cluster.address, cluster=True
    )
    for table in (stack.repo / "data").glob("*.parquet"):
        shutil.copy(table, repo / "data" / table.name)
    materialize(repo)
    return Stack(stack.data, repo, stack.models, stack.as_of)


@pytest.fixture(scope="module")
def feast_store(cluster_stack: Stack) -> FeatureStore:
    return FeatureStore(repo_path=str(cluster_stack.repo))


@pytest.fixture(scope="module")
def customers(stack: Stack) -> list[str]:
    """The most active customers."""
    counts = pd.read_parquet(stack.events, columns=["customer_id"])["customer_id"].value_counts()
    return [str(c) for c in counts.index[:SAMPLE]]


def owner_ports(cluster: RedisClusterServers, keys: list[bytes]) -> list[int]:
    """The port of the node owning each key, as the cluster itself says (not redis-py's map)."""
    with redis.Redis(host=cluster.nodes[0].host, port=cluster.nodes[0].port) as node:
        slots = node.execute_command("CLUSTER SLOTS")
        slot_of = [node.execute_command("CLUSTER KEYSLOT", key) for key in keys]
    return [next(int(s[2][1]) for s in slots if s[0] <= slot <= s[1]) for slot in slot_of]


class Wire:
    """Every command write and reply read of redis-py connections in this process, by port."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, int]] = []
        send, read = AbstractConnection.send_packed_command, AbstractConnection.read_response
        events = self.events

        def counted_send(conn: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
            events.append(("send", int(conn.port)))  # type: ignore[attr-defined]
            return send(conn, *args, **kwargs)

        def counted_read(conn: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
            events.append(("read", int(conn.port)))  # type: ignore[attr-defined]
            return read(conn, *args, **kwargs)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted_send)
        monkeypatch.setattr(AbstractConnection, "read_response", counted_read)

    def take(self) -> list[tuple[str, int]]:
        taken = list(self.events)
        self.events.clear()
        return taken


def assert_one_round_trip_per_node(events: list[tuple[str, int]], ports: list[int]) -> None:
    """One write per node owning a key, every write before the first read, and one reply read
    per key from its owner."""
    sends = [port for kind, port in events if kind == "send"]
    assert Counter(sends) == {port: 1 for port in set(ports)}, events
    first_read = next(i for i, (kind, _) in enumerate(events) if kind == "read")
    assert all(kind == "send" for kind, _ in events[:first_read])
    assert len(events) == first_read + len(ports)
    assert Counter(port for _, port in events[first_read:]) == Counter(ports)


def same_values(ours: CustomerFeatures, theirs: CustomerFeatures) -> bool:
    for ref, value in theirs.values.items():
        mine = ours.values[ref]
        if isinstance(value, np.ndarray) or isinstance(mine, np.ndarray):
            if not np.array_equal(np.asarray(mine), np.asarray(value), equal_nan=True):
                return False
        elif not (mine == value or (mine != mine and value != value)):  # NaN equals NaN here
            return False
    return ours.values.keys() == theirs.values.keys()


# --------------------------------------------------------------------------- reads


def test_direct_reads_equal_feasts_one_round_trip_per_node(
    cluster: RedisClusterServers,
    feast_store: FeatureStore,
    stack: Stack,
    customers: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The direct reader on the cluster answers as Feast's SDK on the cluster and as the SQLite
    stack's reader, in one write per node owning a key: the node a key goes to is the cluster's
    own answer (CLUSTER SLOTS and KEYSLOT), and each node ran exactly its customers' HMGETs."""
    refs = feature_service_refs(feast_store, SERVICES)
    fast = build_reader(feast_store, refs, timeout_s=PATIENT_S)
    assert isinstance(fast, RedisFeatureReader)
    sdk = build_reader(feast_store, refs, fast=False)
    sqlite = build_reader(FeatureStore(repo_path=str(stack.repo)), refs, timeout_s=PATIENT_S)
    layout = build_layout(feast_store, refs)
    ports = owner_ports(cluster, [layout.entity_key(c) + layout.project.encode() for c in customers])
    assert len(set(ports)) == 3
    now = stack.as_of
    nodes = [redis.Redis(host=n.host, port=n.port) for n in cluster.nodes]
    hmgets_before = [node.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0) for node in nodes]

    fast.read(customers, now)  # connections made (their handshakes are not the read's)
    wire = Wire(monkeypatch)
    got = fast.read(customers, now)
    assert_one_round_trip_per_node(wire.take(), ports)
    got_one = fast.read(customers[:1], now)
    assert_one_round_trip_per_node(wire.take(), ports[:1])
    monkeypatch.undo()

    hmgets = [node.info("commandstats")["cmdstat_hmget"]["calls"] for node in nodes]
    assert [after - before for after, before in zip(hmgets, hmgets_before, strict=True)] == [
        2 * ports.count(node.port) + ports[:1].count(node.port) for node in cluster.nodes
    ]
    expected = sdk.read(customers, now)
    assert same_values(got_one[0], got[0]) and got_one[0].event_timestamps == got[0].event_timestamps
    for ours, theirs, batch in zip(got, expected, sqlite.read(customers, now), strict=True):
        assert ours.event_timestamps == theirs.event_timestamps, ours.customer_id
        assert ours.event_timestamps[layout.views[0].name] is not None, ours.customer_id
        assert same_values(ours, theirs), ours.customer_id
        assert same_values(ours, batch), ours.customer_id
    for node in nodes:
        node.close()
    for reader in (fast, sdk, sqlite):
        reader.close()


def test_live_states_read_in_one_round_trip_per_node(
    cluster: RedisClusterServers,
    feast_store: FeatureStore,
    customers: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = state_store_for(feast_store, PATIENT_S)
    assert isinstance(store, RedisStateStore)
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    ids = [prefix + c for c in customers]
    for cid in ids[::2]:
        assert store.compare_and_set([(cid, None, cid.encode())]) == set()
    ports = owner_ports(cluster, [redis_key(c) for c in ids])
    assert len(set(ports)) == 3
    store.read(ids)  # connections made (their handshakes are not the read's)
    wire = Wire(monkeypatch)
    assert store.read(ids) == {cid: cid.encode() for cid in ids[::2]}
    assert_one_round_trip_per_node(wire.take(), ports)
    monkeypatch.undo()
    store.close()


def test_an_unreachable_cluster_fails_the_read_not_the_start(feast_store: FeatureStore) -> None:
    layout = build_layout(feast_store, feature_service_refs(feast_store, SERVICES))
    reader = RedisFeatureReader(layout, cluster_client(f"127.0.0.1:{free_port()}", 0.05))
    with pytest.raises(FeatureStoreUnavailable, match="Redis online store"):
        reader.read(["c"], datetime.now(UTC))
    reader.close()


# --------------------------------------------------------------------------- writes


def test_two_processes_interleaving_events_lose_no_update(
    cluster: RedisClusterServers, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    assert len(set(owner_ports(cluster, [redis_key(f"{prefix}{i}") for i in range(3)]))) >= 2
    assert_two_writers_lose_no_update("cluster", cluster.address, prefix, tmp_path / "events.jsonl")


# --------------------------------------------------------------------------- the server


def test_score_and_ingest_through_the_server(
    cluster_stack: Stack, cluster: RedisClusterServers, customers: list[str], tmp_path: Path
) -> None:
    """Score answers with features before and after Ingest applies a cart add (given in the
    customer's own zone) to known customers and a new one; the records are on the cluster."""
    log = tmp_path / "events.log.jsonl"
    fresh = f"live-{uuid.uuid4().hex[:8]}"
    known = customers[:5]
    zones = pd.read_parquet(cluster_stack.customers).set_index("customer_id")["time_zone"]
    with ServerProcess(cluster_stack, "--event-log", str(log), log_path=tmp_path / "server.log") as server:
        with server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("nudge.v1.ScoringService", "nudge.v1.IngestService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
            score = scoring_pb2_grpc.ScoringServiceStub(channel)
            now = datetime.now(UTC)
            before = [
                score.Score(pb.ScoreRequest(customer_id=c, now=timestamp(now)), timeout=5) for c in known
            ]
            when = timestamp(now - timedelta(minutes=1))
            events = [
                ipb.Event(
                    event_id="e1",
                    customer_id=c,
                    event_type="cart_add",
                    event_time=when,
                    time_zone=str(zones.get(c, "Europe/Berlin")),
                )
                for c in [*known, fresh]
            ]
            ingested = ingest_pb2_grpc.IngestServiceStub(channel).Ingest(
                ipb.IngestRequest(events=events), timeout=10
            )
            after = [
                score.Score(pb.ScoreRequest(customer_id=c, now=timestamp(now)), timeout=5) for c in known
            ]
        text = server.log()
    assert "RedisFeatureReader" in text and "live states in RedisStateStore" in text, text
    for reply in (*before, *after):
        assert reply.feature_status == pb.FEATURE_STATUS_FRESH, reply
        assert reply.time_zone and not reply.time_zone_defaulted
        assert 0.0 < reply.purchase_propensity < 1.0
    assert [r.time_zone for r in after] == [r.time_zone for r in before]
    assert ingested.applied == len(events)
    store = RedisStateStore(cluster_client(cluster.address, PATIENT_S))
    records = {cid: decode_record(raw) for cid, raw in store.read([*known, fresh]).items()}
    store.close()
    assert {cid: list(r.recent) for cid, r in records.items()} == {c: ["e1"] for c in [*known, fresh]}


# --------------------------------------------------------------------------- resharding


def test_a_slot_moved_between_nodes_is_followed(
    cluster: RedisClusterServers,
    feast_store: FeatureStore,
    stack: Stack,
    customers: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Last in the module: it moves one customer's slot to another node. A reader made before
    the move reads right while the slot migrates (the old owner answers ASK for the moved key)
    and after (MOVED); then it has learnt the new owner and reads in one round trip per node."""
    refs = feature_service_refs(feast_store, SERVICES)
    reader = build_reader(feast_store, refs, timeout_s=PATIENT_S)
    layout = build_layout(feast_store, refs)
    ids = customers[:10]
    keys = [layout.entity_key(c) + layout.project.encode() for c in ids]
    now = stack.as_of
    expected = reader.read(ids, now)

    def reads_right() -> bool:
        got = reader.read(ids, now)
        return all(
            a.event_timestamps == b.event_timestamps and same_values(a, b)
            for a, b in zip(got, expected, strict=True)
        )

    ports = owner_ports(cluster, keys)
    nodes = {n.port: redis.Redis(host=n.host, port=n.port) for n in cluster.nodes}
    source = nodes[ports[0]]
    target = next(node for port, node in nodes.items() if port != ports[0])
    target_port = target.connection_pool.connection_kwargs["port"]
    slot = source.execute_command("CLUSTER KEYSLOT", keys[0])
    source_id, target_id = (node.execute_command("CLUSTER MYID") for node in (source, target))
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    del source.response_callbacks["CLUSTER GETKEYSINSLOT"]  # the keys as bytes, not decoded
    moving = source.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
    assert keys[0] in moving
    source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", *moving)

    def errors(name: str) -> int:
        return sum(
            node.info("errorstats").get(f"errorstat_{name}", {}).get("count", 0) for node in nodes.values()
        )

    asks = errors("ASK")
    assert reads_right()
    assert errors("ASK") > asks  # the migrating slot was met, and followed
    for node in nodes.values():
        node.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    moved = errors("MOVED")
    assert reads_right()
    assert errors("MOVED") > moved
    moved, asks = errors("MOVED"), errors("ASK")
    assert reads_right()
    wire = Wire(monkeypatch)  # connections the redirected reads dropped are made again above
    assert reads_right()
    owners = [target_port if key in moving else port for key, port in zip(keys, ports, strict=True)]
    assert_one_round_trip_per_node(wire.take(), owners)
    monkeypatch.undo()
    assert (errors("MOVED"), errors("ASK")) == (moved, asks)  # no redirection any more
    for node in nodes.values():
        node.close()
    reader.close()
