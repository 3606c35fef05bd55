"""``nudge score-audience``: a whole audience scored as of one instant, into one parquet file.

    nudge score-audience --repo feature_repo --models models --as-of 2026-05-05T00:00:00Z \\
        --out plan.parquet [--customers ids.txt]

One row per customer: propensity, decision and reason, best send time (UTC and local), time
zone, top slots, feature status and age, model versions, the best channel (its engage
probability and send time), the reminder's send time and the top propensity reason
(columns: :data:`SCHEMA`).

* Features are point in time as of ``T = --as-of``: for each feature view, the newest row of
  its offline table (the view's file source) at or before ``T``, none when older than the
  view's TTL at ``T``: the rule Feast's historical retrieval applies, and what the online store
  holds at ``T`` after a materialisation up to ``T``. Rows written 1 µs before engagements are
  rows like the others (exact at their instant).
* Reading is one bounded pass per view (:class:`AsOfRows`): DuckDB finds each audience
  customer's row number from the key columns only (``customer_id``, ``event_timestamp``),
  then one sequential pass over the table's row groups (those holding no chosen row are not
  even decoded) takes those rows and spills them to a file per chunk of the audience, so no
  wide row is ever sorted, hashed or held beyond a batch. Each chunk is then joined from its
  files in the audience's order.
* Scoring is the server's, column-wise (:func:`score_rows`): the chunk's features as columns
  through :meth:`service.scorer.Scorer.score_columns` (models, policy, feature status) with
  every query at ``now = T``, window [T, T + --window-hours), the server's default quiet
  hours unless ``--quiet`` is given. So a row equals what ``Score`` answers at ``now = T`` from
  an online store materialised up to ``T``. The Spark engine calls :func:`score_rows` on its
  own record batches of joined rows (:class:`RowScorer` builds without Feast).
* The audience: every customer with a row at or before ``T`` in the table of the view the
  time zone is read from (sorted by id), or the ids of ``--customers`` (in the file's order,
  duplicates dropped). An id the server would refuse gets its ``error`` and no score.
* Memory stays bounded: DuckDB works within ``--memory-limit`` on the key columns, Python
  holds one batch of a table and one chunk of the audience. The file is written beside
  ``--out`` under a temporary name and renamed when complete, so an interrupted run leaves
  ``--out`` as it was; rerunning is safe.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nudge.contract.channel_model import CHANNEL_NAMES
from nudge.inputs import (
    UserError,
    check,
    feast_repo_problem,
    missing_input,
    parse_time,
    positive_float,
    positive_int,
    unwritable_file,
    user_errors,
)
from service import config
from service.feature_columns import FeatureColumns, timestamp_column
from service.online.base import CustomerFeatures
from service.online.layout import Layout, ViewLayout, build_layout
from service.policy import Decision, to_us
from service.policy_columns import DECISIONS
from service.scorer import CONTEXT_REFS, STATUSES, TIME_ZONE_REF, Queries, Scorer, Scores

if TYPE_CHECKING:
    from feast import FeatureStore

CHUNK = 50_000  # customers per chunk: scored together, written as one row group
BATCH = 65_536  # table rows decoded at a time in the sequential pass

# Settings the command shares with `nudge serve` (same flags, env variables and defaults), so an
# audience is planned with the thresholds the server answers with.
POLICY_SETTINGS = (
    "min_propensity",
    "max_dormant_days",
    "stale_after_hours",
    "default_time_zone",
    "quiet_start_hour",
    "quiet_end_hour",
    "top_slots",
)

_UTC_US = pa.timestamp("us", tz="UTC")
_SLOT = pa.struct([("start_time", _UTC_US), ("probability", pa.float64())])
SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("purchase_propensity", pa.float64()),
        ("horizon_days", pa.int32()),
        ("decision", pa.string()),  # SEND_NOW, SCHEDULE or SUPPRESS
        ("reason", pa.string()),
        ("best_send_time", _UTC_US),  # null when SUPPRESS
        ("best_send_time_local", pa.string()),  # ISO-8601 with the zone's offset
        ("time_zone", pa.string()),
        ("time_zone_defaulted", pa.bool_()),
        ("top_slots", pa.list_(_SLOT)),
        ("feature_status", pa.string()),  # FRESH, STALE, MISSING (UNAVAILABLE cannot happen here)
        ("feature_age_seconds", pa.float64()),
        ("propensity_model", pa.string()),  # model versions
        ("send_time_model", pa.string()),
        ("best_channel", pa.string()),  # EMAIL, SMS or PUSH: the first of the ranked channels
        ("best_channel_probability", pa.float64()),  # its engage probability at its best slot
        ("best_channel_send_time", _UTC_US),  # that slot's start
        ("channels_defaulted", pa.bool_()),  # the population's ranking (no sends to learn from)
        ("reminder_send_time", _UTC_US),  # null when there is no reminder to send
        ("top_propensity_reason", pa.string()),  # the reason code that moved the propensity most
        ("error", pa.string()),  # why the row has no score (an id the server refuses), else null
    ]
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, required=True, help="Feast repo (feature_store.yaml).")
    parser.add_argument("--feature-store-yaml", type=Path, help="Alternative feature_store.yaml.")
    parser.add_argument("--models", type=Path, required=True, help="Models directory (as nudge serve).")
    parser.add_argument("--as-of", required=True, help="Score as of this ISO-8601 time (UTC if no offset).")
    parser.add_argument(
        "--customers",
        type=Path,
        help="Customer ids: .parquet or .csv with a customer_id column, else one id per line "
        "(default: every customer of the stats table at --as-of).",
    )
    parser.add_argument("--out", type=Path, required=True, help="Output parquet file.")
    parser.add_argument(
        "--window-hours", type=positive_float, default=24.0, help="Send window [T, T + N h) (default 24)."
    )
    parser.add_argument("--quiet", help="Local quiet hours START-END, e.g. 22-7 (default: the server's).")
    parser.add_argument("--chunk", type=positive_int, default=CHUNK, help=f"Customers per chunk ({CHUNK}).")
    parser.add_argument(
        "--memory-limit", default="1GB", help="DuckDB's memory limit; it spills beyond (default 1GB)."
    )
    parser.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: DuckDB and this process; spark: Apache Spark (service/audience_spark.py).",
    )
    parser.add_argument(
        "--spark-master", help="With --engine spark: the master URL (default: spark-submit's, else local[2])."
    )
    config.add_arguments(parser, only=POLICY_SETTINGS)


def run(args: argparse.Namespace) -> int:
    with user_errors(ValueError):
        as_of = parse_time(args.as_of, "--as-of")
        quiet = _quiet_hours(args.quiet)
    check(
        feast_repo_problem(args.repo, args.feature_store_yaml),
        missing_input(args.customers, "--customers"),
        None if args.models.is_dir() else f"--models {args.models}: no such directory; train first",
        unwritable_file(args.out, "--out"),
        None if args.out.suffix == ".parquet" else f"--out {args.out}: give a .parquet file name",
    )
    settings = config.Settings(
        repo=args.repo,
        feature_store_yaml=args.feature_store_yaml,
        models=args.models,
        plaintext=True,  # no server here: the transport settings must only pass validation
        **{name: getattr(args, name) for name in POLICY_SETTINGS},
    )
    config.validate(settings)
    started = time.perf_counter()
    if args.engine == "spark":
        from service.audience_spark import score_audience_spark

        rows = score_audience_spark(
            settings,
            as_of,
            args.out,
            master=args.spark_master,
            customers=args.customers,
            window=timedelta(hours=args.window_hours),
            quiet=quiet,
            chunk=args.chunk,
            progress=Progress(sys.stderr),
        )
    else:
        rows = score_audience(
            settings,
            as_of,
            args.out,
            customers=args.customers,
            window=timedelta(hours=args.window_hours),
            quiet=quiet,
            chunk=args.chunk,
            memory_limit=args.memory_limit,
            progress=Progress(sys.stderr),
        )
    elapsed = time.perf_counter() - started
    print(f"{rows:,} customers scored as of {as_of.isoformat()} into {args.out} in {elapsed:.1f} s")
    return 0


def _quiet_hours(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    start, _, end = text.partition("-")
    if not (start.strip().isdigit() and end.strip().isdigit()) or max(int(start), int(end)) > 23:
        raise ValueError(f"--quiet: expected local hours START-END within 0..23 such as 22-7, got {text!r}")
    return int(start), int(end)


# --------------------------------------------------------------------------- the job


def score_audience(
    settings: config.Settings,
    as_of: datetime,
    out: Path,
    *,
    customers: Path | None = None,
    window: timedelta = timedelta(hours=24),
    quiet: tuple[int, int] | None = None,
    chunk: int = CHUNK,
    memory_limit: str = "1GB",
    progress: Progress | None = None,
) -> int:
    """Score the audience as of ``as_of`` into ``out`` (module docstring); returns its size."""
    rows, store, layout = prepare_job(settings, as_of, window, quiet)
    with AsOfRows(store, layout, as_of, memory_limit) as tables:
        total = tables.set_audience(read_ids(customers) if customers is not None else None)
        done = 0
        with replacing(out) as temporary, pq.ParquetWriter(temporary, rows.schema) as writer:
            for batch in tables.chunks(chunk):
                writer.write_batch(score_rows(rows, batch))
                done += batch.num_rows
                if progress is not None:
                    progress.update(done, total)
            if done == 0:
                writer.write_table(rows.schema.empty_table())
    if progress is not None:
        progress.finish()
    return done


def prepare_job(
    settings: config.Settings, as_of: datetime, window: timedelta, quiet: tuple[int, int] | None
) -> tuple[RowScorer, FeatureStore, Layout]:
    """What both engines start from: the server's scorer (models and registry checked) over
    offline rows, the Feast store, and the layout of the feature tables to read."""
    from service.server import build_scorer

    layouts: list[Layout] = []

    def offline_rows(store: FeatureStore, refs: list[str]) -> OfflineRows:
        layouts.append(build_layout(store, refs))
        return OfflineRows(tuple(refs))

    scorer, store = build_scorer(settings, offline_rows)
    return RowScorer(scorer, as_of, window, quiet), store, layouts[0]


@contextlib.contextmanager
def replacing(out: Path) -> Iterator[Path]:
    """A temporary file beside ``out`` that replaces it when the block completes (removed if not)."""
    descriptor, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)


def read_ids(path: Path) -> pa.Table:
    """The ids of ``--customers`` as a one-column table, in the file's order."""
    with user_errors(pa.ArrowInvalid, KeyError, UnicodeDecodeError, OSError):
        if path.suffix == ".parquet":
            table = pq.read_table(path, columns=["customer_id"])
        elif path.suffix == ".csv":
            import pyarrow.csv as pacsv

            options = pacsv.ConvertOptions(column_types={"customer_id": pa.string()})
            table = pacsv.read_csv(path, convert_options=options).select(["customer_id"])
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            table = pa.table({"customer_id": [line.strip() for line in lines if line.strip()]})
    return table.cast(pa.schema([("customer_id", pa.string())]))


