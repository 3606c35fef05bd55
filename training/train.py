"""Train, evaluate and export both models from a Feast repo.

Labels come from the raw events (--events, --customers: the same files `nudge features`
read); features come from the repo's feature services (propensity_v1, send_time_v1) through
Feast's point-in-time get_historical_features, as of each training row's time.

  propensity  P(purchase within --horizon-days), one row per customer per weekly snapshot;
              gradient-boosted trees + a calibration chosen by validation (out-of-fold, by customer)
  send_time   168 local hour-of-week probabilities, one row per engagement (bursts
              collapsed). Every run fits each structure of training/send_time.py (an
              evidence-weighted mixture of the customer's own histograms and the
              population prior; a multinomial logit over population slot effects, the
              histograms and recency) and ships the one with the best validation hit@3
              within 0.2 ms per call (--compare-send-time adds generic classifiers:
              multinomial logistic regression over all inputs and an MLP)
  channel     P(a message is engaged with | customer, channel, slot), one row per send, on
              features exact at the send and the exported send-time model's slot
              probabilities (training/channel.py); written as MODELS/channel_model.json for
              the numpy predictor nudge/contract/channel_model.py (n/a without sends)

The split is by time: train | gap of one horizon | test; the send-time structure is chosen on
the last part of train (the validation period, by models fitted on engagements one horizon
before it), never on test, and the chosen one is refitted on the whole training period. The
report's ``send_time.candidates`` is this run's comparison table.
Large data is subsampled (seeded) to keep training within minutes.

Writes MODELS/propensity/<version>/ and MODELS/send_time/<version>/ (model.onnx +
manifest.json; the export fails unless onnxruntime matches scikit-learn within 1e-5),
MODELS/report.json and MODELS/report.html. With --truth (a simulator's truth.parquet) the
report also scores the oracle on the same holdout. Its ``served`` block scores both exported
models at random instants of the test period with features exact vs as served from the newest
snapshot (training/served.py): the staleness skew of weekly snapshots.

Data whose engagements all fall at one local hour of day (dates without times, e.g. CDNOW from
`nudge import-cdnow`) gets no send-time model: a model would learn the importer's hour back.
Its report block says n/a and why, and only the propensity model is exported.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nudge.contract.features import (  # its snapshots: the propensity cutoffs
    PROPENSITY_SERVICE,
    SEND_TIME_SERVICE,
    STATS_VIEW,
)
from nudge.contract.week import HOURS_PER_WEEK
from nudge.inputs import (
    UserError,
    check,
    feast_repo_problem,
    missing_input,
    positive_float,
    positive_int,
    unwritable_dir,
    user_errors,
)
from training.feature_tables import is_snapshot

if TYPE_CHECKING:
    from feast import FeatureStore

    from nudge.contract.manifest import FeatureInput
    from training.channel import Trained
    from training.datasets import TrainingFrame
    from training.export import Exported
    from training.propensity import Calibration
    from training.propensity_selection import Candidate, Selection
    from training.purchase_process import PurchaseProcess
    from training.report import Plots
    from training.split import TimeSplit

SEND_TIME_LATENCY_BUDGET_MS = 0.2
PLOTTED_CUSTOMERS = 3
WEIGHT_LEVELS = (0, 1, 5, 20, 50, 100)  # engagement counts at which the report shows the mixture weights


@dataclass(frozen=True)
class Limits:
    """Row caps per part (seeded subsamples): training time stays bounded on any data size."""

    propensity_train: int = 200_000
    propensity_test: int = 100_000
    # the input candidates' trees (training/propensity_selection.py): half the training cap, so
    # choosing costs about one fit of the final trees; both candidates see the same rows
    propensity_selection_fit: int = 100_000
    send_time_train: int = 50_000  # the mixture has 14 weights: 50k vs 200k rows, same hit@3
    # as many as the final fit: a structure with more weights gains more from more rows, so
    # validating on fewer would bias the choice against it
    send_time_selection_fit: int = 50_000
    send_time_selection: int = 20_000
    send_time_test: int = 50_000
    served_pairs: int = 20_000  # the served-vs-exact evaluation (training/served.py)
    served_engagements: int = 20_000

    def scaled(self, factor: float) -> Limits:
        return Limits(*(max(1_000, int(getattr(self, f) * factor)) for f in self.__dataclass_fields__))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, required=True, help="Feast repo (feature_store.yaml, applied)")
    parser.add_argument("--out", type=Path, required=True, help="models directory (MODELS)")
    parser.add_argument("--events", type=Path, required=True, help="events file (.parquet or .csv)")
    parser.add_argument("--customers", type=Path, required=True, help="customers file (.parquet or .csv)")
    parser.add_argument(
        "--horizon-days", type=positive_int, default=14, help="propensity label horizon H (default 14)"
    )
    parser.add_argument("--truth", type=Path, help="simulator truth.parquet: adds oracle metrics")
    parser.add_argument("--seed", type=int, default=0, help="seed of subsampling and model fitting")
    parser.add_argument(
        "--sample-scale",
        type=positive_float,
        default=1.0,
        help="multiply every row cap (default 1.0; lower for quick runs, higher for more data)",
    )
    parser.add_argument(
        "--compare-send-time",
        action="store_true",
        help="also compare generic send-time classifiers (multinomial logistic regression over all "
        "inputs, an MLP) with the default candidates on the validation period (slow: minutes)",
    )


def run(args: argparse.Namespace) -> int:
    from training.events import missing_files

    check(
        feast_repo_problem(args.repo),
        *missing_files(args.events, args.customers),
        missing_input(
            args.truth, "--truth", "check the path (nudge simulate --out DIR writes DIR/truth.parquet)"
        ),
        unwritable_dir(args.out, "--out"),
    )
    with user_errors(ValueError, exit_code=1):  # EventDataError, or data the split cannot use
        result = train(
            repo=args.repo,
            models_dir=args.out,
            events_path=args.events,
            customers_path=args.customers,
            horizon_days=args.horizon_days,
            truth_path=args.truth,
            seed=args.seed,
            limits=Limits().scaled(args.sample_scale),
            compare=args.compare_send_time,
        )
    from training.report import summary_table

    print()
    print(summary_table(result.report))
    print(f"\nmodels: {', '.join(str(p) for p in result.version_dirs.values())}")
    print(f"report: {result.report_paths[0]} and {result.report_paths[1]}")
    print(f"done in {result.report['timing']['total_seconds']:.1f} s")
    return 0


@dataclass
class TrainResult:
    """What one training run produced."""

    report: dict[str, Any]
    version_dirs: dict[str, Path]
    report_paths: tuple[Path, Path]


@dataclass
class _Clock:
    """Prints each stage with the time since the start, and keeps the durations for the report."""

    started: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)
    stages: dict[str, float] = field(default_factory=dict)

    def done(self, stage: str, detail: str = "") -> None:
        now = time.perf_counter()
        self.stages[stage] = round(now - self.last, 2)
        self.last = now
        print(f"[{now - self.started:6.1f}s] {stage}{': ' + detail if detail else ''}", flush=True)


def train(
    *,
    repo: Path,
    models_dir: Path,
    events_path: Path,
    customers_path: Path,
    horizon_days: int = 14,
    truth_path: Path | None = None,
    seed: int = 0,
    limits: Limits | None = None,
    compare: bool = False,
) -> TrainResult:
    """The whole run: data → training sets → models → evaluation → export → report.

    Native thread pools (OpenMP in the trees, BLAS) run one thread: on a machine shared with a server or
    other jobs, OpenMP's spin-waiting made the tree fits several times slower with 2 threads
    than with 1 (docs/benchmarks.md, "Figures behind choices in the code").
    """
    limits = limits or Limits()
    with single_threaded():
        from training.channel import write_channel_model
        from training.export import write_model
        from training.labels import send_time_rows
        from training.reasons import write_reason_tables
        from training.report import write_report

        run = prepare(repo, events_path, customers_path, horizon_days, truth_path, seed, limits)
        split, clock = run.split, run.clock
        propensity = _train_propensity(run)
        engagements = send_time_rows(run.events, run.customers)
        unavailable = send_time_unavailable(engagements)
        if unavailable is None:
            send_time: _Stage | None = _train_send_time(run, engagements, compare)
        else:
            send_time = None
            run.clock.done("send time n/a, no send-time model exported", unavailable["reason"])
        served = _evaluate_served(run, propensity, send_time)
        channel = _train_channel(run, send_time)

        created = datetime.now(UTC)
        report: dict[str, Any] = {
            "propensity": propensity.metrics,
            "send_time": send_time.metrics if send_time else unavailable,
            "split": split.describe(),
            "served": served,
            "channel": channel.metrics,
        }
        label = {
            "propensity": {
                "definition": "at least one purchase in (t, t + horizon]",
                "horizon_days": horizon_days,
                "positive_class": 1,
            },
            "send_time": {
                "definition": "local hour of week of the customer's next engagement "
                "(slot = local weekday * 24 + local hour, Monday 00h = 0), bursts within 1 h collapsed",
                "slots": HOURS_PER_WEEK,
            },
        }
        version_dirs = {}
        stages = [("propensity", propensity, PROPENSITY_SERVICE, 2)]
        if send_time is not None:
            stages.append(("send_time", send_time, SEND_TIME_SERVICE, HOURS_PER_WEEK))
        for name, stage, service, width in stages:
            version_dirs[name] = write_model(
                models_dir,
                name,
                stage.exported,
                feature_service=service,
                features=stage.features,
                output_width=width,
                created=created,
                label=label[name],
                training={
                    **stage.training,
                    "window": [split.data_start.isoformat(), split.train_end.isoformat()],
                    "split": report["split"],
                    "seed": seed,
                },
                metrics=report[name],
            )
            if stage.reasons is not None:
                write_reason_tables(version_dirs[name], stage.reasons, stage.exported.onnx_bytes)
        report["models"] = {name: path.name for name, path in version_dirs.items()}
        if channel.model is not None:
            report["channel"]["file"] = write_channel_model(models_dir, channel.model, report["models"])
        clock.done("export", ", ".join(f"{n}/{p.name}" for n, p in version_dirs.items()))
        report["timing"] = {
            "stages_seconds": clock.stages,
            "total_seconds": round(time.perf_counter() - clock.started, 1),
        }
        paths = write_report(models_dir, report, _plots(propensity, send_time))
        return TrainResult(report, version_dirs, paths)


def single_threaded() -> Any:
    """A context in which OpenMP (the trees) and BLAS run one thread.

    threadpoolctl limits only the libraries already loaded, so scikit-learn's OpenMP and
    scipy's BLAS are loaded first: entered before them (as it used to be), the limit missed
    OpenMP and the tree fits ran two spin-waiting threads, 19 s on an idle machine and
    270-780 s under other jobs' load (`nudge train`'s propensity fit at 20k customers).
    """
    import scipy.optimize  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def prepare(
    repo: Path,
    events_path: Path,
    customers_path: Path,
    horizon_days: int,
    truth_path: Path | None,
    seed: int,
    limits: Limits,
) -> Run:
    """Load the data and the store and fix the time split: what every model stage shares."""
    from feast import FeatureStore

    from nudge.third_party import quiet_known_warnings
    from training.events import load_event_data
    from training.split import make_split

    quiet_known_warnings()  # skl2onnx deprecations, made visible by importing Feast
    clock = _Clock()
    data = load_event_data(events_path, customers_path)
    events, customers = data.events, data.customers
    if events.empty:
        raise ValueError(f"{events_path}: no events")
    truth = pd.read_parquet(truth_path) if truth_path else None
    store = FeatureStore(repo_path=str(repo))
    horizon = pd.Timedelta(days=horizon_days)
    split = make_split(
        snapshot_times(store), events["event_timestamp"].min(), events["event_timestamp"].max(), horizon
    )
    clock.done("load", f"{len(events):,} events, {len(customers):,} customers")
    return Run(store, events, customers, split, truth, np.random.default_rng(seed), limits, seed, clock)


def snapshot_times(store: FeatureStore) -> list[pd.Timestamp]:
    """The snapshot times of the stats view's offline table (its whole-second rows; the others
    sit just before engagements, see training/features.py): the propensity cutoffs.

    Read from the source itself (not recomputed from a cadence) so the cutoffs are exactly
    the snapshots `nudge features` wrote, and each cutoff sees a fresh snapshot.
    """
    from feast.errors import FeatureViewNotFoundException

    repo = store.repo_path
    try:
        source = store.get_feature_view(STATS_VIEW).batch_source
    except FeatureViewNotFoundException as exc:  # the repo's definitions were never applied
        raise UserError(f"--repo {repo}: {exc}; run `feast -c {repo} apply` first") from exc
    path = getattr(source, "path", None)
    if source is None or not path:
        raise ValueError(f"{STATS_VIEW}'s source is not a file source; cannot read its snapshot times")
    if not Path(path).exists():
        raise UserError(
            f"--repo {repo}: no {path}; build the feature tables first (nudge features --repo {repo})"
        )
    times = pd.to_datetime(
        pd.read_parquet(path, columns=[source.timestamp_field])[source.timestamp_field], utc=True
    )
    snapshots = times[is_snapshot(times)]
    return [pd.Timestamp(t) for t in snapshots.drop_duplicates().sort_values()]


def _subsample(rows: pd.DataFrame, cap: int, rng: np.random.Generator) -> pd.DataFrame:
    """At most ``cap`` rows, drawn without replacement, original order kept."""
    if len(rows) <= cap:
        return rows
    return rows.iloc[np.sort(rng.choice(len(rows), cap, replace=False))]


@dataclass(frozen=True)
class _Stage:
    """One trained model with what the report, plots and manifest need."""

    exported: Exported
    features: tuple[FeatureInput, ...]
    metrics: dict[str, Any]
    training: dict[str, Any]
    plot_data: dict[str, Any]
    reasons: dict[str, Any] | None = None  # the propensity's reason tables (training/reasons.py)


@dataclass(frozen=True)
class Run:
    """What both model stages share: the store, the data, the split and the run's settings."""

    store: FeatureStore
    events: pd.DataFrame
    customers: pd.DataFrame
    split: TimeSplit
    truth: pd.DataFrame | None
    rng: np.random.Generator
    limits: Limits
    seed: int
    clock: _Clock


