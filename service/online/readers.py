"""Which reader serves this store: built once at start-up and at every hot swap."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service.online.base import DEFAULT_TIMEOUT_S, OnlineFeatureReader
from service.online.feast_sdk import FeastSdkReader
from service.online.layout import build_layout
from service.online.redis_store import RedisFeatureReader, redis_client
from service.online.sqlite_store import SqliteFeatureReader

if TYPE_CHECKING:
    from feast import FeatureStore

    from service.config import Settings

logger = logging.getLogger(__name__)


def build_reader(
    store: FeatureStore,
    feature_refs: Sequence[str],
    fast: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> OnlineFeatureReader:
    """The reader for this store: a direct Redis/SQLite reader when possible, else the SDK's.

    ``fast=False`` forces the SDK reader. Redis Cluster and Sentinel, and any other online
    store type, are served by the SDK reader.
    """
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig

    layout = build_layout(store, feature_refs)
    config = store.config
    online = config.online_store
    reader: OnlineFeatureReader
    if fast and isinstance(online, RedisOnlineStoreConfig) and online.redis_type == RedisType.redis:
        reader = RedisFeatureReader(layout, redis_client(online.connection_string, timeout_s))
    elif fast and isinstance(online, SqliteOnlineStoreConfig):
        reader = SqliteFeatureReader(layout, Path(SqliteOnlineStore._get_db_path(config)), timeout_s)
    else:
        reader = FeastSdkReader(store, layout)
    logger.info("online features: %s for %d features", type(reader).__name__, len(layout.feature_refs))
    return reader


def reader_for(store: FeatureStore, feature_refs: Sequence[str], settings: Settings) -> OnlineFeatureReader:
    """:func:`build_reader` as the server configures it (start-up and hot swap alike)."""
    return build_reader(
        store, feature_refs, fast=settings.fast_features, timeout_s=settings.store_timeout_ms / 1000
    )
