"""One propensity table across data tracks, from their training reports.

    python -m training.tracks NAME=MODELS/report.json [NAME=...]

Rows: the recency/frequency baseline, the BG/NBD-only model, each input candidate of this
run's selection (its trees fitted on the cutoffs before the selection period, scored on the
test period: how it would have done had it been chosen) and the shipped model (calibrated,
refitted on every training cutoff); then the chosen candidate, the oracle where the track has
one (the simulator) and the test positive rate. `make quality-tracks` prints it for
`make quality` and `make quality-real` (H = 14 days).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _auc(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}"


def table(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The markdown table, one column per (track name, report)."""
    blocks = [report["propensity"] for _, report in reports]
    names = list(dict.fromkeys(name for p in blocks for name in p.get("candidates", {})))
    rows: list[tuple[str, list[str]]] = [
        (
            "baseline: logistic regression on recency and frequency",
            [_auc(p["baseline_roc_auc"]) for p in blocks],
        ),
        ("BG/NBD only: P(buy within H)", [_auc(p.get("bgnbd_roc_auc")) for p in blocks]),
        *(
            (
                f"candidate `{name}` (trees before the selection period)",
                [_auc(p.get("candidates", {}).get(name, {}).get("test_roc_auc")) for p in blocks],
            )
            for name in names
        ),
        (
            "**shipped model** (chosen inputs, calibrated, all training cutoffs)",
            [f"**{_auc(p['roc_auc'])}**" for p in blocks],
        ),
        ("chosen by validation ROC-AUC", [str(p.get("inputs", "—")) for p in blocks]),
        (
            "validation ROC-AUC of the candidates",
            [
                ", ".join(f"{n} {_auc(c['validation_roc_auc'])}" for n, c in p.get("candidates", {}).items())
                or "—"
                for p in blocks
            ],
        ),
        ("oracle (simulator's true probabilities)", [_auc(p.get("oracle_roc_auc")) for p in blocks]),
        ("ECE of the shipped model", [_auc(p["ece"]) for p in blocks]),
        ("test positive rate", [f"{p['positive_rate']:.3f}" for p in blocks]),
    ]
    header = [
        "propensity test ROC-AUC",
        *(f"{name} (H = {p['horizon_days']} d)" for (name, _), p in zip(reports, blocks, strict=True)),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([label, *cells]) + " |" for label, cells in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tracks", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "reports", nargs="+", metavar="NAME=REPORT", help="a track's name and its report.json"
    )
    args = parser.parse_args(argv)
    reports = []
    for item in args.reports:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"{item!r}: expected NAME=PATH of an existing report.json")
        reports.append((name, json.loads(Path(path).read_text())))
    print(table(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
