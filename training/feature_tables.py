"""The feature tables' columns, read from the Feast repo's definitions: the only feature list.

``nudge features`` writes one parquet table per feature view it feeds. Which columns each
table has, in which order and of which type, is what the repo's feature view declares: the
pipeline computes every feature it knows, writes the ones the view names, and refuses a view
feature it has no computation for. Adding a feature is then one definition in
``feature_repo/`` plus its computation in ``training/features.py``, and removing one is one
line in ``feature_repo/``.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from nudge.inputs import UserError

TIMESTAMP = pa.timestamp("us", tz="UTC")
KEYS = (("customer_id", pa.string()), ("event_timestamp", TIMESTAMP))


def is_snapshot(times: pd.Series) -> pd.Series:
    """Which rows of a feature table are snapshots: theirs are whole seconds; the rows just
    before engagements (training/features.py, ``_engagement_rows``) never are."""
    return pd.to_datetime(times, utc=True).dt.microsecond == 0


@dataclass(frozen=True)
class FeatureTables:
    """One Arrow schema per feature view the pipeline writes: the keys, then the view's fields."""

    stats: pa.Schema
    histograms: pa.Schema

    @staticmethod
    def features(schema: pa.Schema) -> tuple[str, ...]:
        """A table's feature columns (everything after the keys), in the view's order."""
        return tuple(schema.names[len(KEYS) :])


@functools.cache
def feature_tables(repo: Path, stats_view: str, histograms_view: str) -> FeatureTables:
    """The schemas of the two views, from the ``*.py`` definitions in ``repo`` (as Feast reads
    them; loading them imports Feast). Cached: the definitions do not change within a run."""
    views = _feature_views(repo.resolve())
    missing = [name for name in (stats_view, histograms_view) if name not in views]
    if missing:
        raise UserError(
            f"{repo}: no feature view named {', '.join(missing)} in its definitions; "
            "nudge features writes the tables of these views"
        )
    return FeatureTables(_schema(views[stats_view]), _schema(views[histograms_view]))


def _feature_views(repo: Path) -> dict[str, Any]:
    from feast import FeatureView

    views: dict[str, Any] = {}
    for path in sorted(repo.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_nudge_feature_repo_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        views |= {v.name: v for v in vars(module).values() if isinstance(v, FeatureView)}
    return views


def _schema(view: Any) -> pa.Schema:
    """Keys, then each of the view's fields as the Arrow type Feast reads it from parquet."""
    from feast.types import Array, Float32, String

    arrow = {Float32: pa.float32(), String: pa.string(), Array(Float32): pa.list_(pa.float32())}
    fields = []
    for field in view.features:
        if field.dtype not in arrow:
            raise UserError(
                f"feature view {view.name}: {field.name} has type {field.dtype}, which nudge features cannot write"
            )
        fields.append((field.name, arrow[field.dtype]))
    return pa.schema([*KEYS, *fields])
