"""``nudge score-audience --engine spark``: the same audience plan, computed on Apache Spark.

Marketing data usually lives where Spark runs, so the job goes to it instead of the tables
coming to one machine. Everything that decides a row is shared with the local engine
(service/audience.py), so the two engines cannot drift apart:

* Reading as of ``T``: per feature view, the newest row of its offline source at or before
  ``T``, none when older than the view's TTL at ``T`` (the rule of the local engine and of
  Feast's historical retrieval), as Spark SQL: an aggregate of the newest event time per
  customer of the audience, joined back to its row, then every view left-joined to the
  audience and sorted into the audience's order. The views, features, refs and TTLs come from
  the same :class:`~service.online.layout.Layout` the server and the local engine resolve from
  the registry; the sources are the views' batch sources: Feast ``FileSource`` paths (any
  location Spark reads: a local path in local mode, ``hdfs://`` or ``s3a://`` on a cluster) or
  the Spark offline store's ``SparkSource`` (table, query or path).
* Scoring: ``mapInArrow`` hands each Python worker the joined rows as Arrow record batches of
  ``--chunk`` rows, with the columns of the local engine's chunks, and the local engine's own
  :func:`~service.audience.score_rows` (models, policy, feature status, column-wise) turns each
  into output rows. The models travel with the job (``SparkContext.addFile`` of ``--models``)
  and are loaded once per Python worker process (Spark reuses its workers between tasks), not
  per batch; a worker that finds other model versions than the driver checked refuses to score.
* Output: each scored batch comes back as an Arrow IPC blob, in the audience's order; the
  driver streams them partition by partition into one parquet file with the local engine's
  schema and metadata, under a temporary name beside ``--out``, renamed when complete. Spark
  computes every partition in parallel first (persisted on the executors' disks), so the
  driver's one-partition-at-a-time fetch does not serialise the scoring.

A customer with two rows at the same event time in one view fails the run, as in the local
engine (which row Feast serves is undefined).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nudge.inputs import UserError
from service import config
from service.audience import CHUNK, Progress, RowScorer, prepare_job, read_ids, replacing, score_rows
from service.feature_columns import timestamp_column
from service.online.layout import Layout
from service.scorer import TIME_ZONE_REF

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.data_source import DataSource
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_MASTER = "local[2]"
DUPLICATE_ROWS = (
    "a view's table has two rows of one customer at the same event_timestamp; "
    "which one Feast serves is undefined: fix the table"
)
# What each scoring task returns per batch: an error (then no rows), or the scored rows as an
# Arrow IPC stream.
_BLOBS = "error string, rows long, batch binary"


def spark_session(master: str | None) -> tuple[SparkSession, bool]:
    """The job's SparkSession and whether this call started it (then its caller stops it).

    The active session if there is one (a notebook's, a test module's), else a new one on
    ``master`` if given, else on the master spark-submit was given, else on ``local[2]``. Fails
    with a one-line UserError when pyspark or a Java runtime is missing (pyspark's own error is
    a gateway traceback)."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise UserError("--engine spark needs pyspark: pip install 'nudge[spark]'") from exc
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    if java is None or not Path(java).is_file():
        raise UserError(
            "--engine spark needs a Java runtime (17 or newer) on PATH or in JAVA_HOME: "
            "apt-get install default-jre-headless"
        )
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName("nudge score-audience")
    if master is None and not SparkConf().contains("spark.master"):
        master = DEFAULT_MASTER
    if master is not None:
        builder = builder.master(master)
    if (master or "").startswith("local"):
        # Workers on this machine: this interpreter (its venv has nudge; pyspark reads only the
        # variable), and no web UI.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.ui.enabled", "false")
    return builder.getOrCreate(), True


