"""`nudge score-audience` then `nudge evaluate-policy` on the shared stack (a simulation with its
truth): the report gets a policy block and report.html its table and chart, and nudge's
decisions beat random hours and channels. (The arithmetic: tests/unit/test_policy_eval.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.support.stack import BIN, SIGNED_UP_ONLY, Stack, run_cli
from training.policy_eval import POLICIES


@pytest.fixture(scope="module")
def evaluated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("policy")
    for name in ("report.json", "report.html"):  # a copy: the session's models stay as trained
        shutil.copy(stack.models / name, root / name)
    plan = root / "plan.parquet"
    nudge = str(BIN / "nudge")
    run_cli(
        nudge,
        *("score-audience", "--repo", str(stack.repo), "--models", str(stack.models)),
        *("--as-of", stack.as_of.isoformat(), "--out", str(plan)),
    )
    argv = [nudge, "evaluate-policy", "--plan", str(plan), "--truth", str(stack.data / "truth.parquet")]
    argv += [
        "--events",
        str(stack.events),
        "--customers",
        str(stack.customers),
        "--report",
        str(root / "report.json"),
    ]
    for _ in range(2):  # a second run replaces the block and the page's section
        printed = run_cli(*argv, "--seed", "5")
    assert "floors: nudge/email@10" in printed
    report = json.loads((root / "report.json").read_text())
    plan_ids = set(pd.read_parquet(plan, columns=["customer_id"])["customer_id"])
    report["_plan_has_signed_up_only"] = SIGNED_UP_ONLY in plan_ids
    return report, root


def test_the_policy_block(evaluated: tuple[dict[str, Any], Path], stack: Stack) -> None:
    report, _ = evaluated
    block = report["policy"]
    assert "propensity" in report and "channel" in report, "the rest of the report is kept"
    assert block["as_of"] == pd.Timestamp(stack.as_of).isoformat() and block["window_hours"] == 24
    assert block["horizon_days"] == report["propensity"]["horizon_days"] and block["seed"] == 5
    assert block["n_without_truth"] == int(report["_plan_has_signed_up_only"]), "added by the tests: no truth"
    assert block["n_customers"] >= 700
    assert set(block["policies"]) == set(POLICIES)
    for name, row in block["policies"].items():
        assert 0 < row["engagements_per_1000"] < 1000, name
        assert row["purchases"] >= 0 and row["messages"] <= block["n_customers"], name
        assert sum(row["channel_share"].values()) == pytest.approx(1.0), name
    rows = block["policies"]
    assert rows["oracle"]["messages"] == block["n_customers"] and rows["oracle"]["channel_hit_at_1"] == 1.0
    assert rows["oracle_matched"]["messages"] == rows["nudge"]["messages"]
    assert rows["nudge"]["share_suppressed"] == pytest.approx(block["suppression"]["share"])
    assert rows["oracle"]["engagements_per_1000"] >= rows["nudge"]["engagements_per_1000"]
    assert rows["nudge"]["engagements_per_1000"] > rows["random"]["engagements_per_1000"]
    assert rows["nudge"]["engagements_per_1000"] > rows["email_10"]["engagements_per_1000"]
    assert block["suppression"]["purchases_forgone"] >= 0
    assert set(block["floors"]) == {"engagements_vs_email_10", "engagements_vs_oracle", "channel_hit_at_1"}


def test_report_html_has_the_table_and_chart_once(evaluated: tuple[dict[str, Any], Path]) -> None:
    _, root = evaluated
    page = (root / "report.html").read_text()
    assert page.count('<section id="policy">') == 1
    section = page[page.index('<section id="policy">') :]
    assert "engagements / 1,000 messages" in section and "data:image/png;base64," in section
    assert "Gap to the oracle" in section and "floors: nudge/email@10" in section
    assert "<h2>Holdout metrics</h2>" in page and page.index('<section id="policy">') < page.index(
        "<h2>Split</h2>"
    )


def test_a_purchases_only_data_set_is_refused(stack: Stack, tmp_path: Path) -> None:
    argv = [str(BIN / "nudge"), "evaluate-policy", "--plan", str(tmp_path / "plan.parquet")]
    argv += ["--truth", str(tmp_path / "truth.parquet"), "--events", str(stack.events)]
    argv += ["--customers", str(stack.customers), "--report", str(stack.models / "report.json")]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "purchases-only" in result.stderr
