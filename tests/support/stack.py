"""The real stack the integration tests run against, built the way a user builds it.

Simulated data (with the customers the tests need added explicitly), the Feast repo copied,
applied and materialised, models trained by ``nudge train``, a ``redis-server`` of the test
session's own, and ``nudge serve`` in a subprocess on a free port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pandas as pd
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

if TYPE_CHECKING:
    from service.ingest import StateStore
    from training.train import TrainResult

ROOT = Path(__file__).resolve().parents[2]


FEATURE_REPO = ROOT / "feature_repo"


def utc(text: str) -> pd.Timestamp:
    """A UTC pandas timestamp from ISO text: the hand-built cases' times."""
    return pd.Timestamp(text, tz="UTC")


def timestamp(when: datetime) -> Timestamp:
    """``when`` as the protobuf Timestamp a request carries."""
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def event_log_lines(path: Path) -> list[dict[str, Any]]:
    """Ingest's event log (JSON lines, one object per applied event; each write begins with a
    newline, so blank lines separate calls), each line parsed: a line that is not whole JSON (a
    torn write) fails the test."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server this test session owns."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    unix_socket: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop it by PID (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(
    port: int | None = None,
    data_dir: Path | None = None,
    cluster: bool = False,
    unix_socket: Path | None = None,
) -> RedisServer:
    """Start a throw-away redis-server on a free port; fail loudly if it cannot start.

    With ``unix_socket`` it also listens on that Unix socket (owner only).

    With ``data_dir`` it keeps an RDB snapshot there (written by SAVE, loaded at start), so a
    test can kill it and bring the same data back. With ``cluster`` it starts as a cluster node
    (``nodes.conf`` in ``data_dir``, its bus on a free port of its own): see
    :func:`start_redis_cluster`."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; the Redis tests need it (apt-get install redis-server)")
    port = port or free_port()
    persistence = ["--dir", str(data_dir), "--dbfilename", "dump.rdb"] if data_dir else []
    if cluster:
        assert data_dir is not None, "a cluster node keeps its nodes.conf in data_dir"
        persistence += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        persistence += ["--cluster-port", str(free_port())]
    if unix_socket is not None:
        persistence += ["--unixsocket", str(unix_socket), "--unixsocketperm", "700"]
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *persistence,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return RedisServer("127.0.0.1", port, proc, unix_socket)
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"redis-server did not start on port {port}")


@dataclass
class RedisClusterServers:
    """The redis-servers of a Redis Cluster this test session owns (masters only)."""

    nodes: list[RedisServer]

    @property
    def address(self) -> str:
        """Feast's connection string for a cluster: every node, ``host:port,host:port,...``."""
        return ",".join(node.address for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(root: Path, masters: int = 3) -> RedisClusterServers:
    """Start ``masters`` cluster nodes on free loopback ports (each in its own directory under
    ``root``, no persistence), join them with ``redis-cli --cluster create`` (no replicas) and
    wait until every node says ``cluster_state:ok``; fail loudly otherwise, stopping what started.
    Only the nodes started here are ever addressed."""
    import redis

    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.fail(
            "redis-cli is not installed; the Redis Cluster tests need it (apt-get install redis-tools)"
        )
    servers = RedisClusterServers([])
    try:
        for i in range(masters):
            (root / f"node{i}").mkdir(parents=True)
            servers.nodes.append(start_redis(data_dir=root / f"node{i}", cluster=True))
        addresses = [node.address for node in servers.nodes]
        create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        result = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")
        deadline = time.monotonic() + 30
        pending = list(servers.nodes)
        while pending and time.monotonic() < deadline:
            with redis.Redis(host=pending[0].host, port=pending[0].port) as client:
                info = client.cluster("INFO")
            if info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == masters:
                pending.pop(0)
            else:
                time.sleep(0.1)
        if pending:
            pytest.fail(f"Redis Cluster not ok within 30 s at {pending[0].address}:\n{info}")
    except BaseException:
        servers.stop()
        raise
    return servers


def copy_feature_repo(dest: Path, redis_address: str | None = None, cluster: bool = False) -> Path:
    """Copy feature_repo's definitions and yaml (no data) into dest; point it at Redis if asked.

    With ``redis_address`` the copy's ``feature_store.yaml`` is the production (Redis) variant
    with the connection string filled in, so Feast's CLI and SDK use it unchanged; with
    ``cluster`` too, its ``redis_type`` is ``redis_cluster`` (the address lists the nodes).
    """
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "data").mkdir(exist_ok=True)
    shutil.copy(FEATURE_REPO / "definitions.py", dest / "definitions.py")
    if redis_address is None:
        shutil.copy(FEATURE_REPO / "feature_store.yaml", dest / "feature_store.yaml")
    else:
        text = (
            (FEATURE_REPO / "feature_store.redis.yaml").read_text().replace("${NUDGE_REDIS}", redis_address)
        )
        if cluster:
            assert "\n  redis_type: redis\n" in text
            text = text.replace("\n  redis_type: redis\n", "\n  redis_type: redis_cluster\n")
        (dest / "feature_store.yaml").write_text(text)
    return dest


def registry_file(repo: Path) -> Path:
    """The registry file a copied repo's ``feature_store.yaml`` names (each variant has its own)."""
    import yaml

    return repo / yaml.safe_load((repo / "feature_store.yaml").read_text())["registry"]


BIN = Path(sys.executable).parent


def run_cli(*argv: str, cwd: Path | None = None) -> str:
    """Run a real command (nudge or feast from this venv); fail the test with its output."""
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


