"""Feast's SQLite online store, read with one prepared query."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from service.online.base import CustomerFeatures, FeatureStoreUnavailable
from service.online.layout import Layout


class SqliteFeatureReader:
    """Reads Feast's SQLite online store with one prepared query for all customers.

    The connection is opened once, read-only, with ``check_same_thread=False`` so it may be
    opened in one thread and used in the server's event-loop thread; calls are not meant to
    be concurrent (see the package docstring, service/online). A writer holding the database lock (e.g. a
    ``feast materialize`` in progress) makes a read wait at most ``timeout_s``, then raise
    :class:`FeatureStoreUnavailable`.
    """

    def __init__(self, layout: Layout, db_path: Path, timeout_s: float) -> None:
        self._layout = layout
        self.feature_refs = layout.feature_refs
        self._tables = [view.table_id for view in layout.views]
        # Per view (the query's first column): feature name -> index in the flat feature order.
        self._slots = [{f: view.start + i for i, f in enumerate(view.features)} for view in layout.views]
        self._absent: tuple[list[bytes | None], list[int | None]] = ([], [None] * len(layout.views))
        self._sql_by_count: dict[int, str] = {}
        self._conn = sqlite3.connect(
            f"{db_path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=timeout_s,
            check_same_thread=False,
            cached_statements=256,
        )
        for table in self._tables:  # fail at start-up, not per request, if `feast apply` never ran
            self._conn.execute(f"SELECT 1 FROM {_quote(table)} LIMIT 0")

    def read(self, customer_ids: Sequence[str], now: datetime) -> list[CustomerFeatures]:
        keys = [self._layout.entity_key(customer_id) for customer_id in customer_ids]
        try:
            rows = self._conn.execute(self._sql(len(keys)), keys * len(self._tables)).fetchall()
        except sqlite3.OperationalError as exc:
            raise FeatureStoreUnavailable(f"SQLite online store: {exc}") from exc
        found = self._group(rows)
        out = []
        for customer_id, key in zip(customer_ids, keys, strict=True):
            blobs, seconds = found.get(key, self._absent)
            event_times = [None if s is None else _sqlite_event_time(s) for s in seconds]
            out.append(self._layout.assemble(customer_id, blobs, event_times, now))
        return out

    def _sql(self, count: int) -> str:
        """One ``UNION ALL`` over the views' tables for ``count`` keys (cached per count)."""
        sql = self._sql_by_count.get(count)
        if sql is None:
            marks = ",".join("?" * count)
            sql = " UNION ALL ".join(
                f"SELECT {i}, entity_key, feature_name, value, event_ts FROM {_quote(table)} "
                f"WHERE entity_key IN ({marks})"
                for i, table in enumerate(self._tables)
            )
            self._sql_by_count[count] = sql
        return sql

    def _group(
        self, rows: list[tuple[int, bytes, str, bytes, int]]
    ) -> dict[bytes, tuple[list[bytes | None], list[int | None]]]:
        """Rows → per entity key: (value blobs in flat feature order, event_ts per view).

        Like Feast's SQLite reader, a view's event time is that of its last row read: Feast
        writes all of a view's features of an entity together, with one timestamp.
        """
        found: dict[bytes, tuple[list[bytes | None], list[int | None]]] = {}
        feature_count = len(self.feature_refs)
        for view_index, key, feature_name, value, event_ts in rows:
            slot = self._slots[view_index].get(feature_name)
            if slot is None:
                continue
            entry = found.get(key)
            if entry is None:
                entry = found[key] = ([None] * feature_count, [None] * len(self._slots))
            entry[0][slot] = value
            entry[1][view_index] = event_ts
        return found

    def close(self) -> None:
        self._conn.close()


def _sqlite_event_time(seconds: int) -> datetime:
    """``event_ts`` as Feast's SQLite store reads it back.

    Feast writes ``int(naive_utc.timestamp())`` (Python reads the naive time as *local*) and
    reads ``datetime.fromtimestamp(value)`` (local again) labelled UTC: the round trip gives
    the UTC wall time whatever the process time zone, so nudge does exactly the same.
    """
    return datetime.fromtimestamp(seconds).replace(tzinfo=UTC)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
