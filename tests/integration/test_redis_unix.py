"""Redis over a Unix socket (``unix:///path`` as the connection string), against a real
redis-server this module starts on a free port and a socket of its own (stopped by PID).

Feast's CLI materialises over TCP (it does not read ``unix://``); the server then reads the
same Redis through the socket: features, live states and Ingest, with the same answers as a
server on the TCP address."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import redis

from nudge.v1 import ingest_pb2, ingest_pb2_grpc, scoring_pb2_grpc
from nudge.v1 import scoring_pb2 as pb
from service.online.redis_store import cluster_client, redis_client
from tests.support.stack import (
    RedisServer,
    ServerProcess,
    Stack,
    copy_feature_repo,
    materialize,
    start_redis,
    timestamp,
)

UNIX_YAML = "feature_store.unix.yaml"


@pytest.fixture(scope="module")
def unix_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    # Short path: a Unix socket's path is limited to ~107 bytes, pytest's temp dirs can be long.
    root = Path(f"/tmp/nudge-unix-{uuid.uuid4().hex[:8]}")
    root.mkdir()
    server = start_redis(unix_socket=root / "redis.sock")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def unix_stack(stack: Stack, unix_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The session stack's data and models, materialised into this module's Redis over TCP,
    with a second configuration of the same repo naming the socket instead."""
    repo = copy_feature_repo(tmp_path_factory.mktemp("unix_repo"), redis_address=unix_redis.address)
    for table in (stack.repo / "data").glob("*.parquet"):
        shutil.copy(table, repo / "data" / table.name)
    materialize(repo)
    tcp_yaml = (repo / "feature_store.yaml").read_text()
    assert f"connection_string: {unix_redis.address}" in tcp_yaml
    (repo / UNIX_YAML).write_text(tcp_yaml.replace(unix_redis.address, f"unix://{unix_redis.unix_socket}"))
    return Stack(stack.data, repo, stack.models, stack.as_of)


def test_server_over_the_socket_answers_as_over_tcp(
    unix_stack: Stack, unix_redis: RedisServer, tmp_path: Path
) -> None:
    ids = [str(c) for c in pd.read_parquet(unix_stack.customers)["customer_id"][:20]]
    newcomer = f"unix-{uuid.uuid4().hex[:8]}"
    now = timestamp(unix_stack.as_of)
    with (
        ServerProcess(unix_stack, "--event-log", str(tmp_path / "tcp.log")) as tcp,
        ServerProcess(
            unix_stack,
            "--feature-store-yaml",
            str(unix_stack.repo / UNIX_YAML),
            "--event-log",
            str(tmp_path / "unix.log"),
        ) as unix,
        tcp.channel() as tcp_channel,
        unix.channel() as unix_channel,
    ):
        by_socket = scoring_pb2_grpc.ScoringServiceStub(unix_channel)
        by_tcp = scoring_pb2_grpc.ScoringServiceStub(tcp_channel)
        over_socket = [by_socket.Score(pb.ScoreRequest(customer_id=c, now=now), timeout=10) for c in ids]
        over_tcp = [by_tcp.Score(pb.ScoreRequest(customer_id=c, now=now), timeout=10) for c in ids]
        # Ingest through the socket writes the live state the TCP server then reads.
        event = ingest_pb2.Event(
            event_id=f"e-{newcomer}",
            customer_id=newcomer,
            event_type="purchase",
            amount=12.5,
            time_zone="Europe/Paris",
        )
        event.event_time.FromDatetime(unix_stack.as_of - timedelta(hours=2))
        reply = ingest_pb2_grpc.IngestServiceStub(unix_channel).Ingest(
            ingest_pb2.IngestRequest(events=[event]), timeout=10
        )
        live = [
            stub.Score(pb.ScoreRequest(customer_id=newcomer, now=now), timeout=10)
            for stub in (by_socket, by_tcp)
        ]
        clients = redis.Redis(host=unix_redis.host, port=unix_redis.port).client_list()
    assert reply.applied == 1
    assert over_socket == over_tcp
    assert sum(r.feature_status == pb.FEATURE_STATUS_FRESH for r in over_socket) >= len(ids) // 2
    assert live[0] == live[1] and live[0].feature_status == pb.FEATURE_STATUS_FRESH
    assert live[0].time_zone == "Europe/Paris"
    # The socket server really is on the socket (redis-server names a Unix client by its path).
    assert any(str(unix_redis.unix_socket) in c["addr"] for c in clients), clients


def test_connection_string_options_apply_on_the_socket(unix_redis: RedisServer) -> None:
    tcp = redis.Redis(host=unix_redis.host, port=unix_redis.port, db=3)
    key = f"nudge-unix-test-{uuid.uuid4().hex}"
    tcp.set(key, b"on db 3")
    try:
        client = redis_client(f"unix://{unix_redis.unix_socket},db=3", 1.0)
        assert client.get(key) == b"on db 3"
        assert redis_client(f"unix://{unix_redis.unix_socket}", 1.0).get(key) is None  # db 0
    finally:
        tcp.delete(key)


def test_a_cluster_cannot_be_named_by_a_socket() -> None:
    with pytest.raises(ValueError, match="host:port, not unix://"):
        cluster_client("unix:///tmp/redis.sock", 1.0)
