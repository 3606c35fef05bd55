"""Model hot swap through the real server: new versions are validated, then swapped in
under load with no failed call; broken versions are rejected while the old ones keep serving."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from tests.support.ops import scrape, value
from tests.support.stack import ServerProcess, Stack, free_port


def new_version(
    models: Path,
    name: str,
    version: str,
    edit_manifest: Callable[[dict[str, Any]], None] | None = None,
    corrupt: bool = False,
) -> str:
    """Publish a copy of the current version of ``name`` as ``version``, atomically (rename)."""
    (current,) = sorted((models / name).iterdir())[-1:]
    staging = models / f".staging-{version}"
    shutil.copytree(current, staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = version
    if edit_manifest is not None:
        edit_manifest(manifest)
    (staging / "manifest.json").write_text(json.dumps(manifest))
    if corrupt:
        onnx = staging / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:200])
        manifest["onnx_sha256"] = hashlib.sha256(onnx.read_bytes()).hexdigest()
        (staging / "manifest.json").write_text(json.dumps(manifest))
    staging.rename(models / name / version)
    return version


@pytest.fixture
def swap_server(stack: Stack, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    models = tmp_path / "models"
    shutil.copytree(stack.models, models)
    local = Stack(stack.data, stack.repo, models, stack.as_of)
    flags = ("--model-poll-seconds", "0.2", "--metrics-port", str(free_port()))
    with ServerProcess(local, *flags) as proc:
        yield proc, models


def reloads(proc: ServerProcess, model: str, outcome: str) -> float:
    port = int(proc.argv[proc.argv.index("--metrics-port") + 1])
    return value(scrape(port), "nudge_model_reloads_total", model=model, outcome=outcome)


class Load:
    """A steady stream of Score calls from a real client, counting outcomes and versions."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.running = True
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            i = 0
            while self.running:
                i += 1
                try:
                    reply = stub.Score(pb.ScoreRequest(customer_id=f"c{i % 500:06d}"), timeout=2)
                    self.outcomes["OK"] += 1
                    self.versions[" ".join(f"{m.name}={m.version}" for m in reply.models)] += 1
                except grpc.RpcError as exc:
                    self.outcomes[exc.code().name] += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join(timeout=10)


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_new_version_swaps_in_under_load_without_failures(swap_server: tuple[ServerProcess, Path]) -> None:
    proc, models = swap_server
    with Load(proc.target) as load:
        assert wait_for(lambda: load.outcomes["OK"] > 50)
        version = new_version(models, "propensity", "29990101T000000Z-newmodel")
        assert wait_for(lambda: sum(n for v, n in load.versions.items() if version in v) > 50), load.versions
    assert set(load.outcomes) == {"OK"}, load.outcomes
    assert len(load.versions) == 2
    assert reloads(proc, "propensity", "swapped") == 1
    assert reloads(proc, "propensity", "rejected") == 0


@pytest.mark.parametrize("breakage", ["corrupt onnx", "missing feature"])
def test_broken_version_is_rejected_and_old_one_keeps_serving(
    swap_server: tuple[ServerProcess, Path], breakage: str
) -> None:
    proc, models = swap_server

    def rename_feature(manifest: dict[str, Any]) -> None:
        manifest["features"][0]["ref"] = "customer_stats:no_such_feature"

    with Load(proc.target) as load:
        assert wait_for(lambda: load.outcomes["OK"] > 20)
        (before,) = load.versions
        if breakage == "corrupt onnx":
            new_version(models, "send_time", "29990101T000000Z-broken", corrupt=True)
        else:
            new_version(models, "propensity", "29990101T000000Z-broken", edit_manifest=rename_feature)
        time.sleep(1.5)  # several poll intervals
        served = load.outcomes["OK"]
        assert wait_for(lambda: load.outcomes["OK"] > served + 20)
    assert set(load.outcomes) == {"OK"}, load.outcomes
    assert set(load.versions) == {before}
    model = "send_time" if breakage == "corrupt onnx" else "propensity"
    assert reloads(proc, model, "rejected") == 1  # counted once, not once per poll
    assert reloads(proc, model, "swapped") == 0
    proc.stop()
    log = proc.log()
    assert "rejected model" in log and "29990101T000000Z-broken" in log
