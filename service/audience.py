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
  rows like the others (exact at their instant). DuckDB finds them for every customer in two
  vectorised passes over each table (newest time per customer, then those rows), and streams
  the joined rows to Python in chunks, in the audience's order.
* Scoring is the server's: each chunk goes through :meth:`service.scorer.Scorer.score`
  (models, policy, feature status) with a reader over the chunk's rows, every query at
  ``now = T``, window [T, T + --window-hours), the server's default quiet hours unless
  ``--quiet`` is given. So a row equals what ``Score`` answers at ``now = T`` from an online
  store materialised up to ``T``.
* The audience: every customer with a row at or before ``T`` in the table of the view the
  time zone is read from (sorted by id), or the ids of ``--customers`` (in the file's order,
  duplicates dropped). An id the server would refuse gets its ``error`` and no score.
* Memory stays bounded: DuckDB works within ``--memory-limit`` (spilling to a temp directory),
  Python holds one chunk. The file is written beside ``--out`` under a temporary name and
  renamed when complete, so an interrupted run leaves ``--out`` as it was; rerunning is safe.
"""

from __future__ import annotations

import argparse
import contextlib
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
import pyarrow as pa
import pyarrow.parquet as pq

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
from service.online.base import CustomerFeatures
from service.online.layout import Layout, build_layout
from service.scorer import TIME_ZONE_REF, InvalidQuery, ScoreQuery, ScoreResult

if TYPE_CHECKING:
    from feast import FeatureStore

CHUNK = 50_000  # customers per chunk: scored together, written as one row group

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
        ("top_slots", pa.list_(pa.struct([("start_time", _UTC_US), ("probability", pa.float64())]))),
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
    rows = score_audience(
        settings,
        as_of,
        args.out,
        customers=args.customers,
        window=timedelta(hours=args.window_hours),
        quiet=quiet,
        chunk=args.chunk,
        memory_limit=args.memory_limit,
        progress=_Progress(sys.stderr),
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
    progress: _Progress | None = None,
) -> int:
    """Score the audience as of ``as_of`` into ``out`` (module docstring); returns its size."""
    from service.server import build_scorer

    readers: list[AsOfReader] = []

    def make_reader(store: FeatureStore, refs: list[str]) -> AsOfReader:
        readers.append(AsOfReader(build_layout(store, refs), as_of))
        return readers[0]

    scorer, store = build_scorer(settings, make_reader)
    reader = readers[0]
    tables = AsOfTables(store, reader.layout, as_of, memory_limit)
    try:
        total = tables.set_audience(_read_ids(customers) if customers is not None else None)
        metadata = {
            "as_of": as_of.isoformat(),
            "window_hours": f"{window.total_seconds() / 3600:g}",
            "quiet_hours": "" if quiet is None else f"{quiet[0]}-{quiet[1]}",
            **{f"model.{name}": version for name, version in scorer.models.versions.items()},
        }
        schema = SCHEMA.with_metadata({f"nudge.{k}": v for k, v in metadata.items()})
        query = ScoreQuery("", now=as_of, window_start=as_of, window_end=as_of + window, quiet_hours=quiet)
        done = 0
        with _replacing(out) as temporary, pq.ParquetWriter(temporary, schema) as writer:
            for batch in tables.batches(chunk):
                ids = reader.load(batch)
                results = scorer.score([_with_id(query, cid) for cid in ids], clock=as_of)
                writer.write_table(pa.Table.from_batches([to_batch(ids, results, schema)]))
                done += len(ids)
                if progress is not None:
                    progress.update(done, total)
            if done == 0:
                writer.write_table(schema.empty_table())
        if progress is not None:
            progress.finish()
        return done
    finally:
        tables.close()
        scorer.reader.close()


def _with_id(query: ScoreQuery, customer_id: str) -> ScoreQuery:
    return ScoreQuery(
        customer_id, query.now, query.window_start, query.window_end, query.quiet_hours, query.channel
    )


@contextlib.contextmanager
def _replacing(out: Path) -> Iterator[Path]:
    """A temporary file beside ``out`` that replaces it when the block completes (removed if not)."""
    descriptor, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)


def _read_ids(path: Path) -> pa.Table:
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


# --------------------------------------------------------------------------- reading as of T


class AsOfTables:
    """Each view's offline rows as of ``as_of`` (newest at or before it, within the TTL), joined
    per customer of the audience and streamed in chunks by DuckDB."""

    def __init__(self, store: FeatureStore, layout: Layout, as_of: datetime, memory_limit: str) -> None:
        import duckdb

        self.layout, self.as_of = layout, as_of
        self.paths = [_source_path(store, view.name) for view in layout.views]
        # A database file of its own (removed on close): DuckDB then evicts what exceeds the memory
        # limit to disk, and the temporary tables with it.
        self._scratch = tempfile.TemporaryDirectory(prefix="nudge-audience-")
        self.con = duckdb.connect(
            str(Path(self._scratch.name) / "audience.duckdb"),
            config={"memory_limit": memory_limit, "preserve_insertion_order": False},
        )

    def set_audience(self, ids: pa.Table | None) -> int:
        """The customers to score (None: every customer of the time zone's view at ``as_of``)."""
        con = self.con
        if ids is None:
            view = TIME_ZONE_REF.partition(":")[0]
            index = [v.name for v in self.layout.views].index(view)
            con.execute(
                "CREATE TEMP TABLE audience AS SELECT customer_id, row_number() OVER (ORDER BY customer_id) "
                f"AS ord FROM (SELECT DISTINCT customer_id FROM {self._scan(index)} "
                "WHERE event_timestamp <= $as_of AND customer_id IS NOT NULL)",
                {"as_of": self.as_of},
            )
        else:
            given = ids.append_column("ord", pa.array(np.arange(len(ids), dtype=np.int64)))
            con.register("given_ids", given)
            con.execute(
                "CREATE TEMP TABLE audience AS SELECT customer_id, min(ord) AS ord FROM given_ids "
                "WHERE customer_id IS NOT NULL GROUP BY customer_id"
            )
            con.unregister("given_ids")
        (total,) = con.execute("SELECT count(*) FROM audience").fetchone() or (0,)
        return int(total)

    def batches(self, chunk: int) -> Iterator[pa.RecordBatch]:
        """The audience's rows in order: ``customer_id``, per view ``_ts{i}`` (its row's event
        time, null when none) and its features under their refs."""
        parts, selects, joins = [], ["a.ord", "a.customer_id"], []
        params: dict[str, Any] = {"as_of": self.as_of}
        for i, view in enumerate(self.layout.views):
            where = "event_timestamp <= $as_of"
            if view.ttl is not None:
                where += f" AND event_timestamp >= $oldest{i}"
                params[f"oldest{i}"] = self.as_of - view.ttl
            scan = self._scan(i)
            parts.append(
                f"newest{i} AS (SELECT customer_id, max(event_timestamp) AS ts FROM {scan} WHERE {where} "
                "AND customer_id IN (SELECT customer_id FROM audience) GROUP BY customer_id), "
                f"rows{i} AS (SELECT p.* FROM {scan} p JOIN newest{i} n "
                "ON p.customer_id = n.customer_id AND p.event_timestamp = n.ts)"
            )
            selects.append(f"v{i}.event_timestamp AS _ts{i}")
            selects += [
                f'v{i}."{_sql_name(f)}" AS "{_sql_name(r)}"'
                for f, r in zip(view.features, view.refs, strict=True)
            ]
            joins.append(f"LEFT JOIN rows{i} v{i} ON v{i}.customer_id = a.customer_id")
        sql = (
            f"WITH {', '.join(parts)} SELECT {', '.join(selects)} FROM audience a "
            f"{' '.join(joins)} ORDER BY a.ord"
        )
        with _duckdb_errors():
            reader = self.con.execute(sql, params).fetch_record_batch(chunk)
        with _duckdb_errors():
            yield from self._checked(_rebatched(reader, chunk))

    def _checked(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The batches, refused at the first customer with two rows (``ord`` must increase)."""
        last = -1  # ord counts from 0 (given ids) or 1 (the stats table's)
        for batch in batches:
            order = batch.column(0).to_numpy()
            if len(order) and (order[0] <= last or np.any(np.diff(order) <= 0)):
                raise UserError(
                    "a view's table has two rows of one customer at the same event_timestamp; "
                    "which one Feast serves is undefined: fix the table",
                    exit_code=1,
                )
            last = int(order[-1]) if len(order) else last
            yield batch

    def _scan(self, index: int) -> str:
        return f"read_parquet('{_sql_text(self.paths[index])}')"

    def close(self) -> None:
        self.con.close()
        self._scratch.cleanup()


def _rebatched(reader: pa.RecordBatchReader, size: int) -> Iterator[pa.RecordBatch]:
    """DuckDB's batches regrouped into ``size`` rows (it hands out smaller ones)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        pending.append(batch)
        count += batch.num_rows
        if count >= size:
            table = pa.Table.from_batches(pending).combine_chunks()
            for start in range(0, count - count % size, size):
                yield table.slice(start, size).to_batches()[0]
            rest = table.slice(count - count % size)
            pending, count = rest.to_batches() if rest.num_rows else [], rest.num_rows
    if count:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


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


def _sql_name(name: str) -> str:
    return name.replace('"', '""')


# --------------------------------------------------------------------------- the scorer's reader


class AsOfReader:
    """An :class:`~service.online.base.OnlineFeatureReader` over the as-of rows of one chunk:
    ``load`` hands it the chunk, the scorer then reads those customers as from an online store
    materialised up to ``as_of`` (each view's values, or all None when it has no row)."""

    def __init__(self, layout: Layout, as_of: datetime) -> None:
        self.layout, self.as_of = layout, as_of
        self.feature_refs = layout.feature_refs
        self._rows: dict[str, CustomerFeatures] = {}

    def load(self, batch: pa.RecordBatch) -> list[str]:
        """Make the chunk's rows the ones read; returns its ids in order."""
        ids: list[str] = batch.column("customer_id").to_pylist()
        values: dict[str, object] = {}
        per_view: list[tuple[list[datetime | None], list[str], list[list[object]]]] = []
        for i, view in enumerate(self.layout.views):
            stamps = batch.column(f"_ts{i}").to_pylist()
            columns = [_python_values(batch.column(ref)) for ref in view.refs]
            per_view.append((stamps, list(view.refs), columns))
        rows = {}
        for j, customer_id in enumerate(ids):
            values = {}
            times: dict[str, datetime | None] = {}
            for view, (stamps, refs, columns) in zip(self.layout.views, per_view, strict=True):
                times[view.name] = stamps[j]
                for ref, column in zip(refs, columns, strict=True):
                    values[ref] = column[j]
            rows[customer_id] = CustomerFeatures(customer_id, values, times)
        self._rows = rows
        return ids

    def read(self, customer_ids: Sequence[str], now: datetime) -> list[CustomerFeatures]:
        if now != self.as_of:
            raise ValueError(f"rows were read as of {self.as_of.isoformat()}, not {now.isoformat()}")
        empty = {view.name: None for view in self.layout.views}
        return [
            self._rows.get(cid) or CustomerFeatures(cid, dict.fromkeys(self.feature_refs), dict(empty))
            for cid in customer_ids
        ]

    def close(self) -> None:
        self._rows = {}


def _python_values(column: pa.Array) -> list[object]:
    """A column as the online readers return it: scalars as Python values (None when null),
    numeric lists as read-only numpy arrays."""
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        return column.to_pylist()
    flat = column.values.to_numpy(zero_copy_only=False)
    flat.flags.writeable = False
    offsets = column.offsets.to_numpy()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return [flat[offsets[i] : offsets[i + 1]] if valid[i] else None for i in range(len(column))]


# --------------------------------------------------------------------------- writing


def to_batch(
    ids: Sequence[str], results: Sequence[ScoreResult | InvalidQuery], schema: pa.Schema
) -> pa.RecordBatch:
    """The output rows of one chunk (``results`` in the order of ``ids``)."""
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for customer_id, result in zip(ids, results, strict=True):
        if isinstance(result, InvalidQuery):
            for name in schema.names:
                columns[name].append(None)
            columns["customer_id"][-1] = customer_id
            columns["error"][-1] = str(result)
            continue
        plan = result.plan
        columns["customer_id"].append(customer_id)
        columns["purchase_propensity"].append(result.purchase_propensity)
        columns["horizon_days"].append(result.horizon_days)
        columns["decision"].append(plan.decision.value)
        columns["reason"].append(plan.reason)
        columns["best_send_time"].append(plan.best_send_time)
        columns["best_send_time_local"].append(plan.best_send_time_local)
        columns["time_zone"].append(plan.time_zone)
        columns["time_zone_defaulted"].append(plan.time_zone_defaulted)
        columns["top_slots"].append([{"start_time": s, "probability": p} for s, p in plan.top_slots])
        columns["feature_status"].append(result.feature_status.value)
        columns["feature_age_seconds"].append(result.feature_age_seconds)
        columns["propensity_model"].append(result.models.get("propensity"))
        columns["send_time_model"].append(result.models.get("send_time"))
        best = plan.channels[0] if plan.channels else None
        columns["best_channel"].append(None if best is None else best.channel)
        columns["best_channel_probability"].append(None if best is None else best.probability)
        columns["best_channel_send_time"].append(None if best is None else best.start)
        columns["channels_defaulted"].append(plan.channels_defaulted)
        columns["reminder_send_time"].append(None if plan.reminder is None else plan.reminder.send_time)
        reasons = result.propensity_reasons
        columns["top_propensity_reason"].append(reasons[0][0] if reasons else None)
        columns["error"].append(None)
    return pa.RecordBatch.from_pydict(columns, schema=schema)


@dataclass
class _Progress:
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
