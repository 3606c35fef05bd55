"""A propensity model whose trees also read the BG/NBD columns: exported with parity (the
columns are computed by the same ONNX nodes in training and serving), and its reasons still
add up to its calibrated log-odds with the columns credited to the inputs they come from."""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline

from tests.support.bgnbd import LAYOUT, TRUE, as_model_inputs, simulate_bgnbd
from training.export import export_checked
from training.propensity import fit_propensity
from training.purchase_process import PurchaseProcess, fit_bgnbd, posterior, process_inputs, source_columns
from training.reasons import exact_shapley, fit_reason_tables


def test_pipeline_exports_with_parity_and_reasons_add_up() -> None:
    rng = np.random.default_rng(11)
    x, t_x, ages = simulate_bgnbd(TRUE, 4000, rng)
    inputs = as_model_inputs(x, t_x, ages, rng)
    columns = source_columns(LAYOUT)
    y = (rng.random(len(x)) < posterior(TRUE, x, t_x, ages, 30.0)[:, 1]).astype(int)
    process = PurchaseProcess(columns, fit_bgnbd(*process_inputs(inputs, columns)), 30.0).fit(inputs)
    trees = fit_propensity(process.transform(inputs), y, np.arange(len(y)).astype(str), seed=0)
    model = Pipeline([("purchase_process", process), ("calibrated_trees", trees)])

    exported = export_checked(model, inputs, "propensity")  # raises unless within 1e-5 everywhere
    assert exported.max_abs_diff <= 1e-5

    phi, base = exact_shapley(model, inputs[:300])
    assert phi.shape == (300, len(LAYOUT))
    p = model.predict_proba(inputs[:300].astype(np.float64))[:, 1]
    np.testing.assert_allclose(phi.sum(axis=1) + base, np.log(p / (1 - p)), atol=1e-4)
    # The derived columns' share went to the three inputs they are computed from.
    sources = list(columns)
    others = [c for c in range(len(LAYOUT)) if c not in sources]
    assert np.abs(phi[:, sources]).mean() > 5 * np.abs(phi[:, others]).mean()

    tables = fit_reason_tables(model, inputs, LAYOUT, seed=0, sample_rows=500)
    assert [c["ref"] for c in tables["columns"]] == [f.ref for f in LAYOUT]
    assert all(len(tables["columns"][c]["edges"]) >= 8 for c in sources)
