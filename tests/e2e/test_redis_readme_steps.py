"""README's Redis steps, run verbatim after a demo-style SQLite run, serve real values.

Each configuration keeps its own registry: with a shared one, `materialize-incremental`
resumed from the SQLite run's end time and left Redis holding only the last few minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.support.stack import BIN, FEATURE_REPO, ROOT, Stack, start_redis

STEPS = re.compile(
    r"^(?:export NUDGE_REDIS=.*|feast -c feature_repo -f feature_repo/feature_store\.redis\.yaml .*)$"
)


def readme_redis_steps() -> list[str]:
    """The shell lines README gives for the Redis variant, in order (comments stripped)."""
    lines = [line.split("  #")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()]
    steps = [line for line in lines if STEPS.match(line)]
    assert [s.split()[0] for s in steps] == ["export", "feast", "feast"], steps
    return steps


def online(repo: Path, yaml: str, customers: list[str]) -> pd.DataFrame:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / yaml)
    service = store.get_feature_service("propensity_v1")
    rows = [{"customer_id": c} for c in customers]
    frame = store.get_online_features(features=service, entity_rows=rows).to_df()
    return frame.set_index("customer_id").sort_index(axis=1)


def test_readme_redis_steps_after_a_sqlite_run_serve_every_customer(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stack ran the SQLite default's steps (apply, materialize-incremental) in its repo:
    # copy it whole, registry and online store included, as a user's feature_repo would be.
    repo = tmp_path / "feature_repo"
    shutil.copytree(stack.repo, repo)
    shutil.copy(FEATURE_REPO / "feature_store.redis.yaml", repo / "feature_store.redis.yaml")
    assert (repo / "data" / "registry.db").exists(), "premise: the SQLite run left its registry"
    redis = start_redis()
    try:
        script = "\n".join(["set -e", *readme_redis_steps()]).replace("redis-host:6379", redis.address)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

        stats = pd.read_parquet(repo / "data" / "customer_stats.parquet", columns=["customer_id"])
        customers = sorted(stats["customer_id"].unique())[:50]
        from_sqlite = online(repo, "feature_store.yaml", customers)
        monkeypatch.setenv("NUDGE_REDIS", redis.address)  # Feast expands it when it reads the yaml
        from_redis = online(repo, "feature_store.redis.yaml", customers)
    finally:
        redis.stop()
    assert from_sqlite.notna().all(axis=1).sum() > 0, "premise: SQLite serves complete rows"
    assert from_redis["tenure_days"].notna().all(), "every customer's stats row is in Redis"
    pd.testing.assert_frame_equal(from_redis, from_sqlite)
