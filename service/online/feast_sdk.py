"""Feast's own SDK behind the reader interface: the reference and the fallback."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis
from google.protobuf.timestamp_pb2 import Timestamp

from service.online.base import CustomerFeatures, FeatureStoreUnavailable
from service.online.layout import Layout
from service.online.wire import python_value

if TYPE_CHECKING:
    from feast import FeatureStore


class FeastSdkReader:
    """The same interface over Feast's own ``get_online_features(...).to_dict()``.

    The reference the fast readers are tested against, and the fallback for online stores
    nudge does not read directly. It applies nudge's TTL rule on top of the SDK (which does
    not). Its store calls use Feast's own client settings: with Redis, redis-py's default
    retries can block for seconds when Redis is down.
    """

    def __init__(self, store: FeatureStore, layout: Layout) -> None:
        self._store = store
        self._layout = layout
        self.feature_refs = layout.feature_refs
        self._kinds = {
            ref: kind for view in layout.views for ref, kind in zip(view.refs, view.kinds, strict=True)
        }

    def read(self, customer_ids: Sequence[str], now: datetime) -> list[CustomerFeatures]:
        if not customer_ids:  # Feast fails on an empty entity list
            return []
        try:
            response = self._store.get_online_features(
                features=list(self.feature_refs),
                entity_rows=[{self._layout.join_key: customer_id} for customer_id in customer_ids],
                full_feature_names=True,
            )
        except (redis.ConnectionError, redis.TimeoutError, sqlite3.OperationalError) as exc:
            raise FeatureStoreUnavailable(f"Feast online store: {exc}") from exc
        columns = response.to_dict()
        names = list(response.proto.metadata.feature_names.val)
        # Every feature of a view carries the view's event time; take the first one's.
        view_times = [
            [
                _sdk_event_time(ts)
                for ts in response.proto.results[
                    names.index(f"{view.name}__{view.features[0]}")
                ].event_timestamps
            ]
            for view in self._layout.views
        ]
        return [
            self._customer(customer_id, row, columns, view_times, now)
            for row, customer_id in enumerate(customer_ids)
        ]

    def _customer(
        self,
        customer_id: str,
        row: int,
        columns: dict[str, list[object]],
        view_times: list[list[datetime | None]],
        now: datetime,
    ) -> CustomerFeatures:
        """One row of the SDK's columns, converted and with the TTL rule applied."""
        values: dict[str, object] = {}
        timestamps: dict[str, datetime | None] = {}
        for view, times in zip(self._layout.views, view_times, strict=True):
            event_time = times[row]
            if event_time is not None and view.expired(event_time, now):
                event_time = None
            timestamps[view.name] = event_time
            for ref, feature in zip(view.refs, view.features, strict=True):
                value = columns[f"{view.name}__{feature}"][row]
                keep = event_time is not None and value is not None
                values[ref] = python_value(value, self._kinds[ref]) if keep else None
        return CustomerFeatures(customer_id, values, timestamps)

    def close(self) -> None:
        """Nothing to release: the FeatureStore belongs to the caller."""


def _sdk_event_time(ts: Timestamp) -> datetime | None:
    """The SDK's per-row event time; an unset (zero) timestamp means no row."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)
