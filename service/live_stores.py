"""Where customers' live records are kept: one key per customer, changed by compare-and-set.

Chosen by the Feast repo's online store (:func:`state_store_for`), so the live states sit
with the features they will be served beside:

* Redis, one node or a Redis Cluster: key ``nudge:{<customer_id>}:state``. The braces are a
  hash tag: every key nudge may add per customer lands in the same cluster slot. Compare-and-set
  is one Lua script on the customer's key (GET, compare with what was read, SET if equal): Redis
  runs a script atomically, on one node as on the cluster node owning the key, in one round
  trip. A read pipelines one GET per customer: one round trip per node touched.
* SQLite: a table of nudge's own in its own file beside the online store's (Feast owns its
  file and may rebuild it on ``feast apply``), one ``BEGIN IMMEDIATE`` transaction per
  compare-and-set of a batch: the write lock is taken before the read, so no other writer can interleave.
  WAL mode, so Ingest's commits do not block readers; ``synchronous=FULL``, so a commit is on
  disk when Ingest answers.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from redis.exceptions import AskError, NoScriptError

from service.ingest import Change, IngestUnavailable, StateStore
from service.online.redis_store import REDIS_ERRORS, PackedCommand, RedisClient, client_of

if TYPE_CHECKING:
    from feast import FeatureStore

LIVE_DB = "nudge_live.db"  # the SQLite store's file, in the online store's directory
_SQLITE_PARAMS = 500  # customers per SELECT (SQLite's default limit is 999 parameters)


def redis_key(customer_id: str) -> bytes:
    return b"nudge:{" + customer_id.encode() + b"}:state"


# KEYS[1]: the record's key; ARGV: "1" if a record was read (else "0"), the record read, the new
# one. GET gives false for an absent key.
_COMPARE_AND_SET = b"""
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""
_COMPARE_AND_SET_SHA = hashlib.sha1(_COMPARE_AND_SET).hexdigest()


class RedisStateStore:
    """Live records in Redis, one node or a cluster (see the module docstring)."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._get = PackedCommand(client, b"GET")

    def read(self, customer_ids: Sequence[str]) -> dict[str, bytes]:
        """One GET per customer (not MGET: on a cluster the keys span slots), sent in one write
        per node: one round trip per node touched. Packed by hand on kept connections, as the
        feature reader's HMGETs: every Score on live states makes this read, and redis-py's
        pipeline cost ~100 µs of it (docs/benchmarks.md, "Live states")."""
        keys = [redis_key(customer_id) for customer_id in customer_ids]
        try:
            try:
                values = self._get(keys)
            except AskError:  # MOVED too: a cluster's slot is moving; redis-py follows it
                with client_of(self._client).pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.get(key)
                    values = pipe.execute()
        except REDIS_ERRORS as exc:
            raise IngestUnavailable(f"Redis live state store: {exc}") from exc
        return {cid: value for cid, value in zip(customer_ids, values, strict=True) if value is not None}

    def compare_and_set(self, changes: Sequence[Change]) -> set[str]:
        """One script call per customer, pipelined (one round trip per node touched), by the
        script's SHA1; on a node that does not know it yet, again by its text (which caches it)."""
        if not changes:
            return set()
        calls = [
            (redis_key(cid), b"0" if expected is None else b"1", expected or b"", value)
            for cid, expected, value in changes
        ]
        try:
            client = client_of(self._client)
            with client.pipeline(transaction=False) as pipe:
                for args in calls:
                    pipe.execute_command("EVALSHA", _COMPARE_AND_SET_SHA, 1, *args)
                done = pipe.execute(raise_on_error=False)
            for index, result in enumerate(done):
                if isinstance(result, NoScriptError):
                    done[index] = client.execute_command("EVAL", _COMPARE_AND_SET, 1, *calls[index])
                elif isinstance(result, Exception):
                    raise result
        except REDIS_ERRORS as exc:
            raise IngestUnavailable(f"Redis live state store: {exc}") from exc
        return {cid for (cid, _, _), result in zip(changes, done, strict=True) if result != 1}

    def close(self) -> None:
        self._get.close()
        self._client.close()


class SqliteStateStore:
    """Live records in a SQLite file of nudge's own (see the module docstring).

    One connection, opened with ``check_same_thread=False`` so it may be opened at start-up and
    used on the server's event-loop thread; calls are not concurrent within a process. Other
    processes (workers) have their own connections; a writer holding the lock makes a call wait
    at most ``timeout_s``, then fail with :class:`IngestUnavailable`."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(
                path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._prepare(timeout_s)
        except sqlite3.Error as exc:
            raise IngestUnavailable(f"SQLite live state store {path}: {exc}") from exc

    def _prepare(self, timeout_s: float) -> None:
        """WAL, full sync, the table. Switching a new file to WAL takes an exclusive lock that
        SQLite does not wait for (no busy handler): when several workers open a new file at
        once, the losers get "database is locked" at once. So the preparation is retried until
        ``timeout_s`` (at least a second: it runs once, at start-up), as a writer waits."""
        deadline = time.monotonic() + max(timeout_s, 1.0)
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS live_state "
                    "(customer_id TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID"
                )
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def read(self, customer_ids: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        try:
            for start in range(0, len(customer_ids), _SQLITE_PARAMS):
                chunk = customer_ids[start : start + _SQLITE_PARAMS]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT customer_id, record FROM live_state WHERE customer_id IN ({marks})", chunk
                )
                found.update(rows.fetchall())
        except sqlite3.Error as exc:
            raise IngestUnavailable(f"SQLite live state store {self.path}: {exc}") from exc
        return found

    def compare_and_set(self, changes: Sequence[Change]) -> set[str]:
        """One transaction for the batch: the write lock first, then the records compared,
        the unchanged ones written, one commit (one fsync)."""
        if not changes:
            return set()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = self.read([cid for cid, _, _ in changes])
                writes = [(cid, value) for cid, expected, value in changes if current.get(cid) == expected]
                conn.executemany("INSERT OR REPLACE INTO live_state VALUES (?, ?)", writes)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise IngestUnavailable(f"SQLite live state store {self.path}: {exc}") from exc
        return {cid for cid, expected, _ in changes if current.get(cid) != expected}

    def close(self) -> None:
        self._conn.close()


class UnsupportedStore(RuntimeError):
    """The repo's online store has no live state store yet: Ingest is not served."""


def state_store_for(store: FeatureStore, timeout_s: float) -> StateStore:
    """The live state store beside this repo's online store: Redis (one node or a cluster,
    through the connection string Feast uses) or SQLite (a file next to Feast's)."""
    from service.online.readers import direct_store

    direct = direct_store(store)
    if direct is not None and direct.redis is not None:
        return RedisStateStore(direct.redis_client(timeout_s))
    if direct is not None and direct.sqlite is not None:
        return SqliteStateStore(direct.sqlite.with_name(LIVE_DB), timeout_s)
    online = store.config.online_store
    kind = str(getattr(online, "type", type(online).__name__))
    if getattr(online, "redis_type", None) is not None:
        kind += f" ({online.redis_type.value})"
    raise UnsupportedStore(
        f"no live state store for the online store {kind}: SQLite and Redis (one node or a cluster) "
        "are supported"
    )
