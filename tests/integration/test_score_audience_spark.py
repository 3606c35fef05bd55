"""`nudge score-audience --engine spark` on Spark ``local[2]``: its rows are the local engine's.

Both engines run through the command's entry point on the session stack (same repo, models and
``T``), and their files are compared column by column (floats within 1e-6), schema and
metadata too. One SparkSession serves the module: the command finds it active and uses it, so
the JVM starts once. Without pyspark or a Java runtime these tests skip on a developer's
machine and fail under CI (``CI=true``), where ``make install`` must have provided both.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from nudge.cli import main
from tests.support.stack import BIN, Stack, copy_feature_repo, run_cli

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _missing() -> str | None:
    """What the Spark engine lacks on this machine, or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[dev]' installs it)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (make install installs default-jre-headless)"
    return None


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Spark engine's tests: {missing}")
        pytest.skip(missing)
    from service.audience_spark import spark_session

    session, _ = spark_session("local[2]")
    yield session
    session.stop()


def plan(stack: Stack, out: Path, *extra: str) -> pa.Table:
    """Run ``nudge score-audience`` in this process (so ``--engine spark`` uses the module's
    session) and read the file it wrote."""
    argv = ["score-audience", "--repo", str(stack.repo), "--models", str(stack.models)]
    assert main([*argv, "--as-of", stack.as_of.isoformat(), "--out", str(out), *extra]) == 0
    return pq.read_table(out)


def assert_same_rows(spark_plan: pa.Table, local_plan: pa.Table) -> None:
    """Equal schemas (metadata included) and rows: every column value by value, floats (also
    inside ``top_slots``) within 1e-6."""
    assert spark_plan.schema.equals(local_plan.schema, check_metadata=True)
    assert spark_plan.num_rows == local_plan.num_rows
    ids = local_plan.column("customer_id").to_pylist()
    for name in local_plan.column_names:
        got, want = spark_plan.column(name).to_pylist(), local_plan.column(name).to_pylist()
        for row, (a, b) in enumerate(zip(got, want, strict=True)):
            assert _close(a, b), f"{name} of row {row} ({ids[row]}): spark {a!r}, local {b!r}"


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def test_whole_audience_equals_the_local_engine(spark: SparkSession, stack: Stack, tmp_path: Path) -> None:
    local = plan(stack, tmp_path / "local.parquet", "--chunk", "300")
    on_spark = plan(stack, tmp_path / "spark.parquet", "--engine", "spark", "--chunk", "300")
    assert_same_rows(on_spark, local)
    assert on_spark.num_rows > 500 and on_spark.column("error").null_count == on_spark.num_rows
    assert len(set(on_spark.column("decision").to_pylist())) >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.parquet", "spark.parquet"], "no temp file"


def test_given_customers_in_their_order(spark: SparkSession, stack: Stack, tmp_path: Path) -> None:
    known = pq.read_table(stack.repo / "data" / "customer_stats.parquet", columns=["customer_id"])
    first, second = sorted(set(known.column("customer_id").to_pylist()))[7:9]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{second}\nnobody-at-all\n{first}\n\n{second}\n{'x' * 200}\n")
    extra = ("--customers", str(ids), "--window-hours", "48", "--quiet", "22-7")
    local = plan(stack, tmp_path / "local.parquet", *extra)
    on_spark = plan(stack, tmp_path / "spark.parquet", "--engine", "spark", *extra)
    assert on_spark.column("customer_id").to_pylist() == [second, "nobody-at-all", first, "x" * 200]
    assert_same_rows(on_spark, local)
    assert "limit is 128" in on_spark.column("error")[3].as_py()


def test_two_rows_at_one_time_are_refused_by_both_engines(
    spark: SparkSession, stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A customer with two newest rows in one view: which one Feast serves is undefined."""
    repo = copy_feature_repo(tmp_path / "repo")
    for table in (stack.repo / "data").glob("customer_*.parquet"):
        shutil.copy(table, repo / "data" / table.name)
    histograms = repo / "data" / "customer_time_histograms.parquet"
    rows = pq.read_table(histograms)
    stamps = rows.column("event_timestamp")
    # The newest row at or before T overall: some customer's row as of T, now twice.
    newest = pc.index(stamps, pc.max(pc.filter(stamps, pc.less_equal(stamps, stack.as_of)))).as_py()
    pq.write_table(pa.concat_tables([rows, rows.slice(newest, 1)]), histograms)
    run_cli(str(BIN / "feast"), "-c", str(repo), "apply")
    for engine in ("local", "spark"):
        out = tmp_path / f"{engine}.parquet"
        argv = ["score-audience", "--engine", engine, "--repo", str(repo), "--models", str(stack.models)]
        assert main([*argv, "--as-of", stack.as_of.isoformat(), "--out", str(out)]) == 1, engine
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("nudge score-audience: ") and "two rows of one customer" in error, error
        assert not out.exists()


@pytest.mark.filterwarnings("ignore:The spark data source API is an experimental feature:RuntimeWarning")
def test_sources_of_feasts_spark_offline_store(spark: SparkSession, stack: Stack) -> None:
    """A SparkSource's table, query or path is read as a FileSource's path is."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    from service.audience_spark import source_frame

    path = str(stack.repo / "data" / "customer_stats.parquet")
    table = spark.read.parquet(path)
    table.createOrReplaceTempView("stats_table")
    for source in (
        SparkSource(name="t", table="stats_table", timestamp_field="event_timestamp"),
        SparkSource(name="q", query="SELECT * FROM stats_table", timestamp_field="event_timestamp"),
        SparkSource(name="p", path=path, file_format="parquet", timestamp_field="event_timestamp"),
    ):
        frame = source_frame(spark, "customer_stats", source)
        assert frame.count() == table.count() and frame.exceptAll(table).isEmpty(), source.name


def nudge(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nudge"), *argv], capture_output=True, text=True, check=False, env=env)


def test_bad_input_is_one_line_before_spark_starts(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "plan.parquet"
    common = ["score-audience", "--engine", "spark", "--as-of", stack.as_of.isoformat(), "--out", str(out)]
    result = nudge(*common, "--repo", str(tmp_path / "no-repo"), "--models", str(stack.models))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("nudge score-audience: ") and "no-repo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_no_java_is_one_line(spark: SparkSession, stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "plan.parquet"
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(BIN)  # the venv's commands, no java
    argv = ["score-audience", "--engine", "spark", "--repo", str(stack.repo), "--models", str(stack.models)]
    result = nudge(*argv, "--as-of", stack.as_of.isoformat(), "--out", str(out), env=env)
    assert result.returncode == 2, result.stderr
    assert "needs a Java runtime" in result.stderr and "default-jre-headless" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()
