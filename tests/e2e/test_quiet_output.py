"""A newcomer's first run is quiet: no third-party noise in what `nudge train` and `nudge serve`
print, while nudge's own progress and log lines stay.

pytest ignores DeprecationWarnings (pyproject), so every check runs a real subprocess with
``-W default`` and reads its output the way a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.stack import BIN, ServerProcess, Stack

IBIS_WARNING = "fetch_arrow_table() is deprecated"
ONNX_WARNING = "Expected an int, got a boolean"
REFRESHING = "so refreshing"

# Makes the third-party calls that used to warn (ibis reading through duckdb, as Feast's
# offline store does; skl2onnx converting a boosted model), then one deprecation of its own,
# which must still show: the filters are that narrow.
PROBE = """
import sys, warnings
import ibis, numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from skl2onnx import to_onnx
if sys.argv[1] == "quiet":
    from nudge.third_party import quiet_known_warnings
    quiet_known_warnings()
con = ibis.duckdb.connect()
con.raw_sql("create table t as select 1 as a")
con.get_schema("t")  # ibis calls duckdb's fetch_arrow_table()
x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
to_onnx(HistGradientBoostingClassifier(max_iter=3).fit(x, x[:, 0] > 0), x[:1])
warnings.warn("nudge probe deprecation", DeprecationWarning)
"""

# Configures logging as `nudge serve` does, then reads the registry the way Feast's API does
# by default (no cache), at INFO and at DEBUG.
REGISTRY = """
import logging, sys
from feast import FeatureStore
from service import config, logs
store = FeatureStore(repo_path=sys.argv[1])
for level in ("INFO", "DEBUG"):
    logs.configure(config.Settings(log_level=level))
    print(f"-- {level}", file=sys.stderr, flush=True)
    store.get_feature_service("propensity_v1")
    logging.getLogger("nudge.probe").info("nudge's own INFO line")
"""


def python(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this venv's python with every warning shown once per location, as in a shell."""
    result = subprocess.run(
        [sys.executable, "-W", "default", *argv], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    assert result.returncode == 0, f"{argv} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def test_known_deprecations_are_silenced_and_nothing_else(tmp_path: Path) -> None:
    loud = python("-c", PROBE, "loud", cwd=tmp_path).stderr
    # The duckdb pin (pyproject) keeps ibis's call undeprecated, in Feast's own CLI too.
    assert IBIS_WARNING not in loud, loud
    # If this fails, skl2onnx was fixed: drop its entry from nudge.third_party.KNOWN_WARNINGS.
    assert ONNX_WARNING in loud, "skl2onnx no longer puts a bool in an int attribute"
    quiet = python("-c", PROBE, "quiet", cwd=tmp_path).stderr
    assert IBIS_WARNING not in quiet and ONNX_WARNING not in quiet, quiet
    assert "nudge probe deprecation" in quiet, quiet


def test_registry_refresh_lines_are_kept_for_debug_only(stack: Stack, tmp_path: Path) -> None:
    stderr = python("-c", REGISTRY, str(stack.repo), cwd=tmp_path).stderr
    info, debug = stderr.split("-- DEBUG")
    assert REFRESHING not in info, info
    assert "nudge's own INFO line" in info, info
    assert REFRESHING in debug, debug


def test_server_start_up_says_what_matters_and_nothing_else(stack: Stack) -> None:
    with ServerProcess(stack, env={"PYTHONWARNINGS": "default"}) as server:
        log = server.log()
    assert "SERVING on" in log
    assert "serving PLAINTEXT" in log  # a warning a user needs stays
    assert REFRESHING not in log, log
    assert "Warning: " not in log, log  # no warnings-module line (category: message) at all


def test_train_prints_progress_without_third_party_warnings(stack: Stack, tmp_path: Path) -> None:
    argv = [str(BIN / "nudge"), "train", "--repo", str(stack.repo), "--out", str(tmp_path / "models")]
    argv += ["--events", str(stack.events), "--customers", str(stack.customers), "--sample-scale", "0.1"]
    result = python(*argv, cwd=tmp_path)
    for progress in ("load:", "propensity fit", "parity-checked", "export:", "done in"):
        assert progress in result.stdout, result.stdout
    assert "DeprecationWarning" not in result.stderr, result.stderr
