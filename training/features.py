"""Build the point-in-time feature tables that the Feast repo's sources read.

Reads events and customers (the schema is in training/events.py; invalid rows are refused,
or dropped and counted with --drop-invalid) and writes, under REPO/data/:

  customer_stats.parquet            one row per customer per snapshot
  customer_time_histograms.parquet  one row per customer per snapshot with a new engagement
  live_states.parquet               one live record per customer, as of the end of the data
                                    (training/live_states.py; ``nudge load-states`` loads it)

Ingest's event log (--event-log, default REPO/data/events.log.jsonl) is read beside the files:
the events acknowledged live are in every table.

Snapshots are at 00:00 UTC every --cadence-days days, counted back from the first midnight
after the last event (so the newest snapshot reflects every event, as of the end of the data:
materialise up to it) to the first one after the earliest event. A row's event_timestamp is
its snapshot time, and a snapshot is computed only from events strictly before it: an event
exactly at a snapshot counts from the next one.

The same definitions are evaluated live, event by event, by ``nudge.contract.live_state``
(which holds the constants below: burst gap, decide window, half-lives); ``features_at``
computes them at any (customer, instant) pairs, and tests/unit/test_live_state.py checks that
both evaluations agree.

Definitions (all features float32; null where undefined, never a stand-in zero):
  engagement      a customer-initiated event (purchase, site_visit, cart_add, email_open,
                  email_click, sms_click, push_open). Bursts collapse: an engagement less than
                  or exactly 1 h after the customer's previous one belongs to the same
                  engagement, which keeps the first one's time.
  windows         counts over [snapshot - N days, snapshot).
  tenure_days     since the customer first appeared: signup or first event, whichever is
                  earlier. A customer has rows from the first snapshot after that.
  gap_*_days      over purchase trips (purchases collapsed like bursts, so a basket split
                  into several orders is one trip); gap_std_days is the sample std.
  cycle_ratio     days_since_last_purchase / gap_mean_days.
  *_rate_90d      opens (clicks) / sends of the channel over 90 days; null without sends.
  *_sends_90d     sends of the channel (email_send, sms_send, push_send) over 90 days, so a
                  rate's responses are rate x sends.
  hours_since_open_interest  hours since the latest site_visit or cart_add, if it is within
                  90 days and no purchase came at or after it (a purchase at its very second
                  converts it); null otherwise. open_interest_is_cart: 1 if a cart_add is at
                  that latest interest's second, else 0; null when the hours are.
  decide_time_hours  median over purchases of the hours since the latest site_visit or
                  cart_add at most 48 h before the purchase (purchases without one skipped).
  engagement_count_decayed  sum over engagements of 0.5 ** (age / 30 days).
  hist_*          engagements by local hour of week (Monday 00h = slot 0), hour of day and
                  day of week in the customer's IANA zone (DST-correct), each weighted
                  0.5 ** (age / 60 days) and normalised to sum 1. Normalising cancels the
                  common decay, so a histogram changes only with a new engagement: rows are
                  written only then (the view has a long TTL); hist_event_count counts the
                  engagements behind it.

Any instant: ``features_at`` computes both tables' features at explicit (customer, instant)
pairs with the same engine and the same definitions (a customer appears at the earlier of
signup and their first event before the instant; tenure is null before that, histograms are
null before the first engagement). nudge.contract.live_state evaluates the same definitions
from a per-customer state updated event by event; tests/unit/test_live_state.py checks that
the two agree.

Counts are of raw events (orders, opens, clicks: a rate can exceed 1 when a message is
opened twice); recency, gaps and histograms use the collapsed engagements or trips.

Engine: numpy over events sorted by (customer, time). "The customer's events before time x"
is a binary search per (customer, snapshot) -- exactly the point-in-time lookup, and faster
than DuckDB's ASOF joins (docs/benchmarks.md) -- and window counts are differences of prefix
counts. DuckDB computes the one running median.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nudge.contract.event_log import read_event_log
from nudge.contract.events import ENGAGEMENT_TYPES, EVENT_TYPES
from nudge.contract.features import HISTOGRAMS_VIEW, STATS_VIEW
from nudge.contract.live_record import live_states_path
from nudge.contract.live_state import BURST_GAP, COUNT_HALF_LIFE, DAY, DECIDE_WINDOW, HIST_HALF_LIFE
from nudge.contract.week import HOURS_PER_WEEK, local_hour_of_week
from nudge.inputs import UserError, check, positive_int, unwritable_dir, user_errors
from training.events import load_event_data, missing_files, validate
from training.feature_tables import TIMESTAMP, FeatureTables, feature_tables
from training.live_states import build_records, with_logged, with_offset

STATS_TABLE, HISTOGRAMS_TABLE = STATS_VIEW, HISTOGRAMS_VIEW  # each view's table is named after it
Progress = Callable[[str], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=Path, required=True, help="events file (.parquet or .csv)")
    parser.add_argument("--customers", type=Path, required=True, help="customers file (.parquet or .csv)")
    parser.add_argument(
        "--repo",
        type=Path,
        required=True,
        help="Feast repo: its feature views name the columns; tables go to REPO/data/",
    )
    parser.add_argument(
        "--cadence-days", type=positive_int, default=7, help="days between snapshots (default 7)"
    )
    parser.add_argument(
        "--event-log",
        type=Path,
        help="Ingest's event log, read beside the files (default: REPO/data/events.log.jsonl, if any)",
    )
    parser.add_argument(
        "--default-time-zone",
        default="UTC",
        help="zone of a customer only the event log knows and gave none (as the server's setting)",
    )
    parser.add_argument(
        "--drop-invalid",
        action="store_true",
        help="drop invalid rows (counted per reason) instead of failing",
    )


def run(args: argparse.Namespace) -> int:
    check(*missing_files(args.events, args.customers), unwritable_dir(args.repo / "data", "--repo"))
    started = time.perf_counter()
    step = _Steps()
    step.begin(f"reading {args.events} and {args.customers}")
    with user_errors(ValueError, exit_code=1):  # EventDataError, or a file that is not a table
        data = load_event_data(args.events, args.customers, drop_invalid=args.drop_invalid)
    step.end(f"{len(data.events):,} events, {len(data.customers):,} customers")
    log_path = args.event_log or args.repo / "data" / "events.log.jsonl"
    step.begin(f"reading the event log {log_path}")
    logged, offset = read_event_log(log_path)
    events, customers = with_logged(data.events, data.customers, logged, args.default_time_zone)
    step.end(f"{len(logged):,} events, {len(customers) - len(data.customers):,} new customers")
    tables = repo_tables(args.repo)
    step.begin(f"building features (snapshots every {args.cadence_days} days)")
    stats, histograms = build_feature_arrow(
        events,
        customers,
        tables,
        args.cadence_days,
        engagement_rows=True,
        progress=lambda text: print(f"      {text}"),
    )
    step.end(f"{stats.num_rows:,} {STATS_TABLE} rows, {histograms.num_rows:,} {HISTOGRAMS_TABLE} rows")
    step.begin("building the live states (nudge load-states puts them in the live state store)")
    records = with_offset(build_records(events, customers, logged), offset)
    step.end(f"{records.num_rows:,} customers")
    outputs = [
        (args.repo / "data" / f"{name}.parquet", table)
        for name, table in ((STATS_TABLE, stats), (HISTOGRAMS_TABLE, histograms))
    ]
    for path, table in [*outputs, (live_states_path(args.repo), records)]:
        step.begin(f"writing {path}")
        write_table(table, path)
        step.end(f"{table.num_rows:,} rows, {path.stat().st_size / 1e6:,.1f} MB")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


class _Steps:
    """Prints each step as it starts and its result with the time it took."""

    def __init__(self) -> None:
        self.count = 0
        self.step_started = time.perf_counter()

    def begin(self, text: str) -> None:
        self.count += 1
        self.step_started = time.perf_counter()
        print(f"[{self.count}] {text} ...", flush=True)

    def end(self, text: str) -> None:
        print(f"    {text} ({time.perf_counter() - self.step_started:.1f} s)", flush=True)


def write_table(table: pa.Table, path: Path) -> None:
    """Write atomically (temp file + rename) so Feast never reads a half-written table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".parquet.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def repo_tables(repo: Path) -> FeatureTables:
    """The columns of the two tables, as the Feast repo's views declare them."""
    return feature_tables(repo, STATS_TABLE, HISTOGRAMS_TABLE)