# --------------------------------------------------------------------------- scoring joined rows


class OfflineRows:
    """The scorer's feature reader when features come as joined rows (:func:`score_rows`): it
    names the features to read and reads none itself; a per-customer read is a bug."""

    def __init__(self, feature_refs: tuple[str, ...]) -> None:
        self.feature_refs = feature_refs

    def read(self, customer_ids: Sequence[str], now: datetime) -> list[CustomerFeatures]:
        raise RuntimeError("score-audience scores joined rows (score_rows); it reads no customer by id")

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class RowScorer:
    """What scoring joined feature rows as of ``as_of`` needs, fixed for a job: the scorer
    (models, policy settings) and the queries' window and quiet hours (None: the server's).
    Build it once per process: :func:`score_audience` from the server's start-up (registry
    checked), a Spark executor with :meth:`load` (no Feast)."""

    scorer: Scorer
    as_of: datetime
    window: timedelta = timedelta(hours=24)
    quiet: tuple[int, int] | None = None

    @classmethod
    def load(
        cls,
        settings: config.Settings,
        as_of: datetime,
        window: timedelta = timedelta(hours=24),
        quiet: tuple[int, int] | None = None,
    ) -> RowScorer:
        """The newest models of ``settings.models`` and the settings' policy, without Feast
        (the driver has checked the registry serves the models' features)."""
        from service.models import load_latest

        models = load_latest(settings.models)
        refs = tuple(dict.fromkeys([*models.feature_refs, *CONTEXT_REFS]))
        return cls(Scorer(OfflineRows(refs), models, settings), as_of, window, quiet)

    @property
    def input_columns(self) -> list[str]:
        """The columns :func:`score_rows` reads: ``customer_id``, each feature under its ref
        ("view:feature"; null where the view has no row as of T, or it is past its TTL) and
        each view's row's event time under ``timestamp_column(view)`` (null where none)."""
        kinds = self.scorer.feature_kinds()
        return ["customer_id", *self.scorer.reader.feature_refs, *map(timestamp_column, kinds.views)]

    @property
    def schema(self) -> pa.Schema:
        """:data:`SCHEMA` with the job's settings and model versions as metadata."""
        metadata = {
            "as_of": self.as_of.isoformat(),
            "window_hours": f"{self.window.total_seconds() / 3600:g}",
            "quiet_hours": "" if self.quiet is None else f"{self.quiet[0]}-{self.quiet[1]}",
            **{f"model.{name}": version for name, version in self.scorer.models.versions.items()},
        }
        return SCHEMA.with_metadata({f"nudge.{k}": v for k, v in metadata.items()})


