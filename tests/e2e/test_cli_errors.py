"""Bad command-line input gets one clear line on stderr and a non-zero exit, never a traceback.

Every case runs the real ``nudge`` executable, as a user would, and fails before any heavy work
(no case imports Feast), so the sweep stays fast. argparse's own usage errors keep their form
(usage, then ``error:``, exit 2).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from nudge import cli
from service.config import Settings
from service.security import SecurityError, add_port
from tests.support.stack import BIN, FEATURE_REPO, free_port


@dataclass(frozen=True)
class Place:
    """What the cases' placeholders stand for: a Feast repo, an empty models directory, a plain
    file, a path that does not exist, a port another socket listens on and a free one."""

    repo: Path
    models: Path
    file: Path
    missing: Path
    taken: int
    free: int

    def fill(self, words: list[str]) -> list[str]:
        return [word.format(**vars(self)) for word in words]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port a plain (not SO_REUSEPORT) listener holds for the whole test."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


@pytest.fixture
def place(tmp_path: Path, taken_port: int) -> Place:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(FEATURE_REPO / "feature_store.yaml", repo / "feature_store.yaml")
    (tmp_path / "models").mkdir()
    (tmp_path / "notes.json").write_text("[]\n")
    files = (tmp_path / "models", tmp_path / "notes.json", tmp_path / "missing.parquet")
    return Place(repo, *files, taken=taken_port, free=free_port())


def nudge(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "nudge"), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,  # relative defaults (feature_repo, models) must not find the project's own
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], command: str, *named: str) -> str:
    """Non-zero exit, no traceback, and stderr exactly ``nudge COMMAND: ...`` naming ``named``."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nudge {command}: "), result.stderr
    for text in named:
        assert text in lines[0]
    return lines[0]


SERVE = ["serve", "--repo", "{repo}", "--models", "{models}", "--plaintext", "true"]
FEATURES = ["features", "--events", "{file}", "--customers", "{file}", "--repo", "{repo}"]
TRAIN = ["train", "--repo", "{repo}", "--out", "{models}", "--events", "{file}", "--customers", "{file}"]
DEMO = ["demo", "--repo", "{repo}", "--data", "{models}/data", "--models", "{models}"]

# (argv, what the one line must name); {placeholders} are Place's fields.
ONE_LINE = [
    pytest.param(
        ["serve", "--repo", "{repo}", "--models", "{models}"],
        ["no TLS configured", "--plaintext true"],
        id="serve-as-its-help-says-without-tls",
    ),
    pytest.param([*SERVE, "--port", "99999"], ["--port 99999", "1..65535"], id="serve-port-out-of-range"),
    pytest.param([*SERVE, "--port", "{taken}"], ["--port {taken}", "already in use"], id="serve-port-taken"),
    pytest.param(
        [*SERVE, "--port", "{taken}", "--workers", "2"],
        ["--port {taken}", "in use"],
        id="serve-workers-port-taken",
    ),
    pytest.param(
        [*SERVE, "--port", "{free}", "--metrics-port", "{taken}"],
        ["--metrics-port {taken}", "in use"],
        id="serve-metrics-port-taken",
    ),
    pytest.param(
        ["serve", "--repo", "{models}", "--models", "{models}", "--plaintext", "true"],
        ["{models}", "no feature_store.yaml"],
        id="serve-repo-without-feature-store-yaml",
    ),
    pytest.param(
        ["serve", "--repo", "{repo}", "--models", "{missing}", "--plaintext", "true"],
        ["{missing}", "no such directory", "nudge train"],
        id="serve-models-missing",
    ),
    pytest.param(
        ["features", "--events", "{missing}", "--customers", "{file}", "--repo", "{repo}"],
        ["--events {missing}", "no such file"],
        id="features-events-missing",
    ),
    pytest.param(FEATURES, ["notes.json", "unsupported file type"], id="features-not-a-table"),
    pytest.param(
        ["features", "--events", "{file}", "--customers", "{file}", "--repo", "{file}"],
        ["--repo {file}", "not a directory"],
        id="features-repo-is-a-file",
    ),
    pytest.param(
        ["train", "--repo", "{models}", *TRAIN[3:]],
        ["--repo {models}", "feature_store.yaml"],
        id="train-no-repo",
    ),
    pytest.param(
        [*TRAIN, "--truth", "{missing}"], ["--truth {missing}", "no such file"], id="train-truth-missing"
    ),
    pytest.param(
        [*TRAIN[:3], "--out", "{file}/models", *TRAIN[5:]],
        ["--out {file}/models", "not a directory"],
        id="train-out",
    ),
    pytest.param(
        ["simulate", "--out", "{file}/data"], ["--out {file}/data", "not a directory"], id="simulate-out"
    ),
    pytest.param(["score", "--now", "yesterday", "c1"], ["--now", "'yesterday'"], id="score-bad-time"),
    pytest.param(["score", "--quiet", "late", "c1"], ["--quiet", "22-7"], id="score-bad-quiet-hours"),
    pytest.param(["score", "--tls-ca", "{missing}", "c1"], ["{missing}"], id="score-ca-missing"),
    pytest.param(
        ["ingest", "--events", "{missing}"],
        ["--events {missing}", "no such file"],
        id="ingest-events-missing",
    ),
    pytest.param(
        ["ingest", "--events", "{file}"],
        ["{file}", "not a readable Parquet or CSV"],
        id="ingest-events-not-a-table",
    ),
    pytest.param(
        ["bench", "--ids", "{missing}"], ["--ids {missing}", "no such file"], id="bench-ids-missing"
    ),
    pytest.param(
        ["bench", "ghz-data", "--ids", "{file}", "--out", "{repo}"],
        ["--out {repo}", "directory"],
        id="ghz-data-out",
    ),
    pytest.param(
        ["bench", "features", "--repo", "{models}"],
        ["--repo {models}", "feature_store.yaml"],
        id="bench-features-repo",
    ),
    pytest.param(
        [*DEMO, "--port", "{taken}"], ["--port {taken}", "in use"], id="demo-port-taken-before-any-step"
    ),
    pytest.param([*DEMO, "--port", "70000"], ["--port 70000", "1..65535"], id="demo-port-out-of-range"),
]