@dataclass(frozen=True)
class PropensitySet:
    """The propensity rows (sampled train rows first, then test rows) with their features."""

    frame: TrainingFrame
    y: np.ndarray
    train: np.ndarray  # bool per row; the rest are test rows
    before_selection: np.ndarray  # bool: train rows whose label windows end before the selection period
    selection: np.ndarray  # bool: train rows of the selection period (the last training cutoffs)
    rows_before_sampling: int

    def fit(
        self, x: np.ndarray, seed: int, process: PurchaseProcess | None = None
    ) -> tuple[Any, Selection[Calibration]]:
        """The shipped recipe on the train rows of ``x`` (this set's inputs, or more columns):
        trees with the calibration chosen by validation (training/propensity_selection.py), folds
        grouped by customer; with a ``process``, a pipeline whose first step appends the
        purchase-process columns. Returns the model and the calibration comparison."""
        from sklearn.pipeline import Pipeline

        from training.propensity import cross_fit
        from training.propensity_selection import select_calibration

        rows, train, y = self.frame.rows, self.train, self.y
        inputs = x if process is None else process.transform(x)
        cutoffs = rows.loc[train, "event_timestamp"]
        fitted = cross_fit(inputs[train], y[train], rows.loc[train, "customer_id"].to_numpy(), seed)
        calibration = select_calibration(
            fitted,
            y[train],
            cutoffs,
            (self.before_selection[train], self.selection[train]),
            (fitted.trees.decision_function(inputs[~train]), y[~train]),
        )
        model = fitted.calibrated(calibration.chosen, y[train], cutoffs)
        if process is None:
            return model, calibration
        return Pipeline([("purchase_process", process), ("calibrated_trees", model)]), calibration


