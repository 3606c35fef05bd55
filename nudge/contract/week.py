"""The week of the send-time model: 168 local hours, Monday 00:00–00:59 being slot 0.

One slot function for every place that turns a time into a slot (the feature pipeline, the
simulator, the serving policy), so the three cannot drift apart.
"""

from __future__ import annotations

import zoneinfo

import numpy as np
import numpy.typing as npt

HOURS_PER_WEEK = 168
# Local hours are counted from Monday 1970-01-05 00:00: the Unix epoch (a Thursday) is at
# hour -96 of that count.
EPOCH_HOUR = -96


def hour_of_week(local_hours: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Slot of each local wall-clock time, given as hours since Monday 1970-01-05 00:00 local
    (whole or fractional; a fraction belongs to the hour it is in)."""
    hours = np.asarray(local_hours)
    whole = hours if hours.dtype.kind in "iu" else np.floor(hours).astype(np.int64)
    return whole % HOURS_PER_WEEK  # whole hours (the policy's) need no float round trip


def local_hour_of_week(unix_seconds: npt.NDArray[np.integer], zones: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Slot of each UTC time (Unix seconds) in its customer's IANA zone, DST-correct.

    One vectorised conversion per distinct zone, with zoneinfo (the zone database the
    validation and the service use). Pandas is imported here, not with the module: the
    serving policy imports this module, and the server's parent process stays small."""
    import pandas as pd

    slots = np.empty(len(unix_seconds), np.int64)
    codes, names = pd.factorize(np.asarray(zones))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    for code, name in enumerate(names):
        rows = order[bounds[code] : bounds[code + 1]]
        utc = pd.DatetimeIndex(unix_seconds[rows].astype("datetime64[s]"), tz="UTC")
        local_s = utc.tz_convert(zoneinfo.ZoneInfo(name)).tz_localize(None).as_unit("s").asi8
        slots[rows] = hour_of_week(local_s // 3600 + EPOCH_HOUR)
    return slots
