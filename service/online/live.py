"""Features exact at the request's ``now``, from the customers' live states.

Ingest (service/ingest.py) folds every event into a per-customer state; the batch bootstrap
(``nudge features`` + ``nudge load-states``) writes the same states for every customer. Score
reads a customer's state here and finalises it at the request's ``now`` with the contract's
:func:`~nudge.contract.live_state.finalise_many` (what ``finalise``, the function the batch
features are parity-tested against, runs), so a cart add a minute ago, and a day's worth of
ageing since the last snapshot, are both in the answer. Customers without a state fall back to
the snapshot rows Feast materialised (the scorer reads those for them). ScoreBatch reads many
states at once as columns (:meth:`LiveFeatures.read_columns`, the contract's
:func:`~nudge.contract.live_state.finalise_columns`, tested equal to finalise_many to the bit).

An event may be timed up to Ingest's skew ahead of the server clock; a state holding one is
finalised one second after it (such events count as just before ``now``), never raising.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from nudge.contract.features import HISTOGRAMS_VIEW, STATS_VIEW
from nudge.contract.live_record import state_bytes
from nudge.contract.live_state import FEATURE_REFS, LiveColumns, finalise_columns, finalise_many
from service.ingest import IngestUnavailable, StateStore
from service.online.base import CustomerFeatures, FeatureStoreUnavailable


class LiveFeatures:
    """Reads and finalises live states; the state store is shared with Ingest (not closed here)."""

    def __init__(self, states: StateStore) -> None:
        self.states = states
        # The last refs asked about, and whether a live state gives them all (covers).
        self._refs: Sequence[str] | None = None
        self._complete = False

    def read(
        self, customer_ids: Sequence[str], now: datetime, feature_refs: Sequence[str]
    ) -> dict[str, CustomerFeatures]:
        """``feature_refs`` of the customers that have a state, as of ``now`` (one store read).

        Raises:
            FeatureStoreUnavailable: the state store could not be read.
        """
        records = self._records(customer_ids)
        # The finalised dict serves as is when it holds every ref asked for (the server's reader
        # asks for exactly those): a dict of them per customer cost ~3 µs more.
        complete = self.covers(feature_refs)
        finalised = finalise_many([state_bytes(r) for r in records.values()], now, after_newest=True)
        found = {}
        for customer_id, values in zip(records, finalised, strict=True):
            # Exact at ``now``: age 0. The histograms' row exists once the customer engaged,
            # as in the batch tables.
            stamps = {STATS_VIEW: now, HISTOGRAMS_VIEW: None if values[_ENGAGEMENTS] is None else now}
            if not complete:
                values = {ref: values.get(ref) for ref in feature_refs}
            found[customer_id] = CustomerFeatures(customer_id, values, stamps)
        return found

    def covers(self, feature_refs: Sequence[str]) -> bool:
        """Whether a live state gives every one of ``feature_refs``. Checked once per refs (they
        are the reader's, fixed until a model swap), not per call."""
        if feature_refs is not self._refs:
            self._refs, self._complete = feature_refs, FEATURE_REFS.issuperset(feature_refs)
        return self._complete

    def read_columns(self, customer_ids: Sequence[str], now: datetime) -> tuple[dict[str, int], LiveColumns]:
        """:meth:`read` as columns, for many customers (ScoreBatch): the customers that have a
        state, each with its row of their features finalised as of ``now`` (one store read).

        Raises:
            FeatureStoreUnavailable: the state store could not be read.
        """
        records = self._records(customer_ids)
        columns = finalise_columns([state_bytes(r) for r in records.values()], now, after_newest=True)
        return {customer_id: row for row, customer_id in enumerate(records)}, columns

    def _records(self, customer_ids: Sequence[str]) -> dict[str, bytes]:
        try:
            return self.states.read(customer_ids)
        except IngestUnavailable as exc:
            raise FeatureStoreUnavailable(str(exc)) from exc


_ENGAGEMENTS = f"{HISTOGRAMS_VIEW}:hist_event_count"  # None until the customer's first engagement
