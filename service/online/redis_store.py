"""Feast's Redis online store (one node or a Redis Cluster), read in one round trip per node."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from google.protobuf.timestamp_pb2 import Timestamp
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection, ConnectionPool
from redis.crc import key_slot
from redis.exceptions import AskError, RedisClusterException
from redis.retry import Retry

from service.online.base import CustomerFeatures, FeatureStoreUnavailable
from service.online.layout import Layout

REDIS_ERRORS = (redis.RedisError, RedisClusterException)
"""What a Redis call may raise: a cluster's own errors (no node reachable, slot not covered)
are not ``RedisError``s."""


class ClusterClient:
    """A :class:`RedisCluster`, made at its first use and kept.

    Making one connects (it reads the slot map), where a single-node client connects at its
    first command: made lazily, nudge starts while the cluster is down, as it does with one node,
    and uses the cluster once it answers. :meth:`get` raises ``REDIS_ERRORS`` until then."""

    def __init__(self, make: Callable[[], RedisCluster]) -> None:
        self._make = make
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def get(self) -> RedisCluster:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
                client = self._client
        return client

    def refresh(self) -> None:
        """Read the slot map again (after a node failed, it may have moved), if there is one."""
        if self._client is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                self._client.nodes_manager.initialize()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


RedisClient = redis.Redis | ClusterClient
"""What the Redis readers and stores take: one node, or a cluster (see :func:`redis_client`)."""


def client_of(client: RedisClient) -> redis.Redis | RedisCluster:
    """The redis-py client to call (a cluster's is made now if it was not yet)."""
    return client.get() if isinstance(client, ClusterClient) else client


class PackedCommand:
    """One Redis command for many keys (``NAME <key> ARGS...``): one round trip per node.

    Each node's commands go out in one write, all writes before any read, then the replies
    are read: one round trip per node touched, overlapping. The commands are RESP encoded by
    hand from parts built once (only the key changes), on connections kept checked out of each
    node's pool between calls: redis-py's pipeline and pool bookkeeping cost more than the round
    trip itself (docs/benchmarks.md, "Figures behind choices in the code").

    Connections are taken out of small free lists (one per node) for the duration of a call and
    put back after it, so concurrent calls from several threads each use their own. A call that
    fails in any way disconnects its connections (unread replies must not be left on them); the
    next call through them reconnects, so a restarted Redis is used again without restarting
    nudge. Every socket operation (connect, send, each receive) is bounded by the client's
    timeout and there are no retries, so a call against a dead or hung Redis fails within about
    one timeout instead of redis-py's default retries with backoff (seconds).

    On a cluster, keys are routed by redis-py's slot map; a failed call also refreshes the map (a
    failed node's slots may have moved to a replica). ``MOVED`` or ``ASK`` (slots moving between
    nodes) raise ``AskError``: the caller does the call again through redis-py's cluster pipeline,
    which follows the redirections and updates the map, so the next call takes the fast path.
    """

    def __init__(self, client: RedisClient, name: bytes, args: Sequence[bytes] = ()) -> None:
        self._client = client
        # RESP array of bulk strings: NAME <key> ARGS...; the key goes in between.
        self._head = b"*%d\r\n" % (len(args) + 2) + _resp_bulk(name)
        self._tail = b"".join(map(_resp_bulk, args))
        self._free: dict[ConnectionPool, list[Connection]] = {}

    def __call__(self, keys: Sequence[bytes]) -> list[Any]:
        """The reply to the command for each key, in order.

        Raises:
            redis.ConnectionError, redis.TimeoutError, RedisClusterException: Redis unreachable.
            AskError: on a cluster, a key's slot is moving (see the class docstring).
        """
        if not keys:
            return []
        head, tail = self._head, self._tail
        replies: list[Any] = [None] * len(keys)
        taken: list[tuple[ConnectionPool, Connection, list[int]]] = []
        try:
            for pool, indices in self._by_node(keys).items():
                connection = self._take(pool)
                taken.append((pool, connection, indices))
                command = b"".join([head + _resp_bulk(keys[i]) + tail for i in indices])
                # redis-py sends bytes (its own pack_command makes them); its hints say str.
                connection.send_packed_command([command], check_health=False)  # type: ignore[list-item]
            for _, connection, indices in taken:
                for i in indices:
                    replies[i] = connection.read_response()
        except (redis.ConnectionError, redis.TimeoutError, RedisClusterException):
            for _, connection, _ in taken:
                connection.disconnect()
            if isinstance(self._client, ClusterClient):
                self._client.refresh()
            raise
        except BaseException:
            for _, connection, _ in taken:
                connection.disconnect()  # e.g. an error reply (MOVED): the rest were never read
            raise
        finally:
            for pool, connection, _ in taken:
                self._free.setdefault(pool, []).append(connection)
        return replies

    def _by_node(self, keys: Sequence[bytes]) -> dict[ConnectionPool, list[int]]:
        """The keys' indices grouped by the connection pool of the node that owns them."""
        if isinstance(self._client, redis.Redis):
            return {self._client.connection_pool: list(range(len(keys)))}
        cluster = self._client.get()
        owner = cluster.nodes_manager.get_node_from_slot
        groups: dict[ConnectionPool, list[int]] = {}
        for i, key in enumerate(keys):
            node = owner(key_slot(key))  # type: ignore[arg-type]  # types-redis 4.6: slot as str
            pool = cluster.get_redis_connection(node).connection_pool
            groups.setdefault(pool, []).append(i)
        return groups

    def _take(self, pool: ConnectionPool) -> Connection:
        try:
            return self._free[pool].pop()
        except (KeyError, IndexError):
            return pool.get_connection()  # type: ignore[call-arg]  # types-redis 4.6: command_name

    def close(self) -> None:
        """Give the kept connections back to their pools."""
        for pool, connections in self._free.items():
            while connections:
                pool.release(connections.pop())


class RedisFeatureReader:
    """Reads Feast's Redis online store: one round trip per node for all customers.

    Feast keeps all of an entity's features in one hash per entity key (every view's fields and
    ``_ts`` fields), so one ``HMGET`` of exactly the needed fields per customer reads everything,
    on one node or on the cluster node owning the key's slot, sent as a :class:`PackedCommand`
    (its docstring says how connections, failures and cluster redirections are handled).
    """

    def __init__(self, layout: Layout, client: RedisClient) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        self._layout = layout
        self._client = client
        self.feature_refs = layout.feature_refs
        self._key_suffix = layout.project.encode()
        # The features' fields in the layout's flat order, then each view's ``_ts`` field.
        fields = [_mmh3(f"{v.storage_name}:{feature}") for v in layout.views for feature in v.features]
        fields += [f"_ts:{view.storage_name}".encode() for view in layout.views]
        self._fields = fields
        self._feature_count = len(self.feature_refs)
        self._hmget = PackedCommand(client, b"HMGET", fields)

    def read(self, customer_ids: Sequence[str], now: datetime) -> list[CustomerFeatures]:
        """One ``HMGET`` of exactly the needed fields per customer, one round trip per node."""
        if not customer_ids:
            return []
        entity_key, suffix = self._layout.entity_key, self._key_suffix
        keys = [entity_key(customer_id) + suffix for customer_id in customer_ids]
        try:
            replies = self._hmget(keys)
        except AskError:  # MOVED is an AskError too
            if not isinstance(self._client, ClusterClient):
                raise
            replies = self._redirected(self._client, keys)
        except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as exc:
            raise FeatureStoreUnavailable(f"Redis online store: {exc}") from exc
        count = self._feature_count
        return [
            self._layout.assemble(customer_id, reply, [_redis_event_time(b) for b in reply[count:]], now)
            for customer_id, reply in zip(customer_ids, replies, strict=True)
        ]

    def _redirected(self, client: ClusterClient, keys: list[bytes]) -> list[list[bytes | None]]:
        """The read again through redis-py's cluster pipeline (it follows MOVED and ASK)."""
        try:
            with client.get().pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, self._fields)
                replies: list[list[bytes | None]] = pipe.execute()
        except REDIS_ERRORS as exc:
            raise FeatureStoreUnavailable(f"Redis online store: {exc}") from exc
        return replies

    def close(self) -> None:
        self._hmget.close()
        self._client.close()