def score_rows(job: RowScorer, rows: pa.RecordBatch) -> pa.RecordBatch:
    """One record batch of joined feature rows as of ``job.as_of`` (the columns of
    :attr:`RowScorer.input_columns`, one row per customer) scored into one record batch of
    :attr:`RowScorer.schema`, row for row: what ``Score`` answers at ``now = as_of`` for each.

    Column-wise throughout (features, models, policy); imports no Feast, so a Spark task can
    call it per Arrow batch (``mapInArrow``). Raises ValueError naming a missing column."""
    n = rows.num_rows
    ids = rows.column("customer_id").cast(pa.string())
    us = to_us(job.as_of, "as_of")
    quiet = np.full((n, 2), -1 if job.quiet is None else job.quiet, dtype=np.int64)
    queries = Queries(
        customer_ids=ids.to_pylist(),
        now_us=np.full(n, us, dtype=np.int64),
        window_start_us=np.full(n, us, dtype=np.int64),
        window_end_us=np.full(n, us + job.window // timedelta(microseconds=1), dtype=np.int64),
        quiet=quiet,
        channel=["UNSPECIFIED"] * n,
        error=np.full(n, None, dtype=object),
    )
    scorer = job.scorer
    models = scorer.models
    features = FeatureColumns.from_arrow(scorer.feature_kinds(models), rows)
    scores = scorer.score_columns(scorer.resolve(queries, job.as_of), features, models)
    return _record_batch(scores, ids, job.schema)


def _record_batch(scores: Scores, ids: pa.Array, schema: pa.Schema) -> pa.RecordBatch:
    """The output rows of scored customers, built a column at a time."""
    plans = scores.plans
    n = len(scores)
    error = np.array([e is not None for e in scores.error.tolist()], dtype=np.bool_)
    suppressed = plans.decision == DECISIONS.index(Decision.SUPPRESS)
    first = plans.channel_order[:, 0]
    has_channel = (plans.channel_count > 0) & ~error
    rows = np.arange(n)
    counts = np.where(error, 0, plans.top_count)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    keep = np.arange(plans.top_us.shape[1]) < counts[:, None]
    slots = pa.StructArray.from_arrays(
        [
            pa.array(plans.top_us[keep], type=pa.int64()).cast(_UTC_US),
            pa.array(plans.top_p[keep], type=pa.float64()),
        ],
        fields=list(_SLOT),
    )
    reminder = plans.reminders.planned & ~error
    codes = scores.reason_codes
    top_reason = codes[:, 0] if codes.shape[1] else np.full(n, None, dtype=object)
    versions = scores.models.versions
    columns = {
        "customer_id": ids,
        "purchase_propensity": pa.array(scores.propensity, mask=error),
        "horizon_days": pa.array(np.full(n, scores.models.horizon_days, dtype=np.int32), mask=error),
        "decision": _strings([d.value for d in DECISIONS], plans.decision, error),
        "reason": pa.array(plans.reason, type=pa.string()),
        "best_send_time": _times(plans.best_us, error | suppressed),
        "best_send_time_local": pa.array(plans.best_local, type=pa.string()),
        "time_zone": pa.array(plans.zone, type=pa.string()),
        "time_zone_defaulted": pa.array(plans.zone_defaulted, mask=error),
        "top_slots": pa.ListArray.from_arrays(offsets, slots, mask=pa.array(error)),
        "feature_status": _strings([s.value for s in STATUSES], scores.status, error),
        "feature_age_seconds": pa.array(scores.age_seconds, mask=error),
        "propensity_model": pa.array([versions.get("propensity")] * n, type=pa.string(), mask=error),
        "send_time_model": pa.array([versions.get("send_time")] * n, type=pa.string(), mask=error),
        "best_channel": _strings(list(CHANNEL_NAMES), first, ~has_channel),
        "best_channel_probability": pa.array(plans.channel_p[rows, first], mask=~has_channel),
        "best_channel_send_time": _times(plans.channel_us[rows, first], ~has_channel),
        "channels_defaulted": pa.array(plans.channels_defaulted, mask=error),
        "reminder_send_time": _times(plans.reminders.send_us, ~reminder),
        "top_propensity_reason": pa.array(top_reason, type=pa.string()),
        "error": pa.array(scores.error, type=pa.string()),
    }
    return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)


