"""service/reasons.py on hand-built tables: bins as the trees split (x <= edge goes low), NaN in
its own bin, columns of one reason summed, codes by sign, the fallback code, and the loader
refusing a file that is not this model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nudge.contract.manifest import REASONS_FILE, REASONS_FORMAT, FeatureInput, Manifest
from service.reasons import VOCABULARY, ReasonsError, load_reasons, parse_reasons

REFS = [
    "customer_stats:days_since_last_purchase",
    "customer_stats:purchase_count_30d",
    "customer_stats:purchase_count_90d",
    "customer_stats:brand_new_feature",
]
SHA = "ab" * 32


def document(**changes: object) -> dict[str, object]:
    columns = [
        # recency: <= 7 days +0.8, (7, 30] +0.1, > 30 -0.5, never purchased -1.0
        {"ref": REFS[0], "edges": [7.0, 30.0], "values": [0.8, 0.1, -0.5], "missing": -1.0},
        {"ref": REFS[1], "edges": [0.0], "values": [-0.1, 0.2], "missing": 0.0},
        {"ref": REFS[2], "edges": [1.0, 2.0, 5.0], "values": [-0.2, 0.0, 0.1, 0.3], "missing": 0.0},
        {"ref": REFS[3], "edges": [], "values": [0.05], "missing": -0.05},
    ]
    doc: dict[str, object] = {
        "format": REASONS_FORMAT,
        "columns": columns,
        "expected_log_odds": 0.3,
        "model_sha256": SHA,
        "units": "calibrated log-odds",
    }
    return {**doc, **changes}


def test_bins_follow_the_trees_and_nan_has_its_own() -> None:
    tables = parse_reasons(document(), REFS)
    rows = np.array(
        [
            [7.0, 0.0, 1.0, 0.0],  # on an edge: the low bin, as the trees' x <= threshold
            [np.nextafter(np.float32(7), np.float32(8)), 1.0, 1.5, 9.0],
            [31.0, 3.0, 100.0, np.nan],
            [np.nan, np.nan, np.nan, np.inf],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(
        tables.contributions(rows),
        [[0.8, -0.1, -0.2, 0.05], [0.1, 0.2, 0.0, 0.05], [-0.5, 0.2, 0.3, -0.05], [-1.0, 0.0, 0.0, 0.05]],
    )


def test_explain_sums_a_reasons_columns_and_codes_it_by_sign() -> None:
    tables = parse_reasons(document(), REFS)
    frequency = VOCABULARY["purchase_frequency"]
    recency = VOCABULARY["purchase_recency"]
    rows = np.array([[3.0, 1.0, 9.0, 0.0], [40.0, 0.0, 0.0, np.nan]], dtype=np.float32)
    first, second = tables.explain(rows)
    assert [code for code, _ in first] == [recency.up, frequency.up, "brand_new_feature_up"]
    assert first[1][1] == pytest.approx(0.5)  # 0.2 + 0.3: the two purchase counts, one reason
    assert [code for code, _ in second] == [recency.down, frequency.down, "brand_new_feature_down"]
    assert second[0][1] == pytest.approx(-0.5)
    assert tables.explain(rows, k=1) == [first[:1], second[:1]]


def test_explain_leaves_out_reasons_that_contribute_nothing() -> None:
    tables = parse_reasons(document(), REFS)
    (row,) = tables.explain(np.array([[10.0, np.nan, 1.5, 1.0]], dtype=np.float32))
    assert [code for code, _ in row] == [VOCABULARY["purchase_recency"].up, "brand_new_feature_up"]


def test_vocabulary_codes_are_unique_snake_case_and_features_belong_to_one_reason() -> None:
    codes = [code for reason in VOCABULARY.values() for code in (reason.up, reason.down)]
    assert len(codes) == len(set(codes))
    assert all(code.replace("_", "").isalnum() and code == code.lower() for code in codes)
    features = [f for reason in VOCABULARY.values() for f in reason.features]
    assert len(features) == len(set(features))


def manifest(sha: str = SHA, refs: list[str] = REFS) -> Manifest:
    return Manifest(
        name="propensity",
        version="v",
        feature_service="propensity_v1",
        features=tuple(FeatureInput(r) for r in refs),
        input_name="input",
        output_name="probabilities",
        output_width=2,
        onnx_sha256=sha,
        created_at="2026-05-01T12:30:05+00:00",
    )


def test_loader_checks_the_file_belongs_to_the_model(tmp_path: Path) -> None:
    with pytest.raises(ReasonsError, match="missing"):
        load_reasons(tmp_path, manifest())
    (tmp_path / REASONS_FILE).write_text(json.dumps(document()))
    assert load_reasons(tmp_path, manifest()).refs == tuple(REFS)
    with pytest.raises(ReasonsError, match="not this one"):
        load_reasons(tmp_path, manifest(sha="cd" * 32))
    with pytest.raises(ReasonsError, match="not the model's inputs"):
        load_reasons(tmp_path, manifest(refs=REFS[::-1]))
    (tmp_path / REASONS_FILE).write_text(json.dumps(document(format="other/1")))
    with pytest.raises(ReasonsError, match="format"):
        load_reasons(tmp_path, manifest())
    bad = document()
    bad["columns"][0]["values"] = [0.1]  # type: ignore[index]
    (tmp_path / REASONS_FILE).write_text(json.dumps(bad))
    with pytest.raises(ReasonsError, match="bad edges or values"):
        load_reasons(tmp_path, manifest())
    (tmp_path / REASONS_FILE).write_text("{")
    with pytest.raises(ReasonsError, match="not valid JSON"):
        load_reasons(tmp_path, manifest())


def test_rows_of_the_wrong_width_are_refused() -> None:
    tables = parse_reasons(document(), REFS)
    with pytest.raises(ValueError, match=r"\[n, 4\]"):
        tables.explain(np.zeros((1, 3), dtype=np.float32))


def test_one_row_explains_as_the_batch_does() -> None:
    """A Score's single row takes the plain-Python path; it must answer as the numpy path does
    for the same row in a batch: on edges, NaN, infinities and values in between."""
    tables = parse_reasons(document(), REFS)
    rng = np.random.default_rng(4)
    rows = rng.choice(
        np.array([np.nan, -np.inf, np.inf, 0.0, 1.0, 1.5, 2.0, 5.0, 7.0, 7.5, 30.0, 31.0], dtype=np.float32),
        size=(200, len(REFS)),
    )
    batch = tables.explain(rows)
    for row, expected in zip(rows, batch, strict=True):
        (single,) = tables.explain(row[np.newaxis, :])
        assert [code for code, _ in single] == [code for code, _ in expected]
        assert [c for _, c in single] == pytest.approx([c for _, c in expected], abs=1e-12)
