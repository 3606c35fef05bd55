"""Reason codes for the propensity: which features moved it most for this customer.

Training (training/reasons.py) writes ``reasons.json`` beside the propensity model: per input
column, bin edges and the mean exact Shapley value (path-dependent TreeSHAP of the calibrated
log-odds) of that column over the training rows in each bin, NaN in a bin of its own. Serving
looks each column's value up in its table (a "binned mean Shapley" surrogate: additive, no
interactions), adds the contributions of the columns that share a reason (``VOCABULARY``),
and returns the ``k`` reasons with the largest absolute contribution, each as the code for
its direction: the reason's ``up`` code when it raised the propensity, ``down`` when it
lowered it. Contributions are in calibrated log-odds, relative to the population's expected
value (the Shapley base value).

The codes are the API's vocabulary and live only here. A feature without an entry (a model
input added later) is its own reason, coded ``<feature>_up`` / ``<feature>_down``.

Cost: one binary search of each column's values in its edges (a numpy call per column: for
ScoreBatch(100) 54 µs against 121 µs for comparing the batch with the padded [columns, edges]
matrix at once, and no [rows, columns, edges] temporary for an audience's chunks), one gather
and a partial sort. One row (a Score) is looked up in plain Python (:meth:`_explain_one`).
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudge.contract.manifest import (
    REASONS_FILE,
    REASONS_FORMAT,
    Manifest,
    ManifestError,
    input_columns,
    read_json_object,
)

TOP_K = 3


@dataclass(frozen=True)
class Reason:
    """Columns whose contributions add up to one reason, and its code by direction."""

    features: tuple[str, ...]  # feature names (the part of the ref after "view:")
    up: str  # the reason raised the propensity
    down: str  # ... lowered it


# Reason -> the features behind it and its two codes. The names read as the usual case (a
# recent purchase raising the propensity, say); the code itself only says which way this
# customer's values moved it.
VOCABULARY: dict[str, Reason] = {
    "purchase_frequency": Reason(
        (
            "purchase_count_7d",
            "purchase_count_30d",
            "purchase_count_90d",
            "purchase_count_total",
            "amount_total_90d",
        ),
        up="frequent_buyer",
        down="infrequent_buyer",
    ),
    "purchase_recency": Reason(
        ("days_since_last_purchase",), up="recent_purchase", down="long_since_purchase"
    ),
    "purchase_cycle": Reason(
        ("cycle_ratio", "gap_mean_days", "gap_std_days"),
        up="purchase_cycle_due",
        down="purchase_cycle_not_due",
    ),
    "site_visits": Reason(
        ("site_visit_count_7d", "site_visit_count_30d"), up="recent_site_visits", down="few_site_visits"
    ),
    "cart": Reason(("cart_add_count_30d",), up="recent_cart_add", down="no_recent_cart_add"),
    "engagement": Reason(
        ("days_since_last_engagement", "engagement_count_decayed"), up="recently_engaged", down="dormant"
    ),
    "marketing_response": Reason(
        ("email_open_rate_90d", "email_click_rate_90d", "sms_click_rate_90d", "push_open_rate_90d"),
        up="responsive_to_marketing",
        down="unresponsive_to_marketing",
    ),
    "marketing_contact": Reason(("sends_30d",), up="recently_contacted", down="contact_fatigue"),
    "tenure": Reason(("tenure_days",), up="tenure_up", down="tenure_down"),
    "basket_value": Reason(("amount_avg",), up="basket_value_up", down="basket_value_down"),
    "decide_time": Reason(("decide_time_hours",), up="decide_time_up", down="decide_time_down"),
}


class ReasonsError(ManifestError):
    """A reasons file that must not be served (missing, malformed, or for another model)."""


def reason_of(feature: str) -> tuple[str, Reason]:
    """The reason a feature (name, or "view:name", or "view:name[i]") belongs to."""
    name = feature.split(":", 1)[-1].split("[", 1)[0]
    for key, reason in VOCABULARY.items():
        if name in reason.features:
            return key, reason
    return name, Reason((name,), up=f"{name}_up", down=f"{name}_down")


@dataclass(frozen=True)
class ReasonTables:
    """The loaded tables, ready to explain batches of model-input rows."""

    refs: tuple[str, ...]  # input columns, in model-input order
    edges: np.ndarray  # float32 [columns, width], each row padded with +inf
    values: np.ndarray  # float64 [columns, width + 2]: value bins 0..width, then the NaN bin
    groups: np.ndarray  # float64 [columns, reasons]: 1 where the column belongs to the reason
    codes: tuple[tuple[str, str], ...]  # per reason: (up, down)
    expected_log_odds: float
    model_sha256: str
    columns: np.ndarray  # arange(columns): the gather's column index, made once

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        """Per-column contributions [n, columns] (calibrated log-odds) of float32 input rows."""
        x = np.asarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.refs):
            raise ValueError(f"rows should be [n, {len(self.refs)}], got {list(x.shape)}")
        # The count of a column's edges below x (the trees' rule, edges[i-1] < x <= edges[i]);
        # the +inf pads are never below.
        bins = np.empty(x.shape, dtype=np.intp)
        for j, (edges, column) in enumerate(zip(self.edges, x.T, strict=True)):
            bins[:, j] = np.searchsorted(edges, column)
        bins[np.isnan(x)] = self.values.shape[1] - 1
        return np.asarray(self.values[self.columns, bins])

    def explain(self, rows: np.ndarray, k: int = TOP_K) -> list[list[tuple[str, float]]]:
        """Per row, up to ``k`` (code, contribution) pairs, largest |contribution| first
        (:meth:`top` as lists)."""
        if rows.shape == (1, len(self.refs)):
            return [self._explain_one(rows[0].tolist(), k)]
        codes, values = self.top(rows, k)
        return [
            [(c, v) for c, v in zip(cs, vs, strict=True) if c is not None]
            for cs, vs in zip(codes.tolist(), values.tolist(), strict=True)
        ]

    def top(self, rows: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` reasons of each row as columns: codes (object [n, k]; None past a row's
        last reason) and contributions (float64 [n, k]), largest |contribution| first.

        Reasons contributing exactly 0 (a column the trees never split on) are left out.
        One row (a Score) takes :meth:`_explain_one`: a dozen numpy calls on 22 numbers cost
        more than plain Python's bisections."""
        if rows.shape == (1, len(self.refs)):
            one = self._explain_one(rows[0].tolist(), k)
            codes = np.full((1, k), None, dtype=object)
            values = np.zeros((1, k))
            for j, (code, value) in enumerate(one):
                codes[0, j], values[0, j] = code, value
            return codes, values
        by_reason = self.contributions(rows) @ self.groups
        order = (-np.abs(by_reason)).argsort(axis=1)[:, :k]
        chosen = by_reason[np.arange(len(by_reason))[:, None], order]
        up, down = self._code_columns
        codes = np.where(chosen > 0, up[order], down[order])
        codes[chosen == 0.0] = None  # zeros sort last: None only past the last reason
        return codes, chosen

    @functools.cached_property
    def _code_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Each reason's up and down code as object arrays (indexed by reason), made once."""
        return (
            np.array([up for up, _ in self.codes], dtype=object),
            np.array([down for _, down in self.codes], dtype=object),
        )

    @functools.cached_property
    def _lists(self) -> tuple[list[list[float]], list[list[float]], list[int], int]:
        """Per column: its edges (without padding) and bin values (NaN bin last) as Python
        floats, its reason's index; and the number of reasons. Built on first use, once."""
        edges = [[e for e in row if e != math.inf] for row in self.edges.tolist()]
        values = self.values.tolist()
        return edges, values, self.groups.argmax(axis=1).tolist(), self.groups.shape[1]

    def _explain_one(self, row: list[float], k: int) -> list[tuple[str, float]]:
        """:meth:`explain` of one row: a value falls in bin ``bisect_left(edges, x)`` (the
        trees' rule, ``edges[i-1] < x <= edges[i]``: the count of edges below x), NaN in the
        last bin."""
        edges, values, reason_of_column, count = self._lists
        by_reason = [0.0] * count
        for j, x in enumerate(row):
            by_reason[reason_of_column[j]] += values[j][-1 if x != x else bisect.bisect_left(edges[j], x)]
        top = sorted(range(count), key=lambda r: -abs(by_reason[r]))[:k]
        codes = self.codes
        return [
            (codes[r][0] if by_reason[r] > 0 else codes[r][1], by_reason[r])
            for r in top
            if by_reason[r] != 0.0
        ]