def _strings(
    names: list[str], index: npt.NDArray[np.integer[Any]], missing: npt.NDArray[np.bool_]
) -> pa.Array:
    """``names[index[i]]`` per row, null where ``missing``."""
    indices = pa.array(index.astype(np.int32), mask=missing)
    return pa.DictionaryArray.from_arrays(indices, pa.array(names, type=pa.string())).cast(pa.string())


def _times(us: npt.NDArray[np.int64], missing: npt.NDArray[np.bool_]) -> pa.Array:
    """µs since the epoch as UTC timestamps, null where ``missing``."""
    return pa.array(us, type=pa.int64(), mask=missing).cast(_UTC_US)


# --------------------------------------------------------------------------- reading as of T


class AsOfRows:
    """Each view's offline rows as of ``as_of`` (newest at or before it, within the TTL) for an
    audience, joined per customer in chunks, in bounded memory (module docstring)."""

    def __init__(self, store: FeatureStore, layout: Layout, as_of: datetime, memory_limit: str) -> None:
        import duckdb

        self.layout, self.as_of = layout, as_of
        self.paths = [_source_path(store, view.name) for view in layout.views]
        # A database file of its own (removed on close): DuckDB then evicts what exceeds the memory
        # limit to disk, and the temporary tables with it. The chunks' spill files go beside it.
        self._scratch = tempfile.TemporaryDirectory(prefix="nudge-audience-")
        self.scratch = Path(self._scratch.name)
        self.con = duckdb.connect(
            str(self.scratch / "audience.duckdb"),
            config={"memory_limit": memory_limit, "preserve_insertion_order": False},
        )
        self._ids: pa.Array = pa.array([], type=pa.string())

    def __enter__(self) -> AsOfRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()
        self._scratch.cleanup()

    def set_audience(self, ids: pa.Table | None) -> int:
        """The customers to score (None: every customer of the time zone's view at ``as_of``),
        numbered from 0 in the order they are scored."""
        con = self.con
        with _duckdb_errors():
            if ids is None:
                view = TIME_ZONE_REF.partition(":")[0]
                index = [v.name for v in self.layout.views].index(view)
                con.execute(
                    "CREATE TEMP TABLE audience AS SELECT customer_id, row_number() OVER (ORDER BY customer_id) - 1 "
                    f"AS ord FROM (SELECT DISTINCT customer_id FROM {self._scan(index)} "
                    "WHERE event_timestamp <= $as_of AND customer_id IS NOT NULL)",
                    {"as_of": self.as_of},
                )
            else:
                given = ids.append_column("position", pa.array(np.arange(len(ids), dtype=np.int64)))
                con.register("given_ids", given)
                con.execute(
                    "CREATE TEMP TABLE audience AS SELECT customer_id, row_number() OVER (ORDER BY first) - 1 AS ord "
                    "FROM (SELECT customer_id, min(position) AS first FROM given_ids "
                    "WHERE customer_id IS NOT NULL GROUP BY customer_id)"
                )
                con.unregister("given_ids")
            table = con.execute("SELECT customer_id FROM audience ORDER BY ord").fetch_arrow_table()
        self._ids = table.column(0).combine_chunks()
        return len(self._ids)

    def chunks(self, chunk: int) -> Iterator[pa.RecordBatch]:
        """The audience's joined rows in order, ``chunk`` customers at a time: ``customer_id``,
        each view's row's event time under ``timestamp_column(view)`` (null when none) and its
        features under their refs (the columns :func:`score_rows` reads)."""
        total = len(self._ids)
        count = math.ceil(total / chunk)
        picks = [self._newest_rows(i) for i in range(len(self.layout.views))]
        self.con.close()  # DuckDB's work is done: its buffers go before the wide rows come
        for i, view in enumerate(self.layout.views):
            self._spill(i, view, picks[i], chunk, count)
            picks[i] = picks[i].slice(0, 0)
        for c in range(count):
            start = c * chunk
            size = min(chunk, total - start)
            columns: dict[str, pa.Array] = {"customer_id": self._ids.slice(start, size)}
            for i, view in enumerate(self.layout.views):
                part = self._read_spill(i, c, view)
                # Where each of the chunk's customers is in ``part`` (null: no row as of T).
                where = np.full(size, -1, dtype=np.int64)
                where[part.column("ord").to_numpy() - start] = np.arange(part.num_rows)
                taken = part.take(pa.array(where, mask=where < 0))
                columns[timestamp_column(view.name)] = taken.column("event_timestamp").combine_chunks()
                for feature, ref in zip(view.features, view.refs, strict=True):
                    columns[ref] = taken.column(feature).combine_chunks()
            yield pa.RecordBatch.from_pydict(columns)

    def _newest_rows(self, index: int) -> pa.Table:
        """For each audience customer with a row as of T in view ``index``'s table: its position
        in the audience (``ord``), that row's number in the file (``row``) and event time, sorted
        by row number; read from the key columns only. Refuses two newest rows of one customer."""
        view = self.layout.views[index]
        params: dict[str, Any] = {"as_of": self.as_of}
        where = "event_timestamp <= $as_of"
        if view.ttl is not None:
            where += " AND event_timestamp >= $oldest"
            params["oldest"] = self.as_of - view.ttl
        scan = f"read_parquet('{_sql_text(self.paths[index])}', file_row_number = true)"
        sql = (
            f"WITH k AS (SELECT customer_id, event_timestamp, file_row_number FROM {scan} WHERE {where}), "
            "newest AS (SELECT k.customer_id, max(event_timestamp) AS ts FROM k "
            "JOIN audience a ON a.customer_id = k.customer_id GROUP BY k.customer_id) "
            "SELECT a.ord, min(k.file_row_number) AS row, count(*) AS rows, n.ts AS event_timestamp FROM k "
            "JOIN newest n ON k.customer_id = n.customer_id AND k.event_timestamp = n.ts "
            "JOIN audience a ON a.customer_id = k.customer_id GROUP BY a.ord, n.ts ORDER BY row"
        )
        with _duckdb_errors():
            table = self.con.execute(sql, params).fetch_arrow_table()
        if table.num_rows and pc.max(table.column("rows")).as_py() > 1:
            raise UserError(
                f"{self.paths[index]}: two rows of one customer at the same event_timestamp; "
                "which one Feast serves is undefined: fix the table",
                exit_code=1,
            )
        return table

    def _spill(self, index: int, view: ViewLayout, picks: pa.Table, chunk: int, count: int) -> None:
        """One sequential pass over view ``index``'s table: the picked rows, with their
        audience position and event time, appended to the spill file of their chunk."""
        rows = picks.column("row").to_numpy()
        order = picks.column("ord").to_numpy()
        stamps = picks.column("event_timestamp").cast(_UTC_US).combine_chunks()
        parquet = pq.ParquetFile(self.paths[index])
        schema = pa.schema(
            [("ord", pa.int64()), ("event_timestamp", _UTC_US)]
            + [parquet.schema_arrow.field(f) for f in view.features]
        )
        writers = [pa.ipc.new_file(self._spill_path(index, c), schema) for c in range(count)]
        try:
            offset = 0
            for group in range(parquet.num_row_groups):
                size = parquet.metadata.row_group(group).num_rows
                if np.searchsorted(rows, offset) == np.searchsorted(rows, offset + size):
                    offset += size  # no chosen row: not even decoded
                    continue
                for batch in parquet.iter_batches(BATCH, row_groups=[group], columns=list(view.features)):
                    lo, hi = np.searchsorted(rows, [offset, offset + batch.num_rows])
                    if hi > lo:
                        # The picked rows grouped by chunk, in one take of the wide columns.
                        by_chunk = np.argsort(order[lo:hi] // chunk, kind="stable")
                        picked = lo + by_chunk
                        taken = batch.take(pa.array(rows[picked] - offset))
                        bounds = np.searchsorted(order[picked] // chunk, np.arange(count + 1))
                        arrays = [pa.array(order[picked]), stamps.take(pa.array(picked)), *taken.columns]
                        part = pa.RecordBatch.from_arrays(arrays, schema=schema)
                        for c in np.flatnonzero(np.diff(bounds)).tolist():
                            writers[c].write_batch(part.slice(bounds[c], bounds[c + 1] - bounds[c]))
                    offset += batch.num_rows
        finally:
            for writer in writers:
                writer.close()

    def _read_spill(self, index: int, chunk: int, view: ViewLayout) -> pa.Table:
        path = self._spill_path(index, chunk)
        with pa.OSFile(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        path.unlink()
        return table

    def _spill_path(self, index: int, chunk: int) -> Path:
        return self.scratch / f"view{index}-chunk{chunk}.arrow"

    def _scan(self, index: int) -> str:
        return f"read_parquet('{_sql_text(self.paths[index])}')"


@contextlib.contextmanager
def _duckdb_errors() -> Iterator[None]:
    """DuckDB's errors as one line: running out of ``--memory-limit`` says what to do."""
    import duckdb

    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        raise UserError(
            f"DuckDB ran out of --memory-limit reading the tables as of T ({str(exc).splitlines()[0]}); "
            "raise --memory-limit or score fewer --customers per run",
            exit_code=1,
        ) from exc
    except duckdb.Error as exc:
        raise UserError(f"reading the offline tables: {str(exc).splitlines()[0]}", exit_code=1) from exc


def _source_path(store: FeatureStore, view_name: str) -> str:
    """The parquet file of a view's batch source (push sources: their batch source)."""
    view = store.get_feature_view(view_name)
    path = getattr(view.batch_source, "path", None)
    if not path:
        raise UserError(f"feature view {view_name}: its source is not a file source; cannot read it as of T")
    if not Path(path).is_file():
        raise UserError(f"feature view {view_name}: {path}: no such file; run nudge features first")
    return str(path)


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


@dataclass
class Progress:
    """One progress line on stderr: rewritten in place on a terminal, a line per chunk otherwise."""

    stream: Any
    started: float = field(default_factory=time.perf_counter)

    def update(self, done: int, total: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        share = done / total if total else 1.0
        line = f"{done:,}/{total:,} customers ({share:.0%}), {done / elapsed:,.0f}/s"
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.stream.write(f"\r{line}" if tty else f"{line}\n")
        self.stream.flush()

    def finish(self) -> None:
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\n")
