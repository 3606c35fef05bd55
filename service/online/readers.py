"""Which reader serves this store: built once at start-up and at every hot swap."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.online.base import DEFAULT_TIMEOUT_S, OnlineFeatureReader
from service.online.feast_sdk import FeastSdkReader
from service.online.layout import build_layout
from service.online.redis_store import RedisClient, RedisFeatureReader, cluster_client, redis_client
from service.online.sqlite_store import SqliteFeatureReader

if TYPE_CHECKING:
    from feast import FeatureStore

    from service.config import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectStore:
    """Where the repo's online store keeps its rows when nudge reads them itself: Redis, one
    node or a cluster (Feast's connection string, ``cluster`` saying which), or a SQLite file.
    Sentinel and other stores have none (the SDK reader serves them; Ingest is not served)."""

    redis: str | None = None
    cluster: bool = False
    sqlite: Path | None = None

    def redis_client(self, timeout_s: float) -> RedisClient:
        """A client for the Redis store (call only when ``redis`` is set)."""
        assert self.redis is not None
        if self.cluster:
            return cluster_client(self.redis, timeout_s)
        return redis_client(self.redis, timeout_s)


def direct_store(store: FeatureStore) -> DirectStore | None:
    """The online store nudge can reach directly, from the repo's config (once, at start-up)."""
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig

    online = store.config.online_store
    if isinstance(online, RedisOnlineStoreConfig) and online.redis_type in (
        RedisType.redis,
        RedisType.redis_cluster,
    ):
        return DirectStore(
            redis=online.connection_string, cluster=online.redis_type == RedisType.redis_cluster
        )
    if isinstance(online, SqliteOnlineStoreConfig):
        return DirectStore(sqlite=Path(SqliteOnlineStore._get_db_path(store.config)))
    return None


def build_reader(
    store: FeatureStore,
    feature_refs: Sequence[str],
    fast: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> OnlineFeatureReader:
    """The reader for this store: a direct Redis (one node or a cluster) or SQLite reader when
    possible, else the SDK's.

    ``fast=False`` forces the SDK reader.
    """
    layout = build_layout(store, feature_refs)
    direct = direct_store(store) if fast else None
    reader: OnlineFeatureReader
    if direct is not None and direct.redis is not None:
        reader = RedisFeatureReader(layout, direct.redis_client(timeout_s))
    elif direct is not None and direct.sqlite is not None:
        reader = SqliteFeatureReader(layout, direct.sqlite, timeout_s)
    else:
        reader = FeastSdkReader(store, layout)
    logger.info("online features: %s for %d features", type(reader).__name__, len(layout.feature_refs))
    return reader


def reader_for(store: FeatureStore, feature_refs: Sequence[str], settings: Settings) -> OnlineFeatureReader:
    """:func:`build_reader` as the server configures it (start-up and hot swap alike)."""
    return build_reader(
        store, feature_refs, fast=settings.fast_features, timeout_s=settings.store_timeout_ms / 1000
    )
