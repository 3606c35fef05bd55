"""The requested features resolved once against the registry: views, TTLs, entity-key bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from service.online.base import CustomerFeatures
from service.online.wire import NUMPY_KINDS, PLAIN_KINDS, decode_value

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

_pack_u32 = struct.Struct("<I").pack


@dataclass(frozen=True)
class ViewLayout:
    """What a read needs to know about one feature view, resolved once at start-up."""

    name: str
    storage_name: str  # the name Feast stores under (differs when view versioning is on)
    table_id: str  # its SQLite table
    ttl: timedelta | None  # None: never expires (Feast: no TTL or a TTL of 0)
    features: tuple[str, ...]
    refs: tuple[str, ...]
    kinds: tuple[str, ...]  # Value oneof name per feature, from the registry's dtype
    start: int  # where its features sit in the layout's flat feature order
    stop: int

    def expired(self, event_time: datetime, now: datetime) -> bool:
        """Feast's TTL rule: older than the TTL counts as missing; exactly the TTL does not."""
        return self.ttl is not None and now - event_time > self.ttl


@dataclass(frozen=True)
class Layout:
    """The requested features grouped by view, plus the entity-key layout Feast writes."""

    project: str
    join_key: str
    views: tuple[ViewLayout, ...]
    key_prefix: bytes  # serialised entity key up to the value's length

    @property
    def feature_refs(self) -> tuple[str, ...]:
        return tuple(ref for view in self.views for ref in view.refs)

    def entity_key(self, customer_id: str) -> bytes:
        """Feast's serialised entity key (version 3) for one customer id."""
        value = customer_id.encode()
        return self.key_prefix + _pack_u32(len(value)) + value

    def assemble(
        self,
        customer_id: str,
        blobs: Sequence[bytes | None],
        event_times: Sequence[datetime | None],
        now: datetime,
    ) -> CustomerFeatures:
        """Decode one customer's stored values (``blobs`` in ``feature_refs`` order; an event
        time per view, None when the customer has no row for it) and apply the TTL rule."""
        values: dict[str, object] = {}
        timestamps: dict[str, datetime | None] = {}
        for view, event_time in zip(self.views, event_times, strict=True):
            if event_time is None or view.expired(event_time, now):
                timestamps[view.name] = None
                values.update(dict.fromkeys(view.refs))
            else:
                timestamps[view.name] = event_time
                values.update(zip(view.refs, map(decode_value, blobs[view.start : view.stop]), strict=True))
        return CustomerFeatures(customer_id, values, timestamps)


def feature_service_refs(store: FeatureStore, service_names: Iterable[str]) -> list[str]:
    """The union of the named feature services' refs (``"view:feature"``), first seen first."""
    refs: dict[str, None] = {}
    for name in service_names:
        for projection in store.get_feature_service(name).feature_view_projections:
            refs.update(dict.fromkeys(f"{projection.name}:{field.name}" for field in projection.features))
    return list(refs)


def build_layout(store: FeatureStore, feature_refs: Sequence[str]) -> Layout:
    """Resolve refs against the registry into views, TTLs and the entity-key layout."""
    from feast.types import String

    by_view: dict[str, list[str]] = {}
    for ref in feature_refs:
        view_name, sep, feature = ref.partition(":")
        if not sep or not view_name or not feature:
            raise ValueError(f"feature ref {ref!r} is not 'view:feature'")
        names = by_view.setdefault(view_name, [])
        if feature not in names:
            names.append(feature)
    if not by_view:
        raise ValueError("no feature refs to read")
    versioning = store.config.registry.enable_online_feature_view_versioning
    views: list[ViewLayout] = []
    join_keys = set()
    for view_name, features in by_view.items():
        view = store.get_feature_view(view_name)
        if [field.dtype for field in view.entity_columns] != [String]:
            raise ValueError(f"feature view {view_name!r} is not keyed by one string join key")
        join_keys.add(view.join_keys[0])
        start = views[-1].stop if views else 0
        views.append(_view_layout(store.project, view, features, versioning, start))
    if len(join_keys) != 1:
        raise ValueError(f"feature views use different join keys {sorted(join_keys)}")
    join_key = join_keys.pop()
    layout = Layout(store.project, join_key, tuple(views), _entity_key_prefix(join_key))
    _check_entity_key_layout(layout, store.config.entity_key_serialization_version)
    return layout


def _view_layout(
    project: str, view: FeatureView, features: list[str], versioning: bool, start: int
) -> ViewLayout:
    """One view's part of the layout; refuses features whose type has no faithful decoding."""
    from feast.infra.online_stores.helpers import compute_table_id, compute_versioned_name

    dtypes = {field.name: field.dtype for field in view.features}
    kinds = []
    for feature in features:
        if feature not in dtypes:
            raise ValueError(f"feature view {view.name!r} has no feature {feature!r}")
        kind = dtypes[feature].to_value_type().name.lower() + "_val"
        if kind not in NUMPY_KINDS and kind not in PLAIN_KINDS:
            raise ValueError(f"{view.name}:{feature} has type {dtypes[feature]}, which nudge cannot read")
        kinds.append(kind)
    ttl = view.ttl if view.ttl and view.ttl > timedelta(0) else None
    return ViewLayout(
        name=view.name,
        storage_name=compute_versioned_name(view, versioning),
        table_id=compute_table_id(project, view, versioning),
        ttl=ttl,
        features=tuple(features),
        refs=tuple(f"{view.name}:{feature}" for feature in features),
        kinds=tuple(kinds),
        start=start,
        stop=start + len(features),
    )


def _entity_key_prefix(join_key: str) -> bytes:
    """Serialised entity key (v3) up to the value's length: count, key type, key, value type."""
    key = join_key.encode()
    from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto

    string = ValueTypeProto.STRING
    return _pack_u32(1) + _pack_u32(string) + _pack_u32(len(key)) + key + _pack_u32(string)


def _check_entity_key_layout(layout: Layout, serialization_version: int) -> None:
    """Refuse to start if Feast would serialise entity keys differently from nudge."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    for probe in ("", "c-0001", "ü" * 200):
        feast_key = serialize_entity_key(
            EntityKeyProto(join_keys=[layout.join_key], entity_values=[ValueProto(string_val=probe)]),
            entity_key_serialization_version=serialization_version,
        )
        if feast_key != layout.entity_key(probe):
            raise RuntimeError(
                f"Feast's entity key serialisation (version {serialization_version}) differs from "
                "the layout nudge reads; use the SDK reader (fast=False) or update nudge"
            )