def choose_inputs(run: Run, data: PropensitySet) -> Selection[Candidate]:
    """The propensity's inputs chosen by validation (training/propensity_selection.py): the
    candidates fitted on a seeded sample of the train rows before the selection period, scored
    on the selection period. ``nudge train`` and ``python -m training.ceiling`` both call it
    right after :func:`propensity_set`, so both draw the same sample and make the same choice."""
    from training.propensity_selection import select_propensity

    frame, y = data.frame, data.y
    before = np.flatnonzero(data.before_selection)
    fit_rows = np.isin(np.arange(len(y)), run.rng.permutation(before)[: run.limits.propensity_selection_fit])
    parts = (fit_rows, data.selection, ~data.train)
    return select_propensity(frame.x, y, frame.rows, parts, frame.features, run.split.horizon.days, run.seed)


def propensity_set(run: Run) -> PropensitySet:
    """Every (customer, cutoff) of the train and test periods, labelled, capped by seeded
    subsamples and joined point in time to the propensity feature service."""
    from training.datasets import training_frame
    from training.labels import propensity_rows

    rows = propensity_rows(run.events, run.customers, [*run.split.train, *run.split.test], run.split.horizon)
    in_test = rows["event_timestamp"].isin(run.split.test)
    train_rows = _subsample(rows[~in_test], run.limits.propensity_train, run.rng)
    test_rows = _subsample(rows[in_test], run.limits.propensity_test, run.rng)
    frame = training_frame(
        run.store, PROPENSITY_SERVICE, pd.concat([train_rows, test_rows], ignore_index=True)
    )
    run.clock.done(
        "propensity training set",
        f"{len(rows):,} rows, sampled {len(train_rows):,} train / {len(test_rows):,} test",
    )
    train = np.arange(len(frame.rows)) < len(train_rows)
    cutoff = frame.rows["event_timestamp"]
    return PropensitySet(
        frame,
        frame.rows["label"].to_numpy(),
        train,
        train & (cutoff + run.split.horizon).le(run.split.selection_start).to_numpy(),
        train & cutoff.ge(run.split.selection_start).to_numpy(),
        len(rows),
    )