def parse_reasons(document: dict[str, Any], refs: Sequence[str], source: str = REASONS_FILE) -> ReasonTables:
    """Build ``ReasonTables`` from the decoded JSON, for a model whose input columns are ``refs``."""
    try:
        if document.get("format") != REASONS_FORMAT:
            raise ReasonsError(f"{source}: format {document.get('format')!r} is not {REASONS_FORMAT!r}")
        columns = document["columns"]
        found = [c["ref"] for c in columns]
        if found != list(refs):
            raise ReasonsError(f"{source}: columns {found} are not the model's inputs {list(refs)}")
        width = max((len(c["edges"]) for c in columns), default=0)
        edges = np.full((len(columns), width), np.inf, dtype=np.float32)
        values = np.zeros((len(columns), width + 2))
        for j, column in enumerate(columns):
            e = np.asarray(column["edges"], dtype=np.float32)
            v = np.asarray(column["values"], dtype=np.float64)
            if len(v) != len(e) + 1 or np.any(np.diff(e) <= 0) or not np.all(np.isfinite(v)):
                raise ReasonsError(f"{source}: column {column['ref']}: bad edges or values")
            edges[j, : len(e)] = e
            values[j, : len(v)] = v
            values[j, len(v) : width + 1] = v[-1]  # padding bins: above the last edge
            values[j, -1] = float(column["missing"])
        reasons = dict(reason_of(ref) for ref in refs)
        keys = list(reasons)
        groups = np.zeros((len(columns), len(keys)))
        for j, ref in enumerate(refs):
            groups[j, keys.index(reason_of(ref)[0])] = 1.0
        return ReasonTables(
            refs=tuple(refs),
            edges=edges,
            values=values,
            groups=groups,
            codes=tuple((reasons[key].up, reasons[key].down) for key in keys),
            expected_log_odds=float(document["expected_log_odds"]),
            model_sha256=str(document["model_sha256"]),
            columns=np.arange(len(columns)),
        )
    except ReasonsError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ReasonsError(f"{source}: malformed reasons file ({exc!r})") from exc


def load_reasons(version_dir: Path, manifest: Manifest) -> ReasonTables:
    """The reason tables beside a propensity model, checked against its manifest: same input
    columns, and written for this very ONNX file (its sha256)."""
    path = version_dir / REASONS_FILE
    document = read_json_object(path, ReasonsError)
    tables = parse_reasons(document, input_columns(manifest.features), str(path))
    if tables.model_sha256 != manifest.onnx_sha256:
        raise ReasonsError(f"{path}: written for model sha256 {tables.model_sha256[:12]}…, not this one")
    return tables
