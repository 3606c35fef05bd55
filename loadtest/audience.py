"""A large audience for ``nudge score-audience``: the stack's offline rows replicated under new ids.

  .venv/bin/python loadtest/audience.py --out DIR [--replicas 1250] [--days 8]

Builds, with the commands a user runs, the integration tests' stack draw (``nudge simulate
--customers 800 --days 120 --seed 11``, pinned to end on 2026-12-02 so every rerun has the same
data), ``nudge features``, ``feast apply`` and ``nudge train`` into ``DIR/stack``; then a
second Feast repo ``DIR/repo`` whose two offline tables hold each view's rows of the last
``--days`` days before T (enough for every customer's row as of T: the stack writes a snapshot
every few days), written ``--replicas`` times with the customer id suffixed ``-r<k>``: 1250
replicas of the 800 customers are 1,000,000 customers. The copies are written replica block by
replica block, so the id order (the audience's) is not the tables' order, as in real tables.
Then ``feast apply`` on it. It prints T and the command that scores the audience:

  /usr/bin/time -v .venv/bin/nudge score-audience --repo DIR/repo --models DIR/stack/models \\
      --as-of T --out DIR/plan.parquet
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TABLES = ("customer_stats", "customer_time_histograms")
START = "2026-08-04"  # 120 days: the last events on 2026-12-01, T = 2026-12-02T00:00Z


def run(*argv: str) -> None:
    """A real command from this venv, its output shown, failing loudly."""
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def feature_repo(dest: Path) -> Path:
    """A copy of the project's Feast repo definitions (SQLite online store) with no data."""
    (dest / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "feature_repo" / "definitions.py", dest)
    shutil.copy(ROOT / "feature_repo" / "feature_store.yaml", dest)
    return dest


def build_stack(stack: Path) -> datetime:
    """simulate → features → feast apply → train; returns T, the midnight after the last event."""
    data, repo = stack / "data", feature_repo(stack / "repo")
    nudge = str(BIN / "nudge")
    run(
        nudge,
        "simulate",
        "--customers",
        "800",
        "--days",
        "120",
        "--seed",
        "11",
        "--start",
        START,
        "--out",
        str(data),
    )
    sources = ["--events", str(data / "events.parquet"), "--customers", str(data / "customers.parquet")]
    run(nudge, "features", *sources, "--repo", str(repo))
    run(str(BIN / "feast"), "-c", str(repo), "apply")
    run(nudge, "train", "--repo", str(repo), "--out", str(stack / "models"), *sources)
    last = pd.read_parquet(data / "events.parquet", columns=["event_timestamp"])["event_timestamp"].max()
    return (last.floor("D") + pd.Timedelta(days=1)).to_pydatetime()


def replicate(source: Path, dest: Path, as_of: datetime, days: int, replicas: int) -> int:
    """Each table's rows of the ``days`` before ``as_of``, ``replicas`` times under new ids;
    returns the number of customers."""
    customers = 0
    for name in TABLES:
        table = pq.read_table(source / "data" / f"{name}.parquet")
        stamps = table.column("event_timestamp")
        keep = pc.and_(
            pc.greater_equal(stamps, pa.scalar(pd.Timestamp(as_of) - pd.Timedelta(days=days), stamps.type)),
            pc.less_equal(stamps, pa.scalar(pd.Timestamp(as_of), stamps.type)),
        )
        recent = table.filter(keep)
        ids = recent.column("customer_id")
        where = recent.schema.get_field_index("customer_id")
        with pq.ParquetWriter(dest / "data" / f"{name}.parquet", recent.schema) as writer:
            for k in range(replicas):
                copy = recent.set_column(where, "customer_id", pc.binary_join_element_wise(ids, f"-r{k}", ""))
                writer.write_table(copy)
        print(f"{name}: {recent.num_rows:,} rows × {replicas} = {recent.num_rows * replicas:,}", flush=True)
        if name == TABLES[0]:
            customers = len(pc.unique(ids)) * replicas
    return customers


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="Directory to build in (created).")
    parser.add_argument("--replicas", type=int, default=1250, help="Copies of each customer (default 1250).")
    parser.add_argument("--days", type=int, default=8, help="Days of rows before T to copy (default 8).")
    args = parser.parse_args()
    started = time.perf_counter()
    as_of = build_stack(args.out / "stack")
    repo = feature_repo(args.out / "repo")
    customers = replicate(args.out / "stack" / "repo", repo, as_of, args.days, args.replicas)
    run(str(BIN / "feast"), "-c", str(repo), "apply")
    print(
        f"\n{customers:,} customers as of {as_of.astimezone(UTC).isoformat()} in {time.perf_counter() - started:.0f} s"
    )
    print(
        f"/usr/bin/time -v {BIN / 'nudge'} score-audience --repo {repo} --models {args.out / 'stack' / 'models'} "
        f"--as-of {as_of.astimezone(UTC).isoformat()} --out {args.out / 'plan.parquet'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
