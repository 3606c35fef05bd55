"""Time zones for the send-time policy: every UTC-offset change of a zone, found once.

The policy runs on every request inside a ~1 ms budget, so work that depends only on the
time zone is done once per zone and cached: a :class:`ZoneTable` of every UTC-offset change
from 1970 to 2100, found by scanning zoneinfo and bisecting. A call then turns its window into
candidate local hours with a handful of numpy operations (:func:`candidate_hours`) instead of
datetime arithmetic per hour. Times are int64 microseconds since the Unix epoch.
"""

from __future__ import annotations

import bisect
import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

HOUR_US = 3_600_000_000


TABLE_START_S = 0  # 1970-01-01T00:00Z


TABLE_END_S = 4_102_444_800  # 2100-01-01T00:00Z


# No zone since 1970 changes its offset and back again within one day (checked against
# every zone's compiled transitions, tzdata 2025b and 2026f), and successive different
# changes within one step are still found (see _scan_offsets), so a daily scan finds
# every transition: ~50 ms per zone on a fast machine, 210 ms on this project's 2-core one,
# paid by a worker's first request in each zone. Where the zone's compiled transitions can
# be read (the usual case), the scan covers only what follows them, which a yearly rule
# (POSIX TZ string: at most two changes a year, months apart) governs, so a weekly step is
# enough there: ~25 ms per zone.
_SCAN_STEP_S = 86_400
_RULE_SCAN_STEP_S = 7 * 86_400


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ZoneTable:
    """Every UTC-offset change of one zone from 1970 to 2100, as sorted segments.

    Segment i covers [starts[i], starts[i + 1]) with offset offsets[i]. The numpy arrays
    serve vectorised lookups; the tuples serve the few scalar lookups per call, where
    Python ints are several times faster than numpy scalars.
    """

    zone: ZoneInfo
    starts_us: npt.NDArray[np.int64]
    offsets_us: npt.NDArray[np.int64]
    starts: tuple[int, ...]
    offsets: tuple[int, ...]

    def offsets_at(self, instants_us: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """UTC offsets (µs) in force at each instant, all in one searchsorted."""
        segment = np.searchsorted(self.starts_us, instants_us, side="right") - 1
        return self.offsets_us[segment]


def _offset_s(zone: ZoneInfo, ts: int) -> int:
    """UTC offset of the zone at a Unix time, in whole seconds (zoneinfo's resolution)."""
    offset = datetime.fromtimestamp(ts, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset // timedelta(seconds=1)


def _first_change(zone: ZoneInfo, lo: int, hi: int, offset_lo: int) -> int:
    """The first second in (lo, hi] whose offset differs from offset_lo (bisection)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_s(zone, mid) == offset_lo:
            lo = mid
        else:
            hi = mid
    return hi


def _scan_offsets(zone: ZoneInfo, hints: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """Segment starts and offsets (seconds): the offset at each of ``hints`` (the zone's own
    transition times, ascending) where it changes, then a scan plus bisection of the rest,
    daily without hints, weekly after them (see _RULE_SCAN_STEP_S)."""
    starts = [TABLE_START_S]
    offsets = [_offset_s(zone, TABLE_START_S)]
    lo, step = TABLE_START_S, _SCAN_STEP_S
    for t in hints:
        lo, step = max(lo, min(t, TABLE_END_S)), _RULE_SCAN_STEP_S
        if TABLE_START_S < t < TABLE_END_S and (offset := _offset_s(zone, t)) != offsets[-1]:
            starts.append(t)
            offsets.append(offset)
    while lo < TABLE_END_S:
        hi = min(lo + step, TABLE_END_S)
        offset_hi = _offset_s(zone, hi)
        # A loop, not an if: two different changes within one step are both found.
        while offsets[-1] != offset_hi:
            change = _first_change(zone, max(lo, starts[-1]), hi, offsets[-1])
            starts.append(change)
            offsets.append(_offset_s(zone, change))
        lo = hi
    return starts, offsets


def _transitions(name: str) -> list[int]:
    """The zone's explicit transition times (Unix seconds) from its compiled TZif data, as the
    standard library's pure-Python zoneinfo reads them; [] where that is not available (it is
    not public API), and the table is then found by the daily scan alone."""
    try:
        python_zoneinfo: Any = importlib.import_module("zoneinfo._zoneinfo")
        return [int(t) for t in python_zoneinfo.ZoneInfo.no_cache(name)._trans_utc]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


@functools.cache
def zone_table(name: str) -> ZoneTable:
    """The cached offset table for an IANA zone name; raises for unknown names.

    Call it at start-up for the zones you expect, to take the one-off scan (~25 ms) off
    the request path.
    """
    zone = ZoneInfo(name)
    starts_s, offsets_s = _scan_offsets(zone, _transitions(name))
    starts_us = np.array(starts_s, dtype=np.int64) * 1_000_000
    offsets_us = np.array(offsets_s, dtype=np.int64) * 1_000_000
    starts_us.flags.writeable = False
    offsets_us.flags.writeable = False
    return ZoneTable(zone, starts_us, offsets_us, tuple(starts_us.tolist()), tuple(offsets_us.tolist()))


@functools.lru_cache(maxsize=4096)
def known_zone_table(name: str) -> ZoneTable | None:
    """zone_table(name), or None for a name zoneinfo rejects; bounded, as names come from clients."""
    try:
        return zone_table(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@functools.lru_cache(maxsize=1 << 16)
def local_time(zone: str, at_us: int) -> str:
    """An instant (µs since the epoch) as ISO-8601 local time in a known zone, e.g.
    ``2026-12-04T15:00:00+01:00``. Cached (bounded): the answers' local times are candidate hour
    starts, shared by a batch's customers and by successive calls until the hour turns, and
    formatting one cost ~3 µs (86 per ScoreBatch(100) here)."""
    return (_EPOCH + timedelta(microseconds=at_us)).astimezone(ZoneInfo(zone)).isoformat()


@functools.lru_cache(maxsize=4096)
def is_known_zone(name: str) -> bool:
    """Whether zoneinfo knows the name: the check without the one-off scan of
    :func:`zone_table`, for paths that only validate (Ingest), where a first batch of many
    new zones would otherwise pay ~50 ms per zone. Bounded, as names come from clients."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _opens_new_hour(at_us: int, offset_before: int, offset_after: int) -> bool:
    """Whether a zone transition starts a new candidate hour.

    It does when the local hour changes across it (spring forward, including
    half-hour shifts) or when local time runs backwards (fall back: the repeated
    hour is a second, separate occurrence).
    """
    if offset_after < offset_before:
        return True
    return (at_us + offset_after) // HOUR_US != (at_us - 1 + offset_before) // HOUR_US


def candidate_hours(
    table: ZoneTable, start_us: int, end_us: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """UTC starts of the local hours overlapping [start_us, end_us), in time order, and
    each one's local hour counted from the epoch (local time // 1 h).

    The first candidate is the current partial hour, clamped to start_us. Within a
    constant-offset segment the rest fall every hour from the first local boundary;
    a transition inside the window restarts that grid (and may itself start a
    candidate), which handles gaps, repeats and :30/:45 offsets alike. Within a segment
    the local hours simply count up by one, so they come from the segment's offset
    without a per-candidate offset look-up.
    """
    first = bisect.bisect_right(table.starts, start_us) - 1
    stop = bisect.bisect_left(table.starts, end_us)
    pieces, hours = [], []
    for i in range(first, stop):
        seg_start = start_us if i == first else table.starts[i]
        seg_end = end_us if i + 1 == stop else table.starts[i + 1]
        offset = table.offsets[i]
        next_boundary = seg_start + HOUR_US - (seg_start + offset) % HOUR_US
        first_hour = (next_boundary + offset) // HOUR_US  # the local hour starting there
        if i == first or _opens_new_hour(seg_start, table.offsets[i - 1], offset):
            piece = np.arange(next_boundary - HOUR_US, seg_end, HOUR_US, dtype=np.int64)
            piece[0] = seg_start
            first_hour -= 1
        else:
            piece = np.arange(next_boundary, seg_end, HOUR_US, dtype=np.int64)
        pieces.append(piece)
        hours.append(np.arange(first_hour, first_hour + len(piece), dtype=np.int64))
    if len(pieces) == 1:
        return pieces[0], hours[0]
    return np.concatenate(pieces), np.concatenate(hours)