def _train_propensity(run: Run) -> _Stage:
    from training.evaluate import expected_calibration_error, propensity_metrics
    from training.export import export_checked
    from training.propensity import (
        fit_recency_frequency_baseline,
        positive_probability,
        tree_inputs,
        trees_of,
    )
    from training.propensity_selection import (
        CALIBRATION_RULE,
        SELECTION_RULE,
        purchase_process_for,
    )
    from training.reasons import fit_reason_tables
    from training.report import candidate_summary

    data = propensity_set(run)
    frame, x, y, train, test = data.frame, data.frame.x, data.y, data.train, ~data.train
    selection = choose_inputs(run, data)
    run.clock.done(
        "propensity inputs chosen",
        f"{selection.chosen.name} ({candidate_summary(selection.table, 'validation_roc_auc')})",
    )
    # The BG/NBD population on every training customer: the BG/NBD-only model and, if chosen, the inputs.
    process = purchase_process_for(x, frame.rows, train, frame.features, run.split.horizon.days)
    model, calibration = data.fit(x, run.seed, process if selection.chosen.purchase_process else None)
    baseline, baseline_columns = fit_recency_frequency_baseline(x[train], y[train], frame.features)
    run.clock.done(
        "propensity fit",
        f"{trees_of(model).n_iter_} boosting rounds; calibration {calibration.chosen.name} "
        f"({candidate_summary(calibration.table, 'validation_log_loss')})",
    )
    reasons = fit_reason_tables(model, x[train], frame.features, run.seed)
    run.clock.done("propensity reason tables", f"exact TreeSHAP on {reasons['sample_rows']:,} train rows")

    y_test, x_test = y[test], x[test]
    exported = export_checked(model, x_test, "propensity")
    scores = {
        "model": exported.probabilities[:, 1],
        "baseline": positive_probability(baseline, x_test[:, baseline_columns]),
        "bgnbd": process.transform(x_test)[:, -1],
    }
    uncalibrated = positive_probability(trees_of(model), tree_inputs(model, x_test))
    if run.truth is not None:
        from training.simulate import true_purchase_probability

        cutoffs = frame.rows.loc[test, ["customer_id", "event_timestamp"]].rename(
            columns={"event_timestamp": "cutoff"}
        )
        scores["oracle"] = true_purchase_probability(run.truth, run.events, cutoffs, run.split.horizon.days)
    measured = {name: propensity_metrics(y_test, p) for name, p in scores.items()}
    metrics: dict[str, Any] = {
        "horizon_days": run.split.horizon.days,
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "n_rows_before_sampling": data.rows_before_sampling,
        "positive_rate": float(y_test.mean()),
        "train_positive_rate": float(y[train].mean()),
        **measured["model"],
        "ece_uncalibrated": expected_calibration_error(y_test, uncalibrated),
        **{f"baseline_{k}": v for k, v in measured["baseline"].items()},
        **{f"bgnbd_{k}": v for k, v in measured["bgnbd"].items()},
        **{f"oracle_{k}": measured["oracle"][k] if "oracle" in measured else None for k in measured["model"]},
        "model": "HistGradientBoostingClassifier + calibration chosen by validation (out-of-fold, folds "
        f"grouped by customer): {calibration.chosen.description}",
        "inputs": selection.chosen.name,
        "candidates": selection.table,
        "selection": SELECTION_RULE,
        "calibration": calibration.chosen.name,
        "calibration_candidates": calibration.table,
        "calibration_selection": CALIBRATION_RULE,
        "bgnbd": {
            **process.params.describe(),
            "fitted_on": "each training customer's latest training cutoff",
        },
        "boosting_rounds": int(trees_of(model).n_iter_),
        "ort_latency_ms": exported.latency_ms,
        "parity_max_abs_diff": exported.max_abs_diff,
    }
    run.clock.done(
        "propensity evaluated + parity-checked", f"ROC-AUC {metrics['roc_auc']:.4f}, ECE {metrics['ece']:.4f}"
    )
    return _Stage(
        exported,
        frame.features,
        metrics,
        {"rows": {"train": int(train.sum()), "test": int(test.sum())}, "estimator": metrics["model"]},
        {"y_test": y_test, "scores": scores},
        reasons,
    )


