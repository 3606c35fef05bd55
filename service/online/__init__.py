"""Online feature reads for the request path, straight from Feast's online store.

Modules: ``base`` (what a reader returns and promises), ``layout`` (the registry resolved once
at start-up: views, TTLs, entity keys), ``wire`` (Feast's ``Value`` wire format), one reader per
store (``redis_store``, ``sqlite_store``, ``feast_sdk``), ``readers`` (which one to build), and
``live`` (features exact at the request time, from the live states Ingest keeps).

Feast's ``get_online_features(...).to_dict()`` spends most of its time outside the store read
(registry look-ups, entity-key protos, response protos, type conversion). nudge reads the same
data Feast wrote, without that per-request work:

* At start-up, :func:`build_reader` derives everything once from the store's registry and
  config: the feature views and their TTLs, the storage names, Feast's entity-key
  serialisation (checked byte for byte against Feast's own function), the Redis hash field
  names, the SQLite tables.
* Per call, :meth:`OnlineFeatureReader.read` does one store round trip for all customers
  (Redis: one ``HMGET`` per customer, all sent in one write; SQLite: one prepared query) and
  decodes Feast's ``Value`` protos itself.

The storage layouts mirrored here are Feast 0.67's (``feast/infra/online_stores/redis.py``,
``sqlite.py``, ``helpers.py``, ``key_encoding_utils.py``):

* Entity key (serialisation version 3), one string join key ``k`` with value ``v``:
  ``u32(1) u32(STRING) u32(len k) k u32(STRING) u32(len v) v``, little-endian.
* Redis: one hash per entity, key = entity key + project name; all views of that entity share
  it. Field of feature ``f`` of view ``fv``: the 4 little-endian bytes of unsigned
  murmur3-32 of ``"fv:f"``; the view's event time: field ``_ts:fv`` holding a serialised
  ``google.protobuf.Timestamp``.
* SQLite: table ``<project>_<view>``, one row per (entity_key, feature_name) with the
  serialised ``Value`` in ``value`` and the event time in ``event_ts``.

TTL: Feast 0.67's ``get_online_features`` does not apply a view's TTL online (only the
opt-in ``precompute_online`` feature-service path marks such values ``OUTSIDE_MAX_AGE``, and
``to_dict`` ignores statuses), so the SDK returns values of any age. nudge applies the
documented rule in every reader: a view whose stored event time is older than its TTL,
relative to the ``now`` of the call, counts as missing. A TTL of zero or none never expires.

Imports: Feast is imported by the start-up functions that need it, not with this module, which
the serving core imports: ``import feast`` costs seconds, and the parent of ``--workers``
processes (which only starts them) should not pay it before they start paying it themselves.

Threading: nudge serves each worker process from one asyncio thread, and the readers are
built for that: one SQLite connection opened once (usable from a thread other than the one
that opened it, one call at a time) and Redis connections kept checked out of the client's
pool, one per concurrent read (so one, on the event loop). ``read`` is blocking: at well under
a millisecond it is cheaper inline on the event loop than handed to an executor, and the store
timeout bounds how long a failing store can hold the loop.
"""