@dataclass(frozen=True)
class Stack:
    """Simulated data, a Feast repo applied and materialised, and trained models."""

    data: Path
    repo: Path
    models: Path
    as_of: datetime

    @property
    def events(self) -> Path:
        return self.data / "events.parquet"

    @property
    def customers(self) -> Path:
        return self.data / "customers.parquet"


def trained_on(data: Path, root: Path, **options: Any) -> TrainResult:
    """The training pipeline on ``data``'s events and customers, as a user runs it: a copy of
    the feature repo under ``root``, `nudge features`, `feast apply`, then ``train`` (with
    ``options``) into ``root/models``."""
    from training.train import train

    repo = copy_feature_repo(root / "repo")
    events, customers = data / "events.parquet", data / "customers.parquet"
    run_cli(
        str(BIN / "nudge"),
        "features",
        "--events",
        str(events),
        "--customers",
        str(customers),
        "--repo",
        str(repo),
    )
    run_cli(str(BIN / "feast"), "-c", str(repo), "apply")
    return train(
        repo=repo, models_dir=root / "models", events_path=events, customers_path=customers, **options
    )


def materialize(repo: Path) -> None:
    """`feast apply` then `feast materialize-incremental <now>`, as README tells users."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    run_cli(str(BIN / "feast"), "-c", str(repo), "apply")
    run_cli(str(BIN / "feast"), "-c", str(repo), "materialize-incremental", now)


# The stack's draw: 800 customers over 120 days ending at `end` (seed 11).
STACK_CUSTOMERS = 800


STACK_DAYS = 120


STACK_SEED = 11


# A customer the stack always has, whatever the draw: signed up, no events at all.
SIGNED_UP_ONLY = "signed-up-no-events"


def stack_data(out: Path, end: datetime | None = None) -> None:
    """Simulate the stack's events into ``out`` (ending at ``end``, default today's 00:00 UTC)
    and add the customers the tests need explicitly, since a draw may or may not contain them.

    Whether a simulated customer has no events depends on the dates drawn, so the one without
    history is added here: signed up three days before the end, in a zone with DST."""
    argv = [str(BIN / "nudge"), "simulate", "--customers", str(STACK_CUSTOMERS), "--days", str(STACK_DAYS)]
    argv += ["--seed", str(STACK_SEED), "--out", str(out)]
    if end is not None:
        argv += ["--start", f"{end - timedelta(days=STACK_DAYS):%Y-%m-%d}"]
    run_cli(*argv)
    customers = pd.read_parquet(out / "customers.parquet")
    last_event = pd.read_parquet(out / "events.parquet", columns=["event_timestamp"])["event_timestamp"].max()
    silent = pd.DataFrame(
        {
            "customer_id": [SIGNED_UP_ONLY],
            "time_zone": ["Europe/Berlin"],
            "signup_timestamp": [last_event.floor("D") - pd.Timedelta(days=3)],
        }
    )
    pd.concat([customers, silent.astype(customers.dtypes.to_dict())], ignore_index=True).to_parquet(
        out / "customers.parquet", index=False
    )


class ServerProcess:
    """`nudge serve` in a subprocess on a free port, stopped with SIGTERM on exit.

    Output goes to a file (an access log never fills a pipe); readiness means health says
    SERVING *and* every worker has logged it (health answers as soon as the first one does);
    ``credentials`` make the readiness check and ``channel()`` speak TLS."""

    def __init__(
        self,
        stack: Stack,
        *extra: str,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.workers = workers
        self.argv = [str(BIN / "nudge"), "serve", "--repo", str(stack.repo), "--models", str(stack.models)]
        self.argv += ["--port", str(self.port), "--workers", str(workers), *extra]
        if "--tls-cert" not in extra:
            self.argv += ["--plaintext", "true"]  # the server refuses plaintext unless chosen
        self.env = {**os.environ, **(env or {})}
        if log_path is None:
            descriptor, name = tempfile.mkstemp(prefix="nudge-serve-", suffix=".log")
            os.close(descriptor)  # only the name is wanted: the server process opens its own
            log_path = Path(name)
        self.log_path = log_path
        self.credentials = credentials
        self.process: subprocess.Popen[str] | None = None

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        """A new channel (its own connection) to this server."""
        creds = credentials if credentials is not None else self.credentials
        options = [("grpc.use_local_subchannel_pool", 1)]
        if creds is None:
            return grpc.insecure_channel(self.target, options=options)
        return grpc.secure_channel(self.target, creds, options=options)

    def start(self, timeout: float = 90.0) -> ServerProcess:
        with self.log_path.open("w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, text=True, env=self.env
            )
        self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert self.process is not None
        deadline = time.monotonic() + timeout
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"server exited {self.process.returncode}:\n{self.log()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                    if serving and self.log().count("SERVING on") >= self.workers:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"server not SERVING within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """Everything the server has written so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stack_and_live_store(request: pytest.FixtureRequest) -> tuple[Stack, StateStore]:
    """For a fixture parametrised "sqlite"/"redis": that session stack, and the live state store
    its servers write to, opened directly (the caller closes it)."""
    from service.live_stores import LIVE_DB, RedisStateStore, SqliteStateStore
    from service.online.redis_store import redis_client

    stack: Stack = request.getfixturevalue("stack" if request.param == "sqlite" else "redis_stack")
    if request.param == "sqlite":
        return stack, SqliteStateStore(stack.repo / "data" / LIVE_DB, 5.0)
    redis: RedisServer = request.getfixturevalue("redis_server")
    return stack, RedisStateStore(redis_client(redis.address, 5.0))