def send_time_unavailable(engagements: pd.DataFrame) -> dict[str, Any] | None:
    """The report's send-time block when the data cannot say when customers engage, else None.

    Data with dates but no times (CDNOW: every purchase at the importer's fixed hour) puts all
    engagements at one local hour of day. A model would learn that hour back and hit@k would
    score the importer, not the customers, so send time is neither trained nor evaluated.
    """
    from training.labels import HOURS

    hours = np.unique(engagements["slot"].to_numpy() % HOURS)
    if len(hours) > 1:
        return None
    if len(hours) == 0:
        reason = "the data has no engagements (purchases, visits, cart adds, opens or clicks)"
    else:
        reason = (
            f"all {len(engagements):,} engagements fall at local hour {int(hours[0]):02d}: the data has "
            "dates but no times of day, so hour-of-week training and metrics would only measure that hour"
        )
    return {
        "status": "n/a",
        "reason": reason,
        "n_engagements_before_sampling": len(engagements),
        "local_hours_of_day": [int(h) for h in hours],
        "exported": False,
        "serving": "the server needs a send_time model: put one trained on data with times of day "
        "(same send_time_v1 feature service, e.g. make quality's) beside this propensity model",
    }


def _train_send_time(run: Run, rows: pd.DataFrame, compare: bool) -> _Stage:
    from training.datasets import training_frame
    from training.evaluate import (
        modal_scores,
        past_slot_counts,
        send_time_metrics,
        slot_frequencies,
    )
    from training.export import export_checked
    from training.send_time import (
        ALTERNATIVES,
        CANDIDATES,
        MIXTURE,
        SELECTION_RULE,
        fit_send_time,
        register_converter,
        select_structure,
    )

    register_converter()
    at = rows["engaged_at"]
    train_rows = _subsample(rows[at < run.split.train_end], run.limits.send_time_train, run.rng)
    test_rows = _subsample(rows[at >= run.split.test[0]], run.limits.send_time_test, run.rng)
    frame = training_frame(
        run.store, SEND_TIME_SERVICE, pd.concat([train_rows, test_rows], ignore_index=True)
    )
    is_test = np.arange(len(frame.rows)) >= len(train_rows)
    x, slots = frame.x, frame.rows["slot"].to_numpy()
    run.clock.done(
        "send-time training set",
        f"{len(rows):,} engagements, sampled {len(train_rows):,} train / {len(test_rows):,} test",
    )

    # Choose the structure on the validation (selection) period, fitted on engagements one
    # horizon before it, never on test; the winner is then refitted on the whole training period.
    t = frame.rows["engaged_at"]
    sel_fit = np.flatnonzero(~is_test & (t < run.split.selection_fit_end).to_numpy())
    sel_eval = np.flatnonzero(~is_test & (t >= run.split.selection_start).to_numpy())
    sel_fit = run.rng.permutation(sel_fit)[: run.limits.send_time_selection_fit]
    sel_eval = run.rng.permutation(sel_eval)[: run.limits.send_time_selection]
    selection = select_structure(
        (*CANDIDATES, *ALTERNATIVES) if compare else CANDIDATES,
        frame.features,
        (x[sel_fit], slots[sel_fit]),
        (x[sel_eval], slots[sel_eval]),
        run.seed,
        SEND_TIME_LATENCY_BUDGET_MS,
        progress=run.clock.done,
    )
    chosen = selection.chosen

    train_idx = np.flatnonzero(~is_test)
    model = fit_send_time(chosen, frame.features, x[train_idx], slots[train_idx], run.seed)
    run.clock.done("send-time fit", f"{chosen.name} on {len(train_idx):,} engagements")

    exported = export_checked(model, x[is_test], "send_time")
    probs = exported.probabilities
    y_test = slots[is_test]
    test_frame = frame.rows.loc[is_test].reset_index(drop=True)
    global_freq = slot_frequencies(slots[~is_test])
    past = past_slot_counts(rows, test_frame)
    cold = np.isnan(x[is_test]).all(axis=1)
    metrics: dict[str, Any] = {
        "n_train": len(train_idx),
        "n_test": int(is_test.sum()),
        "n_engagements_before_sampling": len(rows),
        **send_time_metrics(probs, y_test),
        "baseline_global_hit_at_3": send_time_metrics(np.tile(global_freq, (len(y_test), 1)), y_test)[
            "hit_at_3"
        ],
        "baseline_modal_hit_at_3": send_time_metrics(modal_scores(past, global_freq), y_test)["hit_at_3"],
        "cold_start_share": float(cold.mean()),
        "cold_start_hit_at_3": send_time_metrics(probs[cold], y_test[cold])["hit_at_3"]
        if cold.any()
        else None,
        "model": chosen.name,
        "mixture_weights_by_engagements": (
            {"engagements": list(WEIGHT_LEVELS), **model.component_weights(WEIGHT_LEVELS)}
            if chosen is MIXTURE
            else None
        ),
        "candidates": selection.table,
        "selection": f"{SELECTION_RULE} ({SEND_TIME_LATENCY_BUDGET_MS} ms per single-customer "
        "onnxruntime call, 1 thread); the chosen candidate is refitted on the whole training period",
        "validation": {
            "fit_engagements": len(sel_fit),
            "scored_engagements": len(sel_eval),
            "period": [run.split.selection_start.isoformat(), run.split.train_end.isoformat()],
        },
    }
    truth_probs = None
    if run.truth is not None:
        from training.simulate import true_hour_probs

        truth_probs = pd.DataFrame(true_hour_probs(run.truth), index=run.truth["customer_id"])
        oracle = send_time_metrics(truth_probs.loc[test_frame["customer_id"]].to_numpy(), y_test)
        metrics.update({f"oracle_{k}": v for k, v in oracle.items()})
    else:
        metrics.update(
            {f"oracle_{k}": None for k in ("hit_at_1", "hit_at_3", "hit_at_6", "hod_hit_at_3", "log_loss")}
        )
    metrics.update({"ort_latency_ms": exported.latency_ms, "parity_max_abs_diff": exported.max_abs_diff})
    run.clock.done(
        "send-time evaluated + parity-checked",
        f"hit@3 {metrics['hit_at_3']:.4f}, {exported.latency_ms:.4f} ms/call",
    )
    return _Stage(
        exported,
        frame.features,
        metrics,
        {"rows": {"train": len(train_idx), "test": int(is_test.sum())}, "estimator": chosen.description},
        {"probs": probs, "y_test": y_test, "test_frame": test_frame, "truth": truth_probs},
    )


