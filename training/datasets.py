"""Point-in-time training sets from Feast, turned into float32 model inputs.

Features always come from a Feast *feature service* through ``get_historical_features`` (the
same definitions the server reads online), and the input columns are laid out exactly as the
exported manifest will list them: numeric features in service order, arrays expanded to their
width, missing values as NaN (what the server sends for a missing feature). Non-numeric
features in a service (the time zone the send-time policy needs) are not model inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nudge.contract.manifest import FeatureInput

if TYPE_CHECKING:
    from feast import FeatureStore

ROW_ID = "_row_id"


@dataclass(frozen=True)
class TrainingFrame:
    """Entity rows (with their labels) joined to a feature service's features, in entity order."""

    features: tuple[FeatureInput, ...]
    rows: pd.DataFrame  # the entity rows as given, index 0..n-1
    x: np.ndarray  # float32 [n, input_width], NaN = missing


def retrieve(store: FeatureStore, service: str, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of ``entity_rows`` with a feature service; same rows, same order.

    Offline stores may reorder rows and some drop them (Feast's ``file`` store, see DESIGN.md),
    so every row carries an id and a lost or duplicated row is an error, never a silent skip.
    """
    entity_df = entity_rows.reset_index(drop=True).assign(**{ROW_ID: np.arange(len(entity_rows))})
    job = store.get_historical_features(entity_df=entity_df, features=store.get_feature_service(service))
    joined = job.to_df()
    if len(joined) != len(entity_df) or joined[ROW_ID].nunique() != len(entity_df):
        raise RuntimeError(
            f"Feast returned {len(joined)} rows ({joined[ROW_ID].nunique()} distinct) for "
            f"{len(entity_df)} entity rows of {service}: the offline store lost or duplicated rows"
        )
    return joined.sort_values(ROW_ID).drop(columns=ROW_ID).reset_index(drop=True)


def model_inputs(store: FeatureStore, service: str) -> list[tuple[str, bool]]:
    """(ref, is_array) of the service's numeric features, in the order the service lists them.

    Types come from the registry, so an array feature is recognised even when no training
    row has a value for it; strings and other non-numeric features are left out.
    """
    from feast.value_type import ValueType

    scalars = {ValueType.INT32, ValueType.INT64, ValueType.FLOAT, ValueType.DOUBLE, ValueType.BOOL}
    arrays = {ValueType.INT32_LIST, ValueType.INT64_LIST, ValueType.FLOAT_LIST, ValueType.DOUBLE_LIST}
    inputs = []
    for projection in store.get_feature_service(service).feature_view_projections:
        for feature in projection.features:
            kind = feature.dtype.to_value_type()
            if kind in scalars or kind in arrays:
                inputs.append((f"{projection.name_to_use()}:{feature.name}", kind in arrays))
    if not inputs:
        raise ValueError(f"feature service {service} has no numeric features")
    return inputs


def feature_matrix(
    joined: pd.DataFrame, inputs: list[tuple[str, bool]]
) -> tuple[np.ndarray, tuple[FeatureInput, ...]]:
    """Float32 input matrix and its layout (``FeatureInput`` per feature) from a joined frame.

    An array feature's width is read from the data and must be the same in every row; a row
    without it (no feature row yet, or expired by TTL) gets NaN in all its columns.
    """
    blocks = []
    for ref, is_array in inputs:
        values = joined[ref.split(":", 1)[1]]
        blocks.append(_array_block(values, ref) if is_array else _scalar_block(values))
    layout = tuple(FeatureInput(ref, block.shape[1]) for (ref, _), block in zip(inputs, blocks, strict=True))
    return np.hstack(blocks).astype(np.float32), layout


def _scalar_block(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values).to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)


def _array_block(values: pd.Series, ref: str) -> np.ndarray:
    present = [v for v in values if isinstance(v, list | tuple | np.ndarray)]  # else missing (None/NaN)
    widths = {len(v) for v in present}
    if len(widths) != 1:
        problem = "no row has a value" if not widths else f"arrays of lengths {sorted(widths)}"
        raise ValueError(f"{ref}: cannot lay out an array feature: {problem}")
    block = np.full((len(values), widths.pop()), np.nan, dtype=np.float32)
    for i, v in enumerate(values):
        if isinstance(v, list | tuple | np.ndarray):
            block[i] = np.asarray(v, dtype=np.float32)
    return block


def training_frame(store: FeatureStore, service: str, entity_rows: pd.DataFrame) -> TrainingFrame:
    """Entity rows → features as of each row's timestamp → float32 inputs in manifest order."""
    joined = retrieve(store, service, entity_rows)
    x, layout = feature_matrix(joined, model_inputs(store, service))
    return TrainingFrame(layout, entity_rows.reset_index(drop=True), x)
