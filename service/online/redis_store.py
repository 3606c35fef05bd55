"""Feast's Redis online store, read in one hand-packed round trip."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import redis
from google.protobuf.timestamp_pb2 import Timestamp
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.online.base import CustomerFeatures, FeatureStoreUnavailable
from service.online.layout import Layout


class RedisFeatureReader:
    """Reads Feast's Redis online store: one round trip for all customers.

    A read sends one ``HMGET`` of exactly the needed fields per customer, all in one write,
    then reads the replies. The command is RESP encoded by hand from parts built once (only the
    key changes per customer), on a connection the reader keeps checked out of the client's
    pool between reads: redis-py's pipeline and pool bookkeeping cost more than the round trip
    itself (docs/benchmarks.md, "Figures behind choices in the code").

    The connection is taken out of a small free list for the duration of a read and put back
    after it, so concurrent reads from several threads each use their own connection. A read
    that fails in any way disconnects its connection (unread replies must not be left on it);
    the next read through it reconnects, so a restarted Redis is used again without restarting
    nudge. Every socket operation (connect, send, each receive) is bounded by ``timeout_s`` and
    there are no retries, so a read against a dead or hung Redis fails within about one timeout
    instead of redis-py's default retries with backoff (seconds).
    """

    def __init__(self, layout: Layout, client: redis.Redis) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        self._layout = layout
        self._client = client
        self.feature_refs = layout.feature_refs
        self._key_suffix = layout.project.encode()
        # The features' fields in the layout's flat order, then each view's ``_ts`` field.
        fields = [_mmh3(f"{v.storage_name}:{feature}") for v in layout.views for feature in v.features]
        fields += [f"_ts:{view.storage_name}".encode() for view in layout.views]
        self._feature_count = len(self.feature_refs)
        # RESP array of bulk strings: HMGET <key> <field>...; the key goes in between.
        self._command_head = b"*%d\r\n" % (len(fields) + 2) + _resp_bulk(b"HMGET")
        self._command_tail = b"".join(map(_resp_bulk, fields))
        self._free: list[redis.connection.AbstractConnection] = []

    def read(self, customer_ids: Sequence[str], now: datetime) -> list[CustomerFeatures]:
        """One ``HMGET`` of exactly the needed fields per customer, all in one round trip."""
        if not customer_ids:
            return []
        entity_key, suffix = self._layout.entity_key, self._key_suffix
        head, tail = self._command_head, self._command_tail
        command = b"".join(
            [head + _resp_bulk(entity_key(customer_id) + suffix) + tail for customer_id in customer_ids]
        )
        replies = self._round_trip(command, len(customer_ids))
        count = self._feature_count
        return [
            self._layout.assemble(customer_id, reply, [_redis_event_time(b) for b in reply[count:]], now)
            for customer_id, reply in zip(customer_ids, replies, strict=True)
        ]

    def _round_trip(self, command: bytes, replies: int) -> list[list[bytes | None]]:
        """Send the packed commands and read their replies on a connection of our own."""
        try:
            connection = self._free.pop() if self._free else self._client.connection_pool.get_connection()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise FeatureStoreUnavailable(f"Redis online store: {exc}") from exc
        try:
            # redis-py sends bytes (its own pack_command makes them); types-redis says str.
            connection.send_packed_command([command], check_health=False)  # type: ignore[list-item]
            return [connection.read_response() for _ in range(replies)]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            connection.disconnect()
            raise FeatureStoreUnavailable(f"Redis online store: {exc}") from exc
        except BaseException:
            connection.disconnect()  # e.g. a Redis error reply: the rest were never read
            raise
        finally:
            self._free.append(connection)

    def close(self) -> None:
        while self._free:
            self._client.connection_pool.release(self._free.pop())
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


def redis_client(connection_string: str, timeout_s: float) -> redis.Redis:
    """A pooled client for Feast's connection string (``host:port,password=..,ssl=..,db=..``).

    Parsed with Feast's own parser so every option Feast accepts means the same here;
    nudge's timeout replaces any ``socket_timeout`` in the string.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    options = {
        **params,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    return redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **options)
