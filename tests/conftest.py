"""Shared fixtures: real services started once per test session, never mocks.

``redis_server`` starts its own ``redis-server`` on a free port and stops it by PID, so tests
never depend on, or disturb, a Redis someone else runs. A missing binary fails loudly. The
helpers behind them are in ``tests/support``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pandas as pd
import pytest

from tests.support.stack import (
    BIN,
    RedisServer,
    ServerProcess,
    Stack,
    copy_feature_repo,
    materialize,
    run_cli,
    stack_data,
    start_redis,
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


# --- the whole stack, built once per test session through the real commands -------------------


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """simulate → features → feast apply → materialize → train, with the CLI a user runs.

    The simulated history ends at today's 00:00 UTC (the simulator's default: the server's
    own clock then sees fresh features), and ``as_of`` is the newest snapshot: the first
    midnight after the last event. What the tests need from the draw is added explicitly
    (``stack_data``), and tests/unit/test_stack_dates.py checks it holds for any end date."""
    root = tmp_path_factory.mktemp("stack")
    data, models = root / "data", root / "models"
    repo = copy_feature_repo(root / "repo")
    nudge = str(BIN / "nudge")
    stack_data(data)
    events, customers = str(data / "events.parquet"), str(data / "customers.parquet")
    run_cli(nudge, "features", "--events", events, "--customers", customers, "--repo", str(repo))
    last_event = pd.read_parquet(events, columns=["event_timestamp"])["event_timestamp"].max()
    as_of = (last_event.floor("D") + pd.Timedelta(days=1)).to_pydatetime()
    materialize(repo)
    run_cli(
        nudge,
        "train",
        "--repo",
        str(repo),
        "--out",
        str(models),
        "--events",
        events,
        "--customers",
        customers,
    )
    return Stack(data, repo, models, as_of)


@pytest.fixture(scope="session")
def redis_stack(stack: Stack, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The same data and models with the production (Redis) online store."""
    repo = copy_feature_repo(tmp_path_factory.mktemp("redis_repo"), redis_address=redis_server.address)
    for table in (stack.repo / "data").glob("*.parquet"):
        shutil.copy(table, repo / "data" / table.name)
    materialize(repo)
    return Stack(stack.data, repo, stack.models, stack.as_of)


@pytest.fixture(scope="session")
def server(stack: Stack) -> Iterator[ServerProcess]:
    """One server on the SQLite stack shared by the read-only API tests."""
    with ServerProcess(stack) as proc:
        yield proc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Spark engine's tests run first. PySpark starts its JVM gateway with fork and a Python
    ``preexec_fn``; late in the whole suite, after many in-process gRPC servers and clients, the
    gateway exited before answering (JAVA_GATEWAY_EXITED) in a CI run, while the module alone, or
    after a gRPC test, passes. First, it meets the process as the command line does."""
    items.sort(key=lambda item: item.path.name != "test_score_audience_spark.py")