def _evaluate_served(run: Run, propensity: _Stage, send_time: _Stage | None) -> dict[str, Any]:
    from training.report import served_summary
    from training.served import ServedModel, evaluate_served

    served = evaluate_served(
        run,
        ServedModel(PROPENSITY_SERVICE, propensity.exported.onnx_bytes, propensity.features),
        None
        if send_time is None
        else ServedModel(SEND_TIME_SERVICE, send_time.exported.onnx_bytes, send_time.features),
        None if send_time is None else send_time.plot_data["test_frame"],
    )
    run.clock.done("served evaluation", served_summary(served))
    return served


def _train_channel(run: Run, send_time: _Stage | None) -> Trained:
    """The best-channel model (training/channel.py), on the exported send-time model's slots."""
    from training.channel import Limits as ChannelLimits
    from training.channel import train_channel
    from training.served import ServedModel

    served = None
    if send_time is not None:
        served = ServedModel(SEND_TIME_SERVICE, send_time.exported.onnx_bytes, send_time.features)
    scale = run.limits.send_time_train / Limits().send_time_train
    return train_channel(run, served, ChannelLimits().scaled(scale))


def _plots(propensity: _Stage, send_time: _Stage | None) -> Plots:
    from training.evaluate import slot_frequencies
    from training.report import CustomerView, Plots, SendTimePlots

    if send_time is None:
        return Plots(
            y_test=propensity.plot_data["y_test"], scores=propensity.plot_data["scores"], send_time=None
        )
    st = send_time.plot_data
    test_frame: pd.DataFrame = st["test_frame"]
    busiest = test_frame["customer_id"].value_counts().index[:PLOTTED_CUSTOMERS]
    views = []
    for customer in busiest:
        mine = np.flatnonzero(test_frame["customer_id"].to_numpy() == customer)
        truth = st["truth"]
        views.append(
            CustomerView(
                customer_id=str(customer),
                predicted=st["probs"][mine[0]],
                truth=None if truth is None else truth.loc[customer].to_numpy(),
                engaged_slots=st["y_test"][mine],
            )
        )
    return Plots(
        y_test=propensity.plot_data["y_test"],
        scores=propensity.plot_data["scores"],
        send_time=SendTimePlots(
            population_predicted=st["probs"].mean(axis=0),
            population_observed=slot_frequencies(st["y_test"]),
            customers=views,
        ),
    )
