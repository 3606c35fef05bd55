"""Customers' features as columns: what the column-wise scorer reads (service/scorer.py).

The online readers answer one :class:`~service.online.base.CustomerFeatures` per customer (a
dict); ``nudge score-audience`` and the Spark engine hold Arrow record batches of joined rows.
Both become a :class:`FeatureColumns`, from which the model matrices are filled a column at a
time and the policy's inputs taken as arrays, so nothing downstream loops over customers.

A record batch of joined rows (:func:`FeatureColumns.from_arrow`) has a ``customer_id``
column, each feature under its ref (``"view:feature"``; nulls where the view has no row, or
the row is past its TTL) and, per view, the event time of the row its values came from under
``"view:event_timestamp"`` (:func:`timestamp_column`; null where none).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from nudge.contract.features import HISTOGRAMS_VIEW
from nudge.contract.live_state import HISTOGRAM_COLUMNS, NUMBER_REFS, LiveColumns
from service.online.base import CustomerFeatures
from service.policy import to_us

if TYPE_CHECKING:  # pyarrow only where batches are read: the server's processes never load it (~36 MB)
    import pyarrow as pa

MISSING_US = np.iinfo(np.int64).min  # an event time that is not there


def timestamp_column(view: str) -> str:
    """The column of a joined record batch holding a view's row's event time."""
    return f"{view}:event_timestamp"


@dataclass(frozen=True)
class FeatureKinds:
    """Which refs are read as what: numeric arrays (ref → width), strings, and numbers (the
    rest); and the views whose event times decide the features' status. Fixed per model set."""

    scalars: tuple[str, ...]
    arrays: tuple[tuple[str, int], ...]
    strings: tuple[str, ...]
    views: tuple[str, ...]

    @classmethod
    def of(cls, refs: Iterable[str], arrays: dict[str, int], strings: Iterable[str]) -> FeatureKinds:
        refs = list(dict.fromkeys(refs))
        text = tuple(r for r in refs if r in set(strings))
        wide = tuple((r, arrays[r]) for r in refs if r in arrays)
        numbers = tuple(r for r in refs if r not in arrays and r not in text)
        views = tuple(dict.fromkeys(r.partition(":")[0] for r in refs))
        return cls(numbers, wide, text, views)

    @functools.cached_property
    def live_numbers(self) -> list[int]:
        """Where each of ``scalars`` is among a live state's numbers (LiveColumns.numbers);
        ValueError for one a live state does not give."""
        return [NUMBER_REFS.index(ref) for ref in self.scalars]

    @functools.cached_property
    def numbers_of(self) -> Callable[[Mapping[str, object]], tuple[object, ...]]:
        """A row's ``scalars`` values, in one C call where there are several (``itemgetter``;
        made once per kinds); KeyError when the row lacks one."""
        if len(self.scalars) > 1:
            return operator.itemgetter(*self.scalars)
        return lambda values: tuple(values[ref] for ref in self.scalars)