def build_feature_tables(
    events: pd.DataFrame, customers: pd.DataFrame, tables: FeatureTables, cadence_days: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(customer_stats, customer_time_histograms)`` as DataFrames; the inputs are validated first.

    Histogram cells hold float32 numpy arrays. Raises ``EventDataError`` on invalid input.
    """
    data = validate(events, customers)
    stats, histograms = build_feature_arrow(data.events, data.customers, tables, cadence_days)
    return stats.to_pandas(), histograms.to_pandas()


def build_feature_arrow(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    tables: FeatureTables,
    cadence_days: int = 7,
    *,
    engagement_rows: bool = False,
    progress: Progress | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Both tables as Arrow, from events and customers as ``training.events`` returns them;
    with ``engagement_rows``, also a row of each just before every engagement."""
    if cadence_days < 1:
        raise ValueError(f"cadence_days must be >= 1, got {cadence_days}")
    report = progress or (lambda _text: None)
    people = _Customers.of(customers)
    history = _Timeline.of(events, people)
    snapshots = snapshot_times(history.t, cadence_days)
    report(
        f"{len(snapshots)} snapshots"
        + (f", {_iso(snapshots[0])} .. {_iso(snapshots[-1])}" if len(snapshots) else "")
    )
    if not len(snapshots):
        return tables.stats.empty_table(), tables.histograms.empty_table()
    grid = _Grid.of(people, history, snapshots)
    report(f"{len(grid.cust):,} customer snapshots")
    engagements = history.engagements()
    stats = _stats_table(tables.stats, people, history, engagements, grid)
    report("customer stats done")
    zones = people.zones.to_numpy(zero_copy_only=False)
    slots = local_hour_of_week(engagements.t, zones[engagements.cust])  # once per engagement
    histograms = _histograms_table(tables.histograms, people, engagements, slots, snapshots, report)
    if not engagement_rows:
        return stats, histograms
    before_stats, before_histograms = _engagement_rows(tables, people, history, engagements, slots)
    report(f"{before_stats.num_rows:,} engagement rows")
    return pa.concat_tables([stats, before_stats]), pa.concat_tables([histograms, before_histograms])


_TIME = "event_timestamp"
ENGAGEMENT_CHUNK = 200_000  # engagements per block of the histograms' running sums (168 floats each)


def _engagement_rows(
    tables: FeatureTables, people: _Customers, history: _Timeline, engagements: _Timeline, slots: np.ndarray
) -> tuple[pa.Table, pa.Table]:
    """Both views exact just before every engagement: send time's training rows, which sit one
    microsecond before their engagement, join exactly these (snapshot rows are whole seconds,
    these never are). A row 1 µs before an engagement holds the events strictly before it.
    Histograms: running sums of the customer's earlier engagements, none before the first."""
    grid = _Grid.pairs(people, history, engagements.cust, engagements.t)
    stats = _just_before(_stats_table(tables.stats, people, history, engagements, grid))
    weights = np.exp2((engagements.t - int(engagements.t.max())) / HIST_HALF_LIFE)
    n = len(engagements.t)
    firsts = np.flatnonzero(_group_starts(engagements.cust))
    first_of = np.repeat(firsts, np.diff(np.append(firsts, n)))  # each engagement's customer start
    batches = []
    begin = 0
    while begin < n:  # blocks of whole customers, so each running sum stays in one block
        next_first = np.searchsorted(firsts, begin + ENGAGEMENT_CHUNK)
        end = int(firsts[next_first]) if next_first < len(firsts) else n
        rows = np.arange(begin, end)
        onehot = np.zeros((len(rows), HOURS_PER_WEEK))
        onehot[np.arange(len(rows)), slots[rows]] = weights[rows]
        earlier = np.cumsum(onehot, axis=0) - onehot  # within the block, exclusive
        earlier -= earlier[first_of[rows] - begin]  # ... and within the customer
        keep = rows[rows > first_of[rows]]
        batches.append(
            _histogram_batch(
                tables.histograms,
                people.ids.take(engagements.cust[keep]),
                engagements.t[keep],
                earlier[keep - begin],
                (keep - first_of[keep]).astype(np.float64),
            )
        )
        begin = end
    histograms = _just_before(pa.Table.from_batches(batches, schema=tables.histograms))
    return stats, histograms


def _just_before(table: pa.Table) -> pa.Table:
    """The table with each row's time moved one microsecond earlier (see _engagement_rows)."""
    column = table.schema.get_field_index(_TIME)
    micros = pc.subtract(table[_TIME].cast(pa.int64()), 1)
    return table.set_column(column, _TIME, micros.cast(TIMESTAMP))


def snapshot_times(event_times: np.ndarray, cadence_days: int) -> np.ndarray:
    """Snapshot times (Unix seconds, ascending): the first midnight (UTC) after the last event,
    then every ``cadence_days`` back, while still after the earliest event."""
    if len(event_times) == 0:
        return np.zeros(0, np.int64)
    last = (int(event_times.max()) // DAY + 1) * DAY
    cadence = cadence_days * DAY
    earlier = (last - int(event_times.min()) - 1) // cadence  # snapshots before the last one
    return last - np.arange(earlier, -1, -1, dtype=np.int64) * cadence


def _iso(seconds: int) -> str:
    return str(pd.Timestamp(int(seconds), unit="s", tz="UTC").date())


# Sort/search key of (customer, time): customer index in the high bits, time (shifted to be
# non-negative, covering pandas' whole datetime64[ns] range) in the low bits.
_TIME_BITS = 35
_TIME_SHIFT = 1 << 34
_NEVER = np.iinfo(np.int64).max


def _group_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Where each run of equal values begins in a sorted array (np.unique without its sort)."""
    starts = np.ones(len(sorted_values), bool)
    starts[1:] = sorted_values[1:] != sorted_values[:-1]
    return starts


def _keys(cust: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (cust << _TIME_BITS) + (t + _TIME_SHIFT)


def _unix_seconds(times: pd.Series) -> np.ndarray:
    """Whole Unix seconds, rounded down: a time before a midnight stays before it."""
    nanoseconds = times.dt.tz_convert("UTC").dt.as_unit("ns").dt.tz_localize(None).to_numpy().view(np.int64)
    return nanoseconds // 1_000_000_000


@dataclass(frozen=True)
class _Customers:
    """Customers numbered 0..n-1 in id order, so every output is ordered by customer id."""

    ids: pa.Array
    zones: pa.Array
    signup: np.ndarray  # Unix seconds; _NEVER where unknown

    @classmethod
    def of(cls, customers: pd.DataFrame) -> _Customers:
        ordered = customers.sort_values("customer_id", kind="stable")
        signup = ordered["signup_timestamp"]
        seconds = np.where(signup.notna(), _unix_seconds(signup.fillna(pd.Timestamp(0, tz="UTC"))), _NEVER)
        return cls(
            pa.array(ordered["customer_id"], pa.string()),
            pa.array(ordered["time_zone"], pa.string()),
            seconds,
        )

    def __post_init__(self) -> None:
        if len(self.ids) >= 1 << (63 - _TIME_BITS):
            raise ValueError(f"{len(self.ids):,} customers: at most {1 << (63 - _TIME_BITS):,} are supported")

    def index_of(self, ids: pd.Series) -> np.ndarray:
        index = pd.Index(self.ids.to_numpy(zero_copy_only=False)).get_indexer(ids)
        if (index < 0).any():
            raise ValueError(f"{int((index < 0).sum()):,} events belong to customers absent from customers")
        return index.astype(np.int64)


@dataclass(frozen=True)
class _Timeline:
    """Some events of every customer, sorted by (customer, time): answers point-in-time questions.

    ``before(cust, x)`` is the position of the customer's first event at or after ``x``, so
    ``before(c, b) - before(c, a)`` counts events in ``[a, b)`` and position ``before - 1`` is
    the last event strictly before ``x`` when it is ``>= start(c)``.
    """

    cust: np.ndarray
    t: np.ndarray
    kind: np.ndarray
    amount: np.ndarray

    @functools.cached_property
    def keys(self) -> np.ndarray:
        return _keys(self.cust, self.t)

    def subset(self, mask: np.ndarray) -> _Timeline:
        return _Timeline(self.cust[mask], self.t[mask], self.kind[mask], self.amount[mask])

    def is_kind(self, *kinds: str) -> np.ndarray:
        return np.isin(self.kind, [EVENT_TYPES.index(kind) for kind in kinds])

    def of_kinds(self, *kinds: str) -> _Timeline:
        return self.subset(self.is_kind(*kinds))

    def prefix_count(self, *kinds: str) -> np.ndarray:
        """``[i]`` = how many of the first ``i`` events are of these kinds."""
        return np.concatenate(([0], np.cumsum(self.is_kind(*kinds), dtype=np.int64)))

    def collapsed(self) -> _Timeline:
        """Bursts collapsed: an event at most BURST_GAP after the customer's previous one is
        part of it (chained), and the burst keeps its first event."""
        keep = np.ones(len(self.t), bool)
        keep[1:] = (self.cust[1:] != self.cust[:-1]) | (np.diff(self.t) > BURST_GAP)
        return self.subset(keep)

    def engagements(self) -> _Timeline:
        return self.of_kinds(*sorted(ENGAGEMENT_TYPES)).collapsed()

    def before(self, cust: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.keys, _keys(cust, x), side="left")

    def start(self, cust: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.keys, cust << _TIME_BITS, side="left")

    def last(
        self, values: np.ndarray, at: np.ndarray, start: np.ndarray, empty: float = np.nan
    ) -> np.ndarray:
        """``values`` of the last event before each lookup; ``empty`` where there is none."""
        found = at > start
        if not found.any():
            return np.full(len(at), empty)
        return np.where(found, values[np.maximum(at - 1, 0)], empty)

    def running_sum(self, values: np.ndarray) -> np.ndarray:
        """Per customer, the sum of values up to and including each event; summed per customer
        so that no other customer's magnitude costs precision."""
        return pd.Series(values, dtype=np.float64).groupby(self.cust, sort=False).cumsum().to_numpy()

    def running_median(self, values: np.ndarray) -> np.ndarray:
        """Per customer, the median of values (nulls skipped) up to and including each event.

        No closed form, so DuckDB's windowed median does it (pandas' grouped expanding median
        loops over customers in Python: 20x slower)."""
        if not len(values):
            return values
        rows = pa.table(
            {"c": self.cust, "i": np.arange(len(values)), "v": pa.array(values, from_pandas=True)}
        )
        with duckdb.connect() as con:
            con.register("history", rows)
            median = con.sql(
                "SELECT median(v) OVER (PARTITION BY c ORDER BY i ROWS UNBOUNDED PRECEDING) AS m"
                " FROM history ORDER BY i"
            ).fetchnumpy()["m"]
        # A numpy masked array (nulls masked); duckdb's stubs also allow a pandas array.
        return np.ma.filled(cast(np.ma.MaskedArray, median).astype(np.float64), np.nan)

    @classmethod
    def of(cls, events: pd.DataFrame, people: _Customers) -> _Timeline:
        cust = people.index_of(events["customer_id"])
        t = _unix_seconds(events["event_timestamp"])
        kind = pd.Categorical(events["event_type"], categories=EVENT_TYPES).codes.astype(np.int8)
        order = np.argsort(_keys(cust, t), kind="stable")
        return cls(cust[order], t[order], kind[order], events["amount"].to_numpy(np.float64)[order])


@dataclass(frozen=True)
class _Grid:
    """(customer, instant) pairs: the snapshots of customer_stats ordered by customer then
    time, or explicit pairs in the caller's order."""

    cust: np.ndarray
    s: np.ndarray
    since: np.ndarray  # when the row's customer first appeared

    @classmethod
    def of(cls, people: _Customers, history: _Timeline, snapshots: np.ndarray) -> _Grid:
        """Each customer from the first snapshot after they appeared (signup or first event)."""
        first_seen = people.signup.copy()
        firsts = _group_starts(history.cust)
        owners = history.cust[firsts]
        first_seen[owners] = np.minimum(first_seen[owners], history.t[firsts])
        begin = np.searchsorted(snapshots, first_seen, side="right")
        rows = len(snapshots) - begin
        cust = np.repeat(np.arange(len(rows)), rows)
        offsets = np.repeat(np.cumsum(rows) - rows - begin, rows)
        return cls(cust, snapshots[np.arange(len(cust)) - offsets], first_seen[cust])

    @classmethod
    def pairs(cls, people: _Customers, history: _Timeline, cust: np.ndarray, s: np.ndarray) -> _Grid:
        """Explicit pairs; ``since`` is point-in-time: the earlier of signup and the customer's
        first event before the instant (``_NEVER`` when neither exists)."""
        start, at = history.start(cust), history.before(cust, s)
        first_event = history.last(history.t, np.minimum(at, start + 1), start, empty=_NEVER)
        return cls(cust, s, np.minimum(people.signup[cust], first_event))


def _stats_table(
    schema: pa.Schema, people: _Customers, history: _Timeline, engagements: _Timeline, grid: _Grid
) -> pa.Table:
    appeared = grid.since < grid.s  # always, at snapshots; not so at an explicit instant
    features = {"tenure_days": np.where(appeared, (grid.s - grid.since) / DAY, np.nan)}
    features |= _purchase_features(history, grid)
    features |= _engagement_features(engagements, grid, reference=int(grid.s.max()))
    features |= _channel_features(history, grid)
    features |= _interest_features(history, grid)
    computed = {
        name: pa.array(values.astype(np.float32), from_pandas=True) for name, values in features.items()
    }
    computed["time_zone"] = people.zones.take(grid.cust)
    keys = [people.ids.take(grid.cust), _timestamps(grid.s)]
    return pa.Table.from_arrays(_columns(schema, keys, computed), schema=schema)


def _columns(schema: pa.Schema, keys: list[pa.Array], computed: dict[str, pa.Array]) -> list[pa.Array]:
    """The keys, then each feature the view declares, in its order; a feature the pipeline
    does not compute is the user's to fix (a definition without a computation)."""
    names = FeatureTables.features(schema)
    unknown = [name for name in names if name not in computed]
    if unknown:
        raise UserError(
            f"feature_repo defines {', '.join(unknown)}, which nudge features does not compute: "
            "add the computation to training/features.py, or remove the field from the view"
        )
    return [*keys, *(computed[name] for name in names)]


def _purchase_features(history: _Timeline, grid: _Grid) -> dict[str, np.ndarray]:
    purchases = history.of_kinds("purchase")
    at, start = purchases.before(grid.cust, grid.s), purchases.start(grid.cust)
    ago = {days: purchases.before(grid.cust, grid.s - days * DAY) for days in (7, 30, 90)}
    count = at - start
    spent = purchases.running_sum(purchases.amount)
    spent_total = purchases.last(spent, at, start, empty=0.0)
    since_last = (grid.s - purchases.last(purchases.t, at, start)) / DAY
    gap_mean, gap_std = _gap_stats(purchases.collapsed(), grid)
    decide = purchases.running_median(_decide_hours(history, purchases))
    return {
        "purchase_count_7d": at - ago[7],
        "purchase_count_30d": at - ago[30],
        "purchase_count_90d": at - ago[90],
        "purchase_count_total": count,
        "days_since_last_purchase": since_last,
        "amount_total_90d": spent_total - purchases.last(spent, ago[90], start, empty=0.0),
        "amount_avg": np.where(count > 0, spent_total / np.maximum(count, 1), np.nan),
        "gap_mean_days": gap_mean,
        "gap_std_days": gap_std,
        "cycle_ratio": since_last / gap_mean,
        "decide_time_hours": purchases.last(decide, at, start),
    }


def _gap_stats(trips: _Timeline, grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std of the gaps (days) between a customer's trips before each snapshot.

    Running sums are of each gap minus the customer's first gap (known as soon as any gap is),
    so a regular cycle has exactly zero spread instead of a cancellation residue."""
    gaps = np.diff(trips.t, prepend=0) / DAY
    gaps[np.diff(trips.cust, prepend=-1) != 0] = np.nan  # a customer's first trip has no gap
    shift = pd.Series(gaps).groupby(trips.cust, sort=False).transform("first").to_numpy()
    deviation = np.nan_to_num(gaps - shift)
    at, start = trips.before(grid.cust, grid.s), trips.start(grid.cust)
    n = at - start - 1  # gaps before the snapshot
    first = trips.last(shift, at, start)
    total = trips.last(trips.running_sum(deviation), at, start, empty=0.0)
    squares = trips.last(trips.running_sum(deviation**2), at, start, empty=0.0)
    mean = np.where(n >= 1, first + total / np.maximum(n, 1), np.nan)
    variance = (squares - total**2 / np.maximum(n, 1)) / np.maximum(n - 1, 1)
    return mean, np.where(n >= 2, np.sqrt(np.maximum(variance, 0.0)), np.nan)


def _decide_hours(history: _Timeline, purchases: _Timeline) -> np.ndarray:
    """Per purchase: hours since the latest site_visit/cart_add at most 48 h before it, or NaN."""
    visits = history.of_kinds("site_visit", "cart_add")
    if not len(visits.t):
        return np.full(len(purchases.t), np.nan)
    latest = np.searchsorted(visits.keys, purchases.keys, side="right") - 1
    safe = np.maximum(latest, 0)
    waited = purchases.t - visits.t[safe]
    found = (latest >= 0) & (visits.cust[safe] == purchases.cust) & (waited <= DECIDE_WINDOW)
    return np.where(found, waited / 3_600, np.nan)


def _engagement_features(engagements: _Timeline, grid: _Grid, reference: int) -> dict[str, np.ndarray]:
    """Recency and decayed count; weights are relative to ``reference`` (the last snapshot) so
    they stay <= 1 and the per-customer running sums never overflow."""
    at, start = engagements.before(grid.cust, grid.s), engagements.start(grid.cust)
    half_life = COUNT_HALF_LIFE
    weights = np.exp2((engagements.t - reference) / half_life)
    weight_sum = engagements.last(engagements.running_sum(weights), at, start, empty=0.0)
    return {
        "days_since_last_engagement": (grid.s - engagements.last(engagements.t, at, start)) / DAY,
        "engagement_count_decayed": weight_sum * np.exp2((reference - grid.s) / half_life),
    }


def _channel_features(history: _Timeline, grid: _Grid) -> dict[str, np.ndarray]:
    """Window counts as differences of prefix counts at positions in the full history: four
    binary searches in all, however many kinds are counted."""
    at = {days: history.before(grid.cust, grid.s - days * DAY) for days in (0, 7, 30, 90)}

    @functools.cache
    def count(days: int, *kinds: str) -> np.ndarray:
        prefix = history.prefix_count(*kinds)
        return prefix[at[0]] - prefix[at[days]]

    def rate(numerator: str, denominator: str) -> np.ndarray:
        sends = count(90, denominator)
        return np.where(sends > 0, count(90, numerator) / np.maximum(sends, 1), np.nan)

    return {
        "site_visit_count_7d": count(7, "site_visit"),
        "site_visit_count_30d": count(30, "site_visit"),
        "cart_add_count_30d": count(30, "cart_add"),
        "sends_30d": count(30, "email_send", "sms_send", "push_send"),
        "email_open_rate_90d": rate("email_open", "email_send"),
        "email_click_rate_90d": rate("email_click", "email_send"),
        "sms_click_rate_90d": rate("sms_click", "sms_send"),
        "push_open_rate_90d": rate("push_open", "push_send"),
        "email_sends_90d": count(90, "email_send"),
        "sms_sends_90d": count(90, "sms_send"),
        "push_sends_90d": count(90, "push_send"),
    }


def _interest_features(history: _Timeline, grid: _Grid) -> dict[str, np.ndarray]:
    """The open interest: the latest site_visit/cart_add before the instant, if within 90 days
    and no purchase at or after it (before the instant); a cart if a cart_add is at its second."""

    def latest(*kinds: str) -> np.ndarray:
        """Time of the customer's latest event of these kinds before the instant; NaN if none."""
        of = history.of_kinds(*kinds)
        return of.last(of.t, of.before(grid.cust, grid.s), of.start(grid.cust))

    visit, purchase, cart = latest("site_visit", "cart_add"), latest("purchase"), latest("cart_add")
    open_interest = (visit >= grid.s - 90 * DAY) & ~(purchase >= visit)  # NaN compares False
    return {
        "hours_since_open_interest": np.where(open_interest, (grid.s - visit) / 3_600, np.nan),
        "open_interest_is_cart": np.where(open_interest, (cart == visit).astype(np.float64), np.nan),
    }


def _histograms_table(
    schema: pa.Schema,
    people: _Customers,
    engagements: _Timeline,
    slots: np.ndarray,
    snapshots: np.ndarray,
    report: Progress,
) -> pa.Table:
    """Scan the snapshots in order, adding each period's engagements to per-customer decayed
    totals and emitting the customers whose totals changed: exact running sums per customer."""
    if not len(engagements.t):
        return schema.empty_table()
    weights = np.exp2((engagements.t - snapshots[-1]) / HIST_HALF_LIFE)
    period = np.searchsorted(snapshots, engagements.t, side="right")  # the first snapshot after it
    firsts = _group_starts(engagements.cust)
    owners, owner = engagements.cust[firsts], np.cumsum(firsts) - 1
    totals = np.zeros((len(owners), HOURS_PER_WEEK))
    counts = np.zeros(len(owners))
    order = np.argsort(period, kind="stable")
    bounds = np.searchsorted(period[order], np.arange(len(snapshots) + 1))
    batches = []
    for index, snapshot in enumerate(snapshots):
        new = order[bounds[index] : bounds[index + 1]]
        if len(new):
            np.add.at(totals, (owner[new], slots[new]), weights[new])
            np.add.at(counts, owner[new], 1)
            changed = np.unique(owner[new])
            ids = people.ids.take(owners[changed])
            batches.append(
                _histogram_batch(schema, ids, np.full(len(ids), snapshot), totals[changed], counts[changed])
            )
        if (index + 1) % max(1, len(snapshots) // 4) == 0:
            report(f"histograms: {index + 1}/{len(snapshots)} snapshots")
    return pa.Table.from_batches(batches, schema=schema)


def _histogram_batch(
    schema: pa.Schema, ids: pa.Array, times: np.ndarray, totals: np.ndarray, counts: np.ndarray
) -> pa.RecordBatch:
    """Normalised float32 histograms from the given customers' decayed totals (a copy: it is
    normalised in place, which saves a pass over the largest array)."""
    scale = 1.0 / totals.sum(axis=1, keepdims=True)
    day_hour = totals.reshape(-1, 7, 24)
    hour_of_day = (day_hour.sum(axis=1) * scale).astype(np.float32)
    day_of_week = (day_hour.sum(axis=2) * scale).astype(np.float32)
    week = np.multiply(totals, scale, out=totals).astype(np.float32)
    computed = {
        "hist_hour_of_week": _lists(week),
        "hist_hour_of_day": _lists(hour_of_day),
        "hist_day_of_week": _lists(day_of_week),
        "hist_event_count": pa.array(counts.astype(np.float32)),
    }
    keys = [ids, _timestamps(times)]
    return pa.RecordBatch.from_arrays(_columns(schema, keys, computed), schema=schema)


def features_at(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    customer_ids: npt.ArrayLike,
    instants: npt.ArrayLike | pd.Series,
    tables: FeatureTables,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables' features at explicit (customer, instant) pairs, one row per pair in the
    given order (``event_timestamp``: the instant in whole seconds), from the events strictly before it.

    Instants are Unix seconds or timestamps; a fractional second is rounded up, as events are
    rounded down, so "before" means the same for both. The inputs are validated first
    (:func:`pair_features` takes data ``training.events`` already validated). Used by the served
    evaluation and the live state's parity test.
    """
    data = validate(events, customers)
    return pair_features(data.events, data.customers, customer_ids, instants, tables)


def pair_features(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    customer_ids: npt.ArrayLike,
    instants: npt.ArrayLike | pd.Series,
    tables: FeatureTables,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`features_at` on events and customers as ``training.events`` returns them."""
    people = _Customers.of(customers)
    ids = pd.Series(np.asarray(customer_ids, dtype=object))
    cust = pd.Index(people.ids.to_numpy(zero_copy_only=False)).get_indexer(ids).astype(np.int64)
    if (cust < 0).any():
        raise ValueError(f"{int((cust < 0).sum()):,} pairs name customers absent from customers")
    s = _instant_seconds(instants)
    if len(s) != len(cust):
        raise ValueError(f"{len(cust):,} customer ids but {len(s):,} instants")
    if not len(s):
        return tables.stats.empty_table().to_pandas(), tables.histograms.empty_table().to_pandas()
    history = _Timeline.of(events, people)
    grid = _Grid.pairs(people, history, cust, s)
    engagements = history.engagements()
    stats = _stats_table(tables.stats, people, history, engagements, grid)
    histograms = _pair_histograms(tables.histograms, people, engagements, grid)
    return stats.to_pandas(), histograms.to_pandas()


def _instant_seconds(instants: npt.ArrayLike | pd.Series) -> np.ndarray:
    """Whole Unix seconds, rounded up: an event (rounded down) is before ``s`` iff before the instant."""
    if isinstance(instants, pd.Series) and pd.api.types.is_datetime64_any_dtype(instants.dtype):
        utc = instants.dt.tz_localize("UTC") if instants.dt.tz is None else instants
        nanoseconds = utc.dt.tz_convert("UTC").dt.as_unit("ns").dt.tz_localize(None).to_numpy().view(np.int64)
        return -(-nanoseconds // 1_000_000_000)
    return np.ceil(np.asarray(instants, dtype=np.float64)).astype(np.int64)


def _pair_histograms(schema: pa.Schema, people: _Customers, engagements: _Timeline, grid: _Grid) -> pa.Table:
    """The histograms of each pair from its customer's engagements before the instant (null
    without one): each pair sums its own engagements, weighted relative to the latest instant."""
    at, start = engagements.before(grid.cust, grid.s), engagements.start(grid.cust)
    counts = at - start
    present, absent = np.flatnonzero(counts > 0), np.flatnonzero(counts == 0)
    n = counts[present]
    row = np.repeat(np.arange(len(present)), n)
    member = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n - start[present], n)
    zones = people.zones.to_numpy(zero_copy_only=False)
    slots = local_hour_of_week(engagements.t, zones[engagements.cust])  # once per engagement
    weights = np.exp2((engagements.t - int(grid.s.max())) / HIST_HALF_LIFE)
    totals = np.zeros((len(present), HOURS_PER_WEEK))
    np.add.at(totals, (row, slots[member]), weights[member])
    ids = people.ids.take(grid.cust)
    found = _histogram_batch(schema, ids.take(present), grid.s[present], totals, n.astype(np.float64))
    empty = [ids.take(absent), _timestamps(grid.s[absent])]
    empty += [pa.nulls(len(absent), field.type) for field in list(schema)[len(empty) :]]
    combined = pa.concat_tables(
        [pa.Table.from_batches([found], schema=schema), pa.Table.from_arrays(empty, schema=schema)]
    )
    return combined.take(np.argsort(np.concatenate([present, absent]), kind="stable"))


def _lists(matrix: np.ndarray) -> pa.ListArray:
    """Rows of a float32 matrix as a list<float32> column, without a Python object per row."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds.astype(np.int64) * 1_000_000, pa.int64()).cast(TIMESTAMP)


def engagements(events: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """Every engagement as the histograms count it: customer-initiated, bursts collapsed.

    Columns ``customer_id``, ``engaged_at`` (UTC), ``time_zone`` and ``slot`` (local hour of
    week), ordered by customer and time. Training's send-time labels use exactly this, so a
    label and the histogram feature can never disagree about what an engagement is.
    """
    people = _Customers.of(customers)
    found = _Timeline.of(events, people).engagements()
    zones = people.zones.take(found.cust).to_numpy(zero_copy_only=False)
    return pd.DataFrame(
        {
            "customer_id": people.ids.take(found.cust).to_numpy(zero_copy_only=False),
            "engaged_at": pd.to_datetime(found.t, unit="s", utc=True),
            "time_zone": zones,
            "slot": local_hour_of_week(found.t, zones),
        }
    )
