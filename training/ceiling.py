"""How far can the propensity model get? Refit it with more information and compare ROC-AUC.

The quality floor asks for ROC-AUC within 0.02 of the oracle, and the oracle knows each
simulated customer's hidden parameters. This experiment refits the same calibrated trees on
the same rows (``nudge train``'s own training set, sampling, seed and chosen inputs: the BG/NBD
posterior columns when train's validation kept them) with extra inputs:

  feature service        the shipped inputs (reproduces the report's roc_auc exactly)
  + observable extras    more features computed from the events themselves, as of each
                         cutoff: days since the first purchase and first event, purchases
                         per observed day, opens and clicks in the last 2 and 7 days, hours
                         since the last open and click
  + renewal parameters   the simulator's hidden renewal-cycle shape and scale (truth)
  + hidden parameters    every numeric per-customer parameter in truth

If the observable extras barely move AUC while the hidden parameters close most of the gap,
the gap is what 180 days of events do not reveal, not features left on the table.

    python -m training.ceiling --repo quality/repo --events quality/data/events.parquet \\
        --customers quality/data/customers.parquet --truth quality/data/truth.parquet

(`make ceiling` after `make quality`.) Prints a table; ``--json FILE`` writes it too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training.features import DAY, _Customers, _Timeline, _unix_seconds
from training.train import Limits, PropensitySet, Run, choose_inputs, prepare, propensity_set, single_threaded

if TYPE_CHECKING:
    from training.purchase_process import PurchaseProcess

RENEWAL = ("renewal_shape", "renewal_scale_hours")
OPENS = ("email_open", "push_open")
CLICKS = ("email_click", "sms_click")


def observable_extras(run: Run, rows: pd.DataFrame) -> np.ndarray:
    """Extra point-in-time features from the events strictly before each row's cutoff."""
    people = _Customers.of(run.customers)
    history = _Timeline.of(run.events, people)
    cust = people.index_of(rows["customer_id"])
    cutoff = _unix_seconds(rows["event_timestamp"])

    def first_and_count(timeline: _Timeline) -> tuple[np.ndarray, np.ndarray]:
        start, at = timeline.start(cust), timeline.before(cust, cutoff)
        first = np.where(at > start, timeline.t[np.minimum(start, max(len(timeline.t) - 1, 0))], np.nan)
        return first, at - start

    first_purchase, purchases = first_and_count(history.of_kinds("purchase"))
    first_event, _ = first_and_count(history)
    columns = {
        "days_since_first_purchase": (cutoff - first_purchase) / DAY,
        "purchases_per_observed_day": purchases / np.maximum((cutoff - first_event) / DAY, 1.0),
        "days_since_first_event": (cutoff - first_event) / DAY,
    }
    for name, kinds in (("opens", OPENS), ("clicks", CLICKS)):
        timeline = history.of_kinds(*kinds)
        start, at = timeline.start(cust), timeline.before(cust, cutoff)
        for days in (2, 7):
            columns[f"{name}_{days}d"] = at - timeline.before(cust, cutoff - days * DAY)
        columns[f"hours_since_last_{name}"] = (cutoff - timeline.last(timeline.t, at, start)) / 3600
    return np.column_stack([np.asarray(v, np.float64) for v in columns.values()]).astype(np.float32)


def hidden_parameters(truth: pd.DataFrame, rows: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """The named truth columns for each row's customer."""
    table = truth.set_index("customer_id")[list(names)]
    return table.loc[rows["customer_id"]].to_numpy(np.float32)


def roc_auc(data: PropensitySet, x: np.ndarray, seed: int, process: PurchaseProcess | None) -> float:
    """Test ROC-AUC of the shipped model recipe fitted on ``x``'s train rows: calibrated trees,
    behind the BG/NBD posterior columns when a ``process`` step is given (as train fits them)."""
    from sklearn.metrics import roc_auc_score

    from training.propensity import positive_probability

    test = ~data.train
    return float(roc_auc_score(data.y[test], positive_probability(data.fit(x, seed, process)[0], x[test])))


def ceiling(run: Run, seeds: list[int]) -> dict[str, Any]:
    """ROC-AUC per input set and seed, and the oracle's on the same test rows."""
    from sklearn.metrics import roc_auc_score

    from training.propensity_selection import purchase_process_for
    from training.simulate import true_purchase_probability

    if run.truth is None:
        raise ValueError("the ceiling needs the simulator's truth (--truth)")
    data = propensity_set(run)
    purchase_process = choose_inputs(run, data).chosen.purchase_process  # as nudge train chose
    rows, x = data.frame.rows, data.frame.x
    numeric = tuple(c for c in run.truth.columns if c != "customer_id" and run.truth[c].dtype.kind in "fiub")
    inputs = {
        "feature service": x,
        "+ observable extras": np.hstack([x, observable_extras(run, rows)]),
        "+ renewal parameters": np.hstack([x, hidden_parameters(run.truth, rows, RENEWAL)]),
        "+ hidden parameters": np.hstack([x, hidden_parameters(run.truth, rows, numeric)]),
    }
    test = rows.loc[~data.train, ["customer_id", "event_timestamp"]].rename(
        columns={"event_timestamp": "cutoff"}
    )
    oracle = true_purchase_probability(run.truth, run.events, test, run.split.horizon.days)
    by_inputs: dict[str, dict[str, Any]] = {}
    for name, matrix in inputs.items():
        # The BG/NBD step fitted once per input set, on these rows, when train chose it.
        process = (
            purchase_process_for(matrix, rows, data.train, data.frame.features, run.split.horizon.days)
            if purchase_process
            else None
        )
        aucs = [roc_auc(data, matrix, seed, process) for seed in seeds]
        by_inputs[name] = {"per_seed": aucs, "median": float(np.median(aucs))}
        print(f"{name:<22} " + "  ".join(f"{a:.4f}" for a in aucs), flush=True)
    return {
        "rows": {"train": int(data.train.sum()), "test": int((~data.train).sum())},
        "seeds": seeds,
        "oracle_roc_auc": float(roc_auc_score(data.y[~data.train], oracle)),
        "roc_auc": by_inputs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--customers", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--horizon-days", type=int, default=14)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (first = train's)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with single_threaded():  # as `nudge train` fits
        run = prepare(
            args.repo, args.events, args.customers, args.horizon_days, args.truth, args.seeds[0], Limits()
        )
        results = ceiling(run, args.seeds)
    oracle = results["oracle_roc_auc"]
    print(f"\n{'inputs':<22} {'median ROC-AUC':>14} {'oracle - it':>12}")
    for name, value in results["roc_auc"].items():
        print(f"{name:<22} {value['median']:>14.4f} {oracle - value['median']:>12.4f}")
    print(f"{'oracle':<22} {oracle:>14.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