@dataclass(frozen=True)
class FeatureColumns:
    """n customers' features: ``scalars[:, j]`` is ref ``kinds.scalars[j]`` as float64 (NaN when
    missing), ``arrays[ref]`` float32 [n, width] (NaN rows when missing), ``strings[ref]`` a
    list (None when missing), ``stamps[view]`` each row's event time in µs (MISSING_US when the
    view has no row), ``available`` False for customers whose store could not be read."""

    kinds: FeatureKinds
    scalars: npt.NDArray[np.float64]
    arrays: dict[str, npt.NDArray[np.float32]]
    strings: dict[str, list[str | None]]
    stamps: dict[str, npt.NDArray[np.int64]]
    available: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.available)

    def scalar(self, ref: str) -> npt.NDArray[np.float64]:
        """One numeric feature's column."""
        return self.scalars[:, self.kinds.scalars.index(ref)]

    def matrix(self, refs: Sequence[str]) -> npt.NDArray[np.float64]:
        """Numeric features' columns side by side, [n, len(refs)]."""
        index = self.kinds.scalars.index
        return self.scalars[:, [index(ref) for ref in refs]]

    @classmethod
    def from_features(cls, kinds: FeatureKinds, found: Sequence[CustomerFeatures | None]) -> FeatureColumns:
        """The readers' answers (None: the store was down, cold start) as columns.

        ScoreBatch runs this on every call: each row's numbers come out in one C call
        (``itemgetter``; a reader's row holds every ref it was asked for), and a row's event
        time is converted once per distinct time (a batch's live rows share one: ``now``)."""
        n = len(found)
        rows = [f.values if f is not None else {} for f in found]
        numbers_of = kinds.numbers_of
        table = []
        for values in rows:
            try:
                table.append(numbers_of(values))
            except KeyError:  # a row without some ref (a cold start has none): None, missing
                table.append(tuple(values.get(ref) for ref in kinds.scalars))
        scalars = np.array(table, dtype=np.float64)
        arrays = {}
        for ref, width in kinds.arrays:
            column = np.full((n, width), np.nan, dtype=np.float32)
            for i, values in enumerate(rows):
                value = values.get(ref)
                if value is not None:
                    column[i] = np.asarray(value)
            arrays[ref] = column
        strings = {
            ref: [s if isinstance(s := v.get(ref), str) else None for v in rows] for ref in kinds.strings
        }
        converted: dict[object, int] = {None: MISSING_US}
        stamps = {}
        for view in kinds.views:
            column_us = []
            for f in found:
                t = f.event_timestamps.get(view) if f is not None else None
                us = converted.get(t)
                if us is None:
                    us = converted[t] = to_us(cast(datetime, t), view)
                column_us.append(us)
            stamps[view] = np.array(column_us, dtype=np.int64)
        available = np.array([f is not None for f in found], dtype=np.bool_)
        return cls(kinds, scalars.reshape(n, len(kinds.scalars)), arrays, strings, stamps, available)

    @classmethod
    def from_live(
        cls, kinds: FeatureKinds, live: LiveColumns, rows: Sequence[int], now_us: int
    ) -> FeatureColumns:
        """Rows ``rows`` of live states' columns finalised at ``now_us`` (LiveFeatures.
        read_columns): what :meth:`from_features` makes of the same states' dicts (LiveFeatures.
        read: stamped ``now``, the histograms' view only once engaged), without a dict per
        customer. Every ref of ``kinds`` must be one a live state gives (FEATURE_REFS)."""
        take = np.asarray(rows, dtype=np.intp)
        engaged = live.engaged[take]
        arrays = {}
        for ref, _ in kinds.arrays:
            start, stop = HISTOGRAM_COLUMNS[ref]
            column = live.histograms[take, start:stop]  # a copy: fancy indexing
            column[~engaged] = np.nan
            arrays[ref] = column
        zones: list[str | None] = [live.time_zones[row] for row in rows]
        stamps = {
            view: np.where(engaged, now_us, MISSING_US)
            if view == HISTOGRAMS_VIEW
            else np.full(len(take), now_us)
            for view in kinds.views
        }
        return cls(
            kinds,
            live.numbers[take][:, kinds.live_numbers],
            arrays,
            dict.fromkeys(kinds.strings, zones),  # the time zone: the one text a state gives
            stamps,
            np.ones(len(take), dtype=np.bool_),
        )

    @classmethod
    def gather(
        cls, kinds: FeatureKinds, n: int, parts: Sequence[tuple[Sequence[int], FeatureColumns]]
    ) -> FeatureColumns:
        """n customers' columns from ``parts``, each (the rows it fills, its columns); a row no
        part fills is a customer whose store was not read (as from_features' None)."""
        if len(parts) == 1 and list(parts[0][0]) == list(range(n)):
            return parts[0][1]
        scalars = np.full((n, len(kinds.scalars)), np.nan)
        arrays = {ref: np.full((n, width), np.nan, dtype=np.float32) for ref, width in kinds.arrays}
        strings: dict[str, list[str | None]] = {ref: [None] * n for ref in kinds.strings}
        stamps = {view: np.full(n, MISSING_US) for view in kinds.views}
        available = np.zeros(n, dtype=np.bool_)
        for rows, part in parts:
            at = np.asarray(rows, dtype=np.intp)
            scalars[at] = part.scalars
            for ref, column in arrays.items():
                column[at] = part.arrays[ref]
            for ref, texts in strings.items():
                for row, text in zip(rows, part.strings[ref], strict=True):
                    texts[row] = text
            for view, stamp in stamps.items():
                stamp[at] = part.stamps[view]
            available[at] = part.available
        return cls(kinds, scalars, arrays, strings, stamps, available)

    @classmethod
    def from_arrow(cls, kinds: FeatureKinds, batch: pa.RecordBatch) -> FeatureColumns:
        """A record batch of joined rows (module docstring) as columns. Raises ValueError naming
        a column that is missing or holds an array of the wrong length."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        names = set(batch.schema.names)
        wanted = [*kinds.scalars, *(r for r, _ in kinds.arrays), *kinds.strings]
        missing = [c for c in [*wanted, *map(timestamp_column, kinds.views)] if c not in names]
        if missing:
            raise ValueError(f"the feature rows lack the columns {', '.join(missing)}")
        scalars = np.empty((n, len(kinds.scalars)), dtype=np.float64)
        for j, ref in enumerate(kinds.scalars):
            scalars[:, j] = _numbers(batch.column(ref))
        arrays = {ref: _fixed_width(batch.column(ref), ref, width) for ref, width in kinds.arrays}
        strings = {ref: batch.column(ref).cast(pa.string()).to_pylist() for ref in kinds.strings}
        stamps = {}
        for view in kinds.views:
            column = batch.column(timestamp_column(view)).cast(pa.timestamp("us", tz="UTC"))
            stamps[view] = pc.fill_null(column.cast(pa.int64()), MISSING_US).to_numpy()
        return cls(kinds, scalars, arrays, strings, stamps, np.ones(n, dtype=np.bool_))


def _numbers(column: pa.Array) -> npt.NDArray[np.float64]:
    """A numeric column as float64, NaN where null."""
    import pyarrow as pa

    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _fixed_width(column: pa.Array, ref: str, width: int) -> npt.NDArray[np.float32]:
    """A list column as float32 [n, width], NaN rows where null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = np.full((len(column), width), np.nan, dtype=np.float32)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if not valid.any():
        return out
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if np.any(lengths[valid] != width):
        raise ValueError(
            f"{ref}: an array of {int(lengths[valid][lengths[valid] != width][0])} values, not {width}"
        )
    values = column.flatten().cast(pa.float32()).to_numpy(zero_copy_only=False)
    out[valid] = values.reshape(-1, width)
    return out
