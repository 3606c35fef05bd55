"""Feast's own online read against nudge's, on the same store in the same run.

  nudge bench features --repo feature_repo --now 2026-05-05T00:00:00Z
  NUDGE_REDIS=127.0.0.1:6379 nudge bench features --repo feature_repo \\
      --feature-store-yaml feature_repo/feature_store.redis.yaml --now 2026-05-05T00:00:00Z

Both paths read the union of the feature services propensity_v1 and send_time_v1 for the same
customers: Feast's ``store.get_online_features(features=..., entity_rows=...).to_dict()``, and
nudge's reader from ``service.online.readers.build_reader(store, refs, fast=True)``. Each
repetition times both, in alternating order, for 1 customer and for 100, so drift on a shared
machine weighs on both alike; the report gives medians (and p90) and the speed-up
(Feast median / nudge median). ``--now`` must fall inside the data's time range: nudge treats
rows older than a view's TTL as missing (it then decodes nothing, which would flatter it), so
the report also says what share of customers nudge found features for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nudge.client.ids import load_ids
from nudge.contract.features import SERVICES
from nudge.inputs import check, feast_repo_problem, parse_time, user_errors

SCHEMA = "nudge.bench.features/v1"
WARMUP = 5

Read = Callable[[list[str]], object]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", type=Path, default=Path("feature_repo"), help="The Feast repo (default %(default)s)."
    )
    parser.add_argument(
        "--feature-store-yaml", type=Path, help="Alternative feature_store.yaml (e.g. Redis)."
    )
    ids = parser.add_mutually_exclusive_group()
    ids.add_argument("--ids", type=Path, help="Ids: JSON list, ghz data file or one per line.")
    ids.add_argument("--ids-from", type=Path, help="Parquet file with a customer_id column.")
    parser.add_argument("--now", help="ISO 'as of' time for nudge's TTL rule (default: the clock).")
    parser.add_argument(
        "--repetitions", type=int, default=300, help="Timed calls per path and size (default %(default)s)."
    )
    parser.add_argument(
        "--sizes", default="1,100", help="Customers per call, comma-separated (default %(default)s)."
    )
    parser.add_argument(
        "--timeout-ms", type=float, default=50.0, help="nudge reader's store timeout (default %(default)s)."
    )
    parser.add_argument("--json", action="store_true", help="Print the JSON report instead of text.")
    parser.add_argument("--out", type=Path, help="Also write the JSON report to this file.")


def batches(ids: Sequence[str], size: int, count: int) -> list[list[str]]:
    """``count`` lists of ``size`` consecutive ids, wrapping round, each starting where the last ended."""
    return [[ids[(b * size + k) % len(ids)] for k in range(size)] for b in range(count)]


def compare(
    paths: Mapping[str, Read], sizes: Sequence[int], ids: Sequence[str], repetitions: int
) -> dict[int, dict[str, list[int]]]:
    """Time every path on the same customers, interleaved, alternating which path goes first.

    Returns, per size, each path's timings in nanoseconds (one per repetition). A few untimed
    calls per path and size come first, so connections and caches are warm for both.
    """
    names = list(paths)
    work = {size: batches(ids, size, repetitions + WARMUP) for size in sizes}
    for size in sizes:
        for batch in work[size][:WARMUP]:
            for name in names:
                paths[name](batch)
    timings: dict[int, dict[str, list[int]]] = {size: {name: [] for name in names} for size in sizes}
    for rep in range(repetitions):
        order = names if rep % 2 == 0 else names[::-1]
        for size in sizes:
            batch = work[size][WARMUP + rep]
            for name in order:
                start = time.perf_counter_ns()
                paths[name](batch)
                timings[size][name].append(time.perf_counter_ns() - start)
        if (rep + 1) % 100 == 0:
            print(f"  {rep + 1}/{repetitions} repetitions", file=sys.stderr, flush=True)
    return timings


def _ms(ns: float) -> float:
    return round(ns / 1e6, 4)


def _p90(values: Sequence[int]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else float(values[0])


def summarize(
    timings: dict[int, dict[str, list[int]]], baseline: str, candidate: str
) -> list[dict[str, Any]]:
    """Per size: medians and p90 of both paths and the speed-up of the candidate's median."""
    rows = []
    for size, by_path in timings.items():
        base, cand = statistics.median(by_path[baseline]), statistics.median(by_path[candidate])
        rows.append(
            {
                "customers": size,
                f"{baseline}_median_ms": _ms(base),
                f"{candidate}_median_ms": _ms(cand),
                f"{baseline}_p90_ms": _ms(_p90(by_path[baseline])),
                f"{candidate}_p90_ms": _ms(_p90(by_path[candidate])),
                "speedup": round(base / cand, 3) if cand else None,
            }
        )
    return rows


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"Online features: Feast SDK get_online_features().to_dict() vs nudge {report['reader']}",
        f"store {report['online_store']}, {report['features']} features from {len(report['feature_services'])} "
        f"feature services, {report['repetitions']} repetitions per path and size, interleaved; "
        f"nudge found features for {report['found_share']:.0%} of customers",
        "",
        f"{'customers':>9}  {'Feast median':>12}  {'nudge median':>12}  {'Feast p90':>10}  {'nudge p90':>10}  speed-up",
    ]
    for row in report["results"]:
        lines.append(
            f"{row['customers']:>9}  {row['feast_median_ms']:>9.3f} ms  {row['nudge_median_ms']:>9.3f} ms  "
            f"{row['feast_p90_ms']:>7.3f} ms  {row['nudge_p90_ms']:>7.3f} ms  {row['speedup']:.2f}x"
        )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or not all(1 <= s <= 10_000 for s in sizes):
        raise ValueError("--sizes must be comma-separated customer counts within 1..10000")
    return sizes


def run(args: argparse.Namespace) -> int:
    check(feast_repo_problem(args.repo, args.feature_store_yaml))
    with user_errors(ValueError, OSError):
        sizes = _sizes(args.sizes)
        if not 1 <= args.repetitions <= 100_000:
            raise ValueError("--repetitions must be within 1..100000")
        ids = load_ids(args.ids, args.ids_from)
        now = parse_time(args.now) if args.now else datetime.now(UTC)
    from feast import FeatureStore  # seconds to import: only once the input is good

    from service.online.layout import feature_service_refs
    from service.online.readers import build_reader

    store = FeatureStore(repo_path=str(args.repo), fs_yaml_file=args.feature_store_yaml)
    refs = feature_service_refs(store, SERVICES)
    reader = build_reader(store, refs, fast=True, timeout_s=args.timeout_ms / 1000)
    try:
        found = reader.read(list(ids[:1000]), now)
        paths: dict[str, Read] = {
            "feast": lambda batch: store.get_online_features(
                features=refs, entity_rows=[{"customer_id": cid} for cid in batch]
            ).to_dict(),
            "nudge": lambda batch: reader.read(batch, now),
        }
        print(f"timing {len(refs)} features, sizes {sizes}, {args.repetitions} repetitions", file=sys.stderr)
        timings = compare(paths, sizes, ids, args.repetitions)
    finally:
        reader.close()
    report = {
        "schema": SCHEMA,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "repo": str(args.repo),
        "online_store": store.config.online_store.type,
        "reader": type(reader).__name__,
        "feature_services": list(SERVICES),
        "features": len(refs),
        "repetitions": args.repetitions,
        "now": now.isoformat(),
        "found_share": round(sum(any(f.event_timestamps.values()) for f in found) / len(found), 4),
        "results": summarize(timings, "feast", "nudge"),
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
