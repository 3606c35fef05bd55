"""What every online feature reader returns and promises (the scorer depends on this only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

DEFAULT_TIMEOUT_S = 0.05
"""Default bound on each store socket operation (Redis) or lock wait (SQLite), in seconds."""


class FeatureStoreUnavailable(Exception):
    """The online store could not be read in time (down, unreachable, timed out, locked).

    The one exception the caller handles on the request path: it answers cold-start.
    """


@dataclass(frozen=True, slots=True)
class CustomerFeatures:
    """One customer's online features as of a read.

    ``values`` maps every requested feature ref (``"view:feature"``) to its value, or None when
    missing (no row, null value, or the view's row is older than its TTL); it may hold other
    refs too (a live state's features are all finalised at once, service/online/live.py). Scalars are Python
    floats/ints/str/bool, numeric arrays read-only numpy arrays (float32 for ``Array(Float32)``).
    ``event_timestamps`` maps each view to the (UTC) event time of the row its values came from,
    or None when that view's values are missing, so the caller can compute feature age.
    """

    customer_id: str
    values: dict[str, object]
    event_timestamps: dict[str, datetime | None]


class OnlineFeatureReader(Protocol):
    """What the serving path needs from an online feature source."""

    feature_refs: tuple[str, ...]

    def read(self, customer_ids: Sequence[str], now: datetime) -> list[CustomerFeatures]:
        """Features of each customer (same order as ``customer_ids``) as of ``now`` (tz-aware).

        Raises:
            FeatureStoreUnavailable: the store could not be read within the timeout.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
