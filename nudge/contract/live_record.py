"""A customer's live record: the feature state and the recent applied event ids, as stored.

Ingest (service/ingest.py) reads and writes records through compare-and-set; the batch
bootstrap (training/live_states.py) writes a record per customer for ``nudge load-states``;
Score decodes only the state. One encoding for all three, so it lives in the contract.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from nudge.contract.live_state import CustomerState, from_bytes, to_bytes

# The batch's records (customer_id, record), and the offset of the first byte of Ingest's event
# log they do not hold, in the Parquet schema's metadata.
LIVE_STATES_FILE = "live_states.parquet"
LOG_OFFSET_KEY = b"nudge.event_log_offset"


def live_states_path(repo: Path) -> Path:
    """Where ``nudge features`` writes the records and ``nudge load-states`` reads them."""
    return repo / "data" / LIVE_STATES_FILE


# Recent applied event ids kept per customer for dedupe. Correctness (never applying an event
# twice) needs only the ids at the newest applied second, which are never dropped: an older
# event cannot be applied any more (it is LATE). Keeping a day's worth lets a retry of older
# events be reported DUPLICATE rather than LATE; the cap bounds the record.
DEDUPE_WINDOW = 86_400  # seconds of event time before the newest applied event
MAX_RECENT_IDS = 256


@dataclass(slots=True)
class LiveRecord:
    """What the store keeps per customer: the state and the recent applied event ids with
    their times (ascending), in one value so one compare-and-set covers both."""

    state: CustomerState
    recent: dict[str, int] = field(default_factory=dict)


RECORD_VERSION = 1
_COUNT = struct.Struct("<I")


def encode_record(record: LiveRecord) -> bytes:
    """Version, the state's own encoding (length-prefixed), then the ids: their times as int64,
    each id length-prefixed UTF-8."""
    state = to_bytes(record.state)
    ids = [event_id.encode() for event_id in record.recent]
    parts = [bytes([RECORD_VERSION]), _COUNT.pack(len(state)), state, _COUNT.pack(len(ids))]
    parts.append(struct.pack(f"<{len(ids)}q", *record.recent.values()))
    parts += [struct.pack("<H", len(encoded)) + encoded for encoded in ids]
    return b"".join(parts)


def _state_span(data: bytes) -> tuple[int, int]:
    """Where the state's own encoding lies in a record; refuses another version."""
    if not data or data[0] != RECORD_VERSION:
        raise ValueError(f"live record version {data[:1].hex() or 'none'}: expected {RECORD_VERSION}")
    (length,) = _COUNT.unpack_from(data, 1)
    return 1 + _COUNT.size, 1 + _COUNT.size + length


def state_bytes(data: bytes) -> bytes:
    """Only the state's encoding in a record: what Score finalises (the ids are Ingest's
    business)."""
    start, end = _state_span(data)
    return data[start:end]


def decode_record(data: bytes) -> LiveRecord:
    """The record :func:`encode_record` encoded; refuses another version."""
    start, offset = _state_span(data)
    state = from_bytes(data[start:offset])
    (count,) = _COUNT.unpack_from(data, offset)
    offset += _COUNT.size
    times = struct.unpack_from(f"<{count}q", data, offset)
    offset += 8 * count
    recent = {}
    for t in times:
        (size,) = struct.unpack_from("<H", data, offset)
        offset += 2
        recent[data[offset : offset + size].decode()] = t
        offset += size
    if offset != len(data):
        raise ValueError(f"live record: {len(data) - offset} bytes left over")
    return LiveRecord(state, recent)


def trim_recent(recent: dict[str, int], newest: int) -> dict[str, int]:
    """The ids still worth keeping (see DEDUPE_WINDOW): ties at ``newest`` are never dropped."""
    kept = [(event_id, t) for event_id, t in recent.items() if t >= newest - DEDUPE_WINDOW]
    first = max(len(kept) - MAX_RECENT_IDS, 0)
    while first > 0 and kept[first - 1][1] == newest:
        first -= 1
    return dict(kept[first:])