def _resp_bulk(data: bytes) -> bytes:
    """``data`` as a RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _redis_event_time(blob: bytes | None) -> datetime | None:
    """A view's ``_ts`` field as Feast's Redis store converts it (float seconds, UTC)."""
    if blob is None:
        return None
    ts = Timestamp.FromString(blob)
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1_000_000_000.0, tz=UTC)


UNIX_SCHEME = "unix://"
"""A connection string starting ``unix://`` names a Unix socket: ``unix:///run/redis.sock``."""


def redis_client(connection_string: str, timeout_s: float) -> redis.Redis:
    """A pooled client for Feast's connection string of one node (``host:port,password=..,
    ssl=..,db=..``), or for a Unix socket (``unix:///path/redis.sock`` and the same options).

    Parsed with Feast's own parser so every option Feast accepts means the same here;
    nudge's timeout replaces any ``socket_timeout`` in the string, and there are no retries.
    The socket skips the loopback TCP stack on every round trip when Redis runs on the same
    machine (docs/benchmarks.md); it is nudge's own reader's and live store's: Feast's CLI and
    SDK do not read ``unix://``, so ``feast materialize`` needs a ``host:port`` configuration.
    """
    nodes, options = _parse(connection_string, timeout_s)
    if connection_string.startswith(UNIX_SCHEME):
        path = connection_string.removeprefix(UNIX_SCHEME).split(",", 1)[0]
        return redis.Redis(unix_socket_path=path, retry=Retry(NoBackoff(), 0), **options)
    host, port = nodes[0]["host"], int(nodes[0]["port"])
    return redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), **options)


def cluster_client(connection_string: str, timeout_s: float) -> ClusterClient:
    """A cluster client for Feast's connection string of a cluster (``host:port,host:port,...``
    and the same options, less ``db``), made at first use; the same timeouts, no retries."""
    if connection_string.startswith(UNIX_SCHEME):
        raise ValueError("a Redis Cluster is reached over TCP: list its nodes as host:port, not unix://")
    nodes, options = _parse(connection_string, timeout_s)
    startup = [ClusterNode(node["host"], int(node["port"])) for node in nodes]
    return ClusterClient(lambda: RedisCluster(startup_nodes=startup, retry=Retry(NoBackoff(), 0), **options))


def _parse(connection_string: str, timeout_s: float) -> tuple[list[dict[str, str]], dict[str, Any]]:
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    return nodes, {**params, "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