@pytest.mark.parametrize(("argv", "named"), ONE_LINE)
def test_bad_input_is_one_line_naming_the_problem(argv: list[str], named: list[str], place: Place) -> None:
    result = nudge(*place.fill(argv), cwd=place.repo.parent)
    assert_one_line(result, argv[0], *place.fill(named))


def test_nothing_listening_is_one_line(tmp_path: Path) -> None:
    result = nudge("score", "--target", f"127.0.0.1:{free_port()}", "--timeout", "2", "c1", cwd=tmp_path)
    assert_one_line(result, "score", "UNAVAILABLE")
    events = tmp_path / "events.csv"
    events.write_text("customer_id,event_timestamp,event_type,amount\nc1,2026-01-05T10:00:00Z,site_visit,\n")
    result = nudge("ingest", "--events", str(events), "--target", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    assert_one_line(result, "ingest", "UNAVAILABLE")


def test_a_bad_environment_setting_names_the_variable(place: Place) -> None:
    result = nudge(*place.fill(SERVE), cwd=place.repo.parent, env={"NUDGE_PORT": "fifty"})
    assert_one_line(result, "serve", "NUDGE_PORT='fifty'", "unset it")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_startup_refusal_is_printed_once(place: Place, workers: str) -> None:
    """The server binds, then finds no models: every worker refuses, the line appears once."""
    argv = [*place.fill(SERVE), "--port", str(place.free), "--workers", workers]
    result = nudge(*argv, cwd=place.repo.parent)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    refusal = f"nudge serve: refusing to start: no versions of model 'propensity' under {place.models}"
    assert result.stderr.count("no versions of model") == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(refusal), result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["simulate", "--days", "0", "--out", "data"], id="simulate-days"),
        pytest.param([*FEATURES, "--cadence-days", "0"], id="features-cadence"),
        pytest.param([*TRAIN, "--horizon-days", "-3"], id="train-horizon"),
        pytest.param([*TRAIN, "--sample-scale", "0"], id="train-sample-scale"),
        pytest.param(["demo", "--customers", "many"], id="demo-customers"),
    ],
)
def test_argparse_errors_keep_their_form(argv: list[str], place: Place) -> None:
    result = nudge(*place.fill(argv), cwd=place.repo.parent)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr.splitlines()[-1]


def test_a_failed_bind_is_a_refusal_naming_the_address(taken_port: int) -> None:
    """Behind the probe, gRPC's own bind failure (a port taken meanwhile) is a refusal too."""

    async def bind() -> None:
        server = grpc.aio.server()
        try:
            add_port(server, Settings(port=taken_port, plaintext=True))
        finally:
            await server.stop(0)

    with pytest.raises(SecurityError, match=f"127.0.0.1:{taken_port}"):
        asyncio.run(bind())


def _command(run: object) -> SimpleNamespace:
    return SimpleNamespace(__doc__="", add_arguments=lambda parser: None, run=run)


def test_a_file_error_the_checks_missed_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(args: object) -> int:
        raise FileNotFoundError(2, "No such file or directory", "gone.parquet")

    monkeypatch.setattr(cli, "load", lambda command: _command(run))
    assert cli.main(["train"]) == 1
    assert capsys.readouterr().err == "nudge train: gone.parquet: No such file or directory; check the path\n"


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(args: object) -> int:
        raise ZeroDivisionError("a bug, not the user's input")

    monkeypatch.setattr(cli, "load", lambda command: _command(run))
    with pytest.raises(ZeroDivisionError):
        cli.main(["train"])