def score_audience_spark(
    settings: config.Settings,
    as_of: datetime,
    out: Path,
    *,
    master: str | None = None,
    customers: Path | None = None,
    window: timedelta = timedelta(hours=24),
    quiet: tuple[int, int] | None = None,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> int:
    """Score the audience as of ``as_of`` into ``out`` (module docstring); returns its size.
    Rows, order, schema and metadata are the local engine's. The session (:func:`spark_session`)
    starts after the driver's own checks (models, registry, ids: seconds, where a JVM takes ten)."""
    ids = read_ids(customers) if customers is not None else None
    job, store, layout = prepare_job(settings, as_of, window, quiet)  # models and registry checked
    spark, own = spark_session(master)
    try:
        return _score_on(spark, job, store, layout, out, ids, chunk, progress)
    finally:
        if own:
            spark.stop()


def _score_on(
    spark: SparkSession,
    job: RowScorer,
    store: FeatureStore,
    layout: Layout,
    out: Path,
    ids: pa.Table | None,
    chunk: int,
    progress: Progress | None,
) -> int:
    from pyspark import StorageLevel

    with _spark_errors():
        views = [store.get_feature_view(view.name) for view in layout.views]
        sources = [source_frame(spark, view.name, view.batch_source) for view in views]
        audience = _audience(spark, sources, layout, job.as_of, ids)
        size = audience.count()
        joined = as_of_rows(sources, layout, job.as_of, audience)
    # Ranges of the audience's order, about one chunk each and at least one per core: scoring
    # costs per row, and Spark's partitioning by bytes gave 800 customers 200 partitions.
    parts = max(spark.sparkContext.defaultParallelism, -(-size // chunk))
    ordered = joined.repartitionByRange(parts, "ord").sortWithinPartitions("ord")
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # event times reach the scorer in UTC
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk))  # a chunk per batch
    models = job.scorer.settings.models.resolve()
    spark.sparkContext.addFile(str(models), recursive=True)
    versions = tuple(sorted(job.scorer.models.versions.items()))
    task = ScorePartition(job.scorer.settings, job.as_of, job.window, job.quiet, models.name, versions)
    blobs = ordered.mapInArrow(task, _BLOBS).persist(StorageLevel.DISK_ONLY)
    try:
        with _spark_errors():
            blobs.count()  # scores every partition at once, in parallel
        schema = job.schema
        done = 0
        with replacing(out) as temporary, pq.ParquetWriter(temporary, schema) as writer:
            for error, rows, blob in blobs.toLocalIterator(prefetchPartitions=True):
                if error is not None:
                    raise UserError(error, exit_code=1)
                writer.write_table(pa.ipc.open_stream(blob).read_all())
                done += rows
                if progress is not None:
                    progress.update(done, size)
            if done == 0:
                writer.write_table(schema.empty_table())
        if progress is not None:
            progress.finish()
        return done
    finally:
        blobs.unpersist()


# --------------------------------------------------------------------------- reading as of T


def source_frame(spark: SparkSession, view_name: str, source: DataSource | None) -> DataFrame:
    """A view's batch source (push sources: theirs) as a DataFrame: a Feast FileSource's path,
    or a SparkSource's table, query or path (Feast's Spark offline store)."""
    table, query = getattr(source, "table", None), getattr(source, "query", None)
    if table:
        return spark.table(table)
    if query:
        return spark.sql(query)
    path = getattr(source, "path", None)
    if not path:
        raise UserError(f"feature view {view_name}: its source has no path, table or query to read as of T")
    if "://" not in path and not Path(path).is_file():
        raise UserError(f"feature view {view_name}: {path}: no such file; run nudge features first")
    file_format = getattr(source, "file_format", None)
    return spark.read.format(file_format if isinstance(file_format, str) else "parquet").load(path)


def _audience(
    spark: SparkSession, sources: list[DataFrame], layout: Layout, as_of: datetime, ids: pa.Table | None
) -> DataFrame:
    """``customer_id`` and ``ord``, the output order: the given ids' first position in their
    file, or (no ids given) the id itself for every customer of the time zone's view at T."""
    from pyspark.sql import functions as F

    if ids is None:
        view = TIME_ZONE_REF.partition(":")[0]
        table = sources[[v.name for v in layout.views].index(view)]
        return (
            table.where((F.col("event_timestamp") <= F.lit(as_of)) & F.col("customer_id").isNotNull())
            .select("customer_id")
            .distinct()
            .withColumn("ord", F.col("customer_id"))
        )
    frame = spark.createDataFrame(ids.append_column("ord", pa.array(range(len(ids)), pa.int64())))
    return frame.where(F.col("customer_id").isNotNull()).groupBy("customer_id").agg(F.min("ord").alias("ord"))


def as_of_rows(sources: list[DataFrame], layout: Layout, as_of: datetime, audience: DataFrame) -> DataFrame:
    """The audience's joined rows with their ``ord``: the columns :func:`service.audience.score_rows`
    reads (``customer_id``, each view's row's event time under ``timestamp_column(view)``, null
    when none, and its features under their refs)."""
    from pyspark.sql import functions as F

    keys = audience.select("customer_id")
    joined = audience
    for i, (view, source) in enumerate(zip(layout.views, sources, strict=True)):
        within = F.col("event_timestamp") <= F.lit(as_of)
        if view.ttl is not None:
            within &= F.col("event_timestamp") >= F.lit(as_of - view.ttl)
        # Columns by name only: the frames share their lineage (Spark's self-join ambiguity).
        newest = (
            source.where(within)
            .join(keys, "customer_id", "left_semi")
            .groupBy("customer_id")
            .agg(F.max("event_timestamp").alias("_newest"))
            .withColumnRenamed("customer_id", "_newest_id")
        )
        rows = source.join(
            newest,
            (F.col("customer_id") == F.col("_newest_id")) & (F.col("event_timestamp") == F.col("_newest")),
        ).select(
            F.col("customer_id").alias(f"_id{i}"),
            F.col("event_timestamp").alias(timestamp_column(view.name)),
            *[
                F.col(f"`{feature}`").alias(ref)
                for feature, ref in zip(view.features, view.refs, strict=True)
            ],
        )
        joined = joined.join(rows, F.col("customer_id") == F.col(f"_id{i}"), "left").drop(f"_id{i}")
    columns = ["ord", "customer_id"]
    for view in layout.views:
        columns += [timestamp_column(view.name), *view.refs]
    return joined.select(*[F.col(f"`{name}`") for name in columns])


# --------------------------------------------------------------------------- scoring per partition


@dataclasses.dataclass(frozen=True)
class ScorePartition:
    """``mapInArrow``'s function: one partition's batches of joined rows in, one blob per batch
    out (``_BLOBS``). Pickled to the workers; hashable, so each worker process builds the job's
    :class:`~service.audience.RowScorer` (models loaded: ONNX sessions) once."""

    settings: config.Settings
    as_of: datetime
    window: timedelta
    quiet: tuple[int, int] | None
    models_name: str  # the models directory as shipped with SparkContext.addFile
    versions: tuple[tuple[str, str], ...]  # what the driver loaded and checked

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        job = _row_scorer(self)
        last: Any = None
        for batch in batches:
            order = batch.column("ord")
            # A partition is a range of ``ord``: a customer's rows are in one, next to each other.
            if len(order) and (
                (last is not None and not pc.greater(order[0], last).as_py())
                or pc.any(pc.less_equal(order[1:], order[:-1])).as_py()
            ):
                yield _blob(DUPLICATE_ROWS, 0, b"")
                return
            last = order[-1] if len(order) else last
            scored = score_rows(job, batch)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, scored.schema) as stream:
                stream.write_batch(scored)
            yield _blob(None, scored.num_rows, sink.getvalue().to_pybytes())


def _blob(error: str | None, rows: int, data: bytes) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"error": [error], "rows": [rows], "batch": [data]},
        schema=pa.schema([("error", pa.string()), ("rows", pa.int64()), ("batch", pa.binary())]),
    )


@functools.cache
def _row_scorer(task: ScorePartition) -> RowScorer:
    """The worker's scorer for ``task``, from the shipped models, which must be the driver's."""
    from pyspark import SparkFiles

    settings = dataclasses.replace(task.settings, models=Path(SparkFiles.get(task.models_name)))
    job = RowScorer.load(settings, task.as_of, task.window, task.quiet)
    found = tuple(sorted(job.scorer.models.versions.items()))
    if found != task.versions:
        raise RuntimeError(f"the workers found models {found}, the driver checked {task.versions}")
    return job


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def _spark_errors() -> Iterator[None]:
    """Spark's analysis errors (a source without the columns the views name, a table that is
    not there) as one-line UserErrors."""
    from pyspark.errors import AnalysisException

    try:
        yield
    except AnalysisException as exc:
        line = str(exc).strip().splitlines()[0]
        raise UserError(f"reading the offline sources on Spark: {line}", exit_code=1) from exc
