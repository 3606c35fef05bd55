"""Fakes for in-process tests of the scorer, Ingest and the gRPC converters: a reader and a
live state store over dicts, and two tiny real ONNX models (built with onnx.helper, run by onnxruntime as the server does).

The models are simple on purpose, so a test can say what they answer: propensity is
``sigmoid(sum of its inputs)`` and send time puts its mass on the hours the customer's
histogram says; NaN inputs (missing features) count as 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nudge.contract.live_record import LiveRecord, decode_record
from nudge.contract.manifest import FeatureInput, Manifest, write_model_dir
from nudge.contract.week import HOURS_PER_WEEK
from service.ingest import Change
from service.models import ModelSet, load_model
from service.online.base import CustomerFeatures, FeatureStoreUnavailable
from service.scorer import CONTEXT_REFS

STATS, HISTS = "customer_stats", "customer_time_histograms"
PROPENSITY_INPUTS = (FeatureInput(f"{STATS}:purchase_count_30d"), FeatureInput(f"{STATS}:cycle_ratio"))
SEND_TIME_INPUTS = (FeatureInput(f"{HISTS}:hist_hour_of_week", HOURS_PER_WEEK),)
ALL_REFS = tuple(f.ref for f in (*PROPENSITY_INPUTS, *SEND_TIME_INPUTS)) + CONTEXT_REFS


def _graph(name: str, width: int, outputs: int, weights: np.ndarray, softmax: bool) -> bytes:
    """x[N, width] → NaN to 0 → x @ W (+ a column of zeros, then sigmoid pair, or softmax)."""
    nodes = [
        helper.make_node("IsNaN", ["x"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "x"], ["clean"]),
        helper.make_node("MatMul", ["clean", "w"], ["logits"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    else:  # logits [N, 1] → [1 - p, p]
        nodes += [
            helper.make_node("Sigmoid", ["logits"], ["p"]),
            helper.make_node("Sub", ["one", "p"], ["q"]),
            helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
        ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, outputs])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
            numpy_helper.from_array(np.ones(1, np.float32), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _write(
    root: Path,
    name: str,
    version: str,
    service: str,
    inputs: tuple[FeatureInput, ...],
    onnx_bytes: bytes,
    outputs: int,
) -> Path:
    manifest = Manifest(
        name=name,
        version=version,
        feature_service=service,
        features=inputs,
        input_name="x",
        output_name="probabilities",
        output_width=outputs,
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        created_at="2026-01-05T00:00:00Z",
        label={"horizon_days": 14},
    )
    directory = root / name / version
    write_model_dir(directory, onnx_bytes, manifest)
    return directory


def tiny_models(root: Path, version: str = "v1") -> ModelSet:
    """A real ModelSet of two tiny ONNX models written under ``root`` and loaded as the server
    loads them (sha256, shapes and a smoke inference checked)."""
    propensity = _graph("propensity", 2, 2, np.ones((2, 1)), softmax=False)
    # 10 × the histogram: the customer's own hours dominate the softmax.
    send_time = _graph("send_time", HOURS_PER_WEEK, HOURS_PER_WEEK, 10 * np.eye(HOURS_PER_WEEK), softmax=True)
    return ModelSet(
        load_model(_write(root, "propensity", version, "propensity_v1", PROPENSITY_INPUTS, propensity, 2)),
        load_model(
            _write(root, "send_time", version, "send_time_v1", SEND_TIME_INPUTS, send_time, HOURS_PER_WEEK)
        ),
    )


@dataclass
class FakeReader:
    """An OnlineFeatureReader over a dict: customer id → (values by ref, event time per view).

    Customers not in ``rows`` have no row in any view, as in a real store. ``down`` makes every
    read fail as an unreachable store does; ``reads`` records each read's ids and ``now``."""

    rows: Mapping[str, tuple[Mapping[str, object], Mapping[str, datetime | None]]] = field(
        default_factory=dict
    )
    feature_refs: tuple[str, ...] = ALL_REFS
    down: bool = False
    closed: bool = False
    reads: list[tuple[tuple[str, ...], datetime]] = field(default_factory=list)

    def read(self, customer_ids: Sequence[str], now: datetime) -> list[CustomerFeatures]:
        if self.down:
            raise FeatureStoreUnavailable("the fake store is down")
        self.reads.append((tuple(customer_ids), now))
        out = []
        for customer_id in customer_ids:
            values, times = self.rows.get(customer_id, ({}, {STATS: None, HISTS: None}))
            out.append(
                CustomerFeatures(
                    customer_id, {ref: values.get(ref) for ref in self.feature_refs}, dict(times)
                )
            )
        return out

    def close(self) -> None:
        self.closed = True


class MemoryStore:
    """A StateStore over a dict; ``before_commit`` runs inside each compare-and-set, before the
    comparison, as another writer committing at that moment would."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.before_commit: Callable[[str], None] | None = None

    def read(self, customer_ids: Sequence[str]) -> dict[str, bytes]:
        return {cid: self.records[cid] for cid in customer_ids if cid in self.records}

    def compare_and_set(self, changes: Sequence[Change]) -> set[str]:
        lost = set()
        for customer_id, expected, value in changes:
            if self.before_commit is not None:
                self.before_commit(customer_id)
            if self.records.get(customer_id) != expected:
                lost.add(customer_id)
            else:
                self.records[customer_id] = value
        return lost

    def close(self) -> None:
        pass

    def record(self, customer_id: str) -> LiveRecord:
        return decode_record(self.records[customer_id])
