"""`nudge bench` against real gRPC servers: it runs, and reports every field, in text and JSON.

Most tests use a small grpc.aio server started here (grpc.health.v1 plus a ScoringService that
answers from fixed rules: ids starting ``down-`` get UNAVAILABLE, ``slow-`` ids outlive the
client's deadline), so status-code counts are exact. The last ones run the bench against the
real `nudge serve` and the real Feast stores of the shared stack. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pandas as pd
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nudge import cli
from nudge.client import bench, bench_features
from nudge.v1 import ingest_pb2, scoring_pb2_grpc
from nudge.v1 import scoring_pb2 as pb
from tests.support.stack import ROOT, ServerProcess, Stack, event_log_lines, free_port

SLOW_S = 2.0
DEADLINE_S = 0.3  # far above a normal call even on a busy machine, far below SLOW_S
IDS = ["c1", "c2", "down-3", "c4", "slow-5", "c6", "c7", "c8"]  # cycled: each sent equally often
SUMMARY_KEYS = {
    "method",
    "count",
    "ok",
    "errors",
    "total_s",
    "rps",
    "fastest_ms",
    "average_ms",
    "slowest_ms",
    "latency_ms",
    "p50_ms_median_of_rounds",
    "status_codes",
    "error_distribution",
    "client_cpu_us_per_call",
    "send_lag_ms",
    "events",
}
REPORT_KEYS = {
    "schema",
    "date",
    "target",
    "call",
    "baseline",
    "options",
    "results",
    "ratio_p50",
    "peer",
    "peer_ratio_p50",
    "rounds",
    "server",
}
OPTION_KEYS = {
    "call",
    "batch_size",
    "mode",
    "concurrency",
    "rps",
    "total",
    "duration_s",
    "rounds",
    "warmup",
    "timeout_s",
    "client_procs",
    "connections",
    "ids",
    "now",
    "client",
}


class FakeScoring(scoring_pb2_grpc.ScoringServiceServicer):
    """Fixed answers, so the bench's counting can be checked exactly. Remembers the peer
    (client address and port: one per TCP connection) each ``peer-`` id came from."""

    peers: ClassVar[dict[str, set[str]]] = {}

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        if request.customer_id.startswith("peer-"):
            self.peers.setdefault(request.customer_id, set()).add(context.peer())
        if request.customer_id.startswith("down-"):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "store down")
        if request.customer_id.startswith("slow-"):
            await asyncio.sleep(SLOW_S)
        return pb.ScoreResponse(customer_id=request.customer_id, purchase_propensity=0.5)

    async def ScoreBatch(
        self, request: pb.ScoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreBatchResponse:
        return pb.ScoreBatchResponse(
            results=[
                pb.ScoreBatchResult(response=pb.ScoreResponse(customer_id=r.customer_id))
                for r in request.requests
            ]
        )


class AlwaysServing(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 Check, the bench's no-op baseline."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _start_fake(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(AlwaysServing(), server)
    scoring_pb2_grpc.add_ScoringServiceServicer_to_server(FakeScoring(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


@pytest.fixture(scope="module")
def fake_target() -> Iterator[str]:
    """A real grpc.aio server on a free port, on its own event loop in a thread."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        server = loop.run_until_complete(_start_fake(port))
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop(None))
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10), "fake server did not start"
    yield f"127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def ids_file(tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(IDS) + "\n")
    return path


def bench_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """Run `nudge bench ... --json` in-process; return the parsed report."""
    assert cli.main(["bench", *argv, "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert set(report) == REPORT_KEYS
    assert report["schema"] == "nudge.bench/v1"
    assert set(report["options"]) == OPTION_KEYS
    for summary in report["results"].values():
        assert set(summary) == SUMMARY_KEYS
        assert summary["count"] == summary["ok"] + summary["errors"] == sum(summary["status_codes"].values())
    return report


def test_closed_loop_counts_status_codes_and_reports_the_baseline_ratio(
    fake_target: str, ids_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    argv = ["--target", fake_target, "--ids", str(ids_file), "-n", "80", "--rounds", "2", "-c", "4"]
    report = bench_json(capsys, *argv, "--warmup", "0", "--timeout", str(DEADLINE_S), "--out", str(out))

    assert json.loads(out.read_text()) == report
    assert report["call"] == "Score" and report["baseline"] == "Check"
    assert report["options"]["mode"] == "closed" and report["options"]["total"] == 80
    score, check = report["results"]["Score"], report["results"]["Check"]
    assert score["method"] == "nudge.v1.ScoringService/Score"
    assert score["status_codes"] == {"OK": 60, "UNAVAILABLE": 10, "DEADLINE_EXCEEDED": 10}
    assert score["error_distribution"] == {
        "UNAVAILABLE: store down": 10,
        "DEADLINE_EXCEEDED: Deadline Exceeded": 10,
    }
    assert check["method"] == "grpc.health.v1.Health/Check"
    assert check["status_codes"] == {"OK": 80} and check["error_distribution"] == {}
    for summary in (score, check):
        assert set(summary["latency_ms"]) == {"p10", "p25", "p50", "p75", "p90", "p95", "p99"}
        lat = summary["latency_ms"]
        assert summary["fastest_ms"] <= lat["p10"] <= lat["p50"] <= lat["p99"] <= summary["slowest_ms"]
        assert summary["rps"] > 0 and summary["total_s"] > 0 and summary["send_lag_ms"] is None
    # Percentiles are over OK calls (as ghz); slow calls failed at the deadline, so none is that slow.
    assert score["slowest_ms"] < SLOW_S * 1000
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert all(set(r["p50_ms"]) == {"Score", "Check"} and r["ratio_p50"] > 0 for r in report["rounds"])
    assert report["ratio_p50"] > 0


def test_text_report_has_every_ghz_field(
    fake_target: str, ids_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--target", fake_target, "--ids", str(ids_file), "-n", "16", "--rounds", "2"]
    assert cli.main([*argv, "--warmup", "0", "--timeout", str(DEADLINE_S)]) == 0
    text = capsys.readouterr().out
    for field in (
        "nudge.v1.ScoringService/Score (target)",
        "grpc.health.v1.Health/Check (no-op baseline)",
        "Summary:",
        "Count:",
        "Total:",
        "Slowest:",
        "Fastest:",
        "Average:",
        "Requests/sec:",
        "Latency distribution:",
        "10 % in",
        "25 % in",
        "50 % in",
        "75 % in",
        "90 % in",
        "95 % in",
        "99 % in",
        "Status code distribution:",
        "[OK]",
        "[UNAVAILABLE]  2 responses",
        "[DEADLINE_EXCEEDED]  2 responses",
        "Error distribution:",
        "[2]  UNAVAILABLE: store down",
        "Score p50 / Check p50 = ",
    ):
        assert field in text, field


def test_open_loop_sends_on_schedule_and_reports_send_lag(
    fake_target: str, ids_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = bench_json(
        capsys,
        *["--target", fake_target, "--ids", str(ids_file), "--rps", "200", "--duration", "0.5"],
        *["--rounds", "2", "--warmup", "0.1s", "--timeout", str(DEADLINE_S)],
    )
    assert report["options"]["mode"] == "open" and report["options"]["rps"] == 200
    assert report["options"]["concurrency"] == bench.OPEN_LOOP_THREADS
    for name in ("Score", "Check"):
        summary = report["results"][name]
        assert summary["count"] == 100  # 200 calls/s × 0.25 s × 2 rounds: by schedule, not by speed
        assert set(summary["send_lag_ms"]) == {"p50", "p99", "max"}
    assert report["results"]["Score"]["status_codes"]["DEADLINE_EXCEEDED"] > 0
    assert report["ratio_p50"] is not None


def test_score_batch_and_no_baseline(
    fake_target: str, ids_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = bench_json(
        capsys,
        *["--target", fake_target, "--ids", str(ids_file), "--call", "ScoreBatch", "--batch-size", "3"],
        *["-n", "10", "--rounds", "1", "--warmup", "2", "--no-baseline", "--now", "2026-05-05T00:00:00Z"],
    )
    assert report["baseline"] is None and report["ratio_p50"] is None
    assert list(report["results"]) == ["ScoreBatch"]
    assert report["results"]["ScoreBatch"]["status_codes"] == {"OK": 10}
    assert report["options"]["batch_size"] == 3 and report["options"]["now"] == "2026-05-05T00:00:00Z"


def test_client_procs_merge_raw_samples(
    fake_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.json"
    ids.write_text('["c1", "down-2"]')  # each process sends both, alternately: halves fail
    report = bench_json(
        capsys,
        *["--target", fake_target, "--ids", str(ids), "-n", "60", "--rounds", "2", "-c", "2"],
        *["--client-procs", "2", "--warmup", "0", "--timeout", str(DEADLINE_S)],
    )
    assert report["options"]["client_procs"] == 2
    # Every call of both processes counted once, per method and per round.
    assert report["results"]["Check"]["status_codes"] == {"OK": 60}
    assert report["results"]["Score"]["status_codes"] == {"OK": 30, "UNAVAILABLE": 30}
    assert all(set(r["p50_ms"]) == {"Score", "Check"} for r in report["rounds"])


@pytest.mark.parametrize(("procs", "connections"), [(1, 4), (2, 3)])
def test_connections_are_separate_tcp_connections(
    fake_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], procs: int, connections: int
) -> None:
    """SO_REUSEPORT balances connections, not calls: --connections must really open that many."""
    tag = f"peer-{procs}-{connections}"
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([tag]))
    report = bench_json(
        capsys,
        *["--target", fake_target, "--ids", str(ids), "-n", "64", "--rounds", "1", "-c", "4"],
        *["--client-procs", str(procs), "--connections", str(connections), "--no-baseline", "--warmup", "0"],
    )
    assert report["options"]["connections"] == connections
    assert report["results"]["Score"]["status_codes"] == {"OK": 64}
    assert len(FakeScoring.peers[tag]) == connections


def test_merged_percentiles_come_from_pooled_samples_not_averaged_percentiles() -> None:
    fast = bench.Phase("Score", 0, ok_ns=bench.array("q", [1_000_000] * 90))
    slow = bench.Phase("Score", 0, ok_ns=bench.array("q", [9_000_000] * 10))
    merged = bench._merge([[fast], [slow]])
    summary = bench.summarize(merged, "/x")
    assert summary["count"] == 100
    assert summary["latency_ms"]["p50"] == 1.0  # averaging the two p50s would say 5.0
    assert summary["latency_ms"]["p95"] == 9.0


def test_nearest_rank_matches_ghz() -> None:
    ordered = list(range(1, 11))
    assert [bench._nearest_rank(ordered, q) for q in (10, 50, 90, 99)] == [1, 5, 9, 10]


@pytest.mark.parametrize(
    "argv",
    [
        ["--rps", "100", "-n", "10"],  # open loop is timed, not counted
        ["--rps", "100"],  # open loop needs --duration
        ["-n", "10", "--duration", "1"],
        ["--duration", "100000"],
        ["-c", "1", "--client-procs", "2"],
        ["-c", "2", "--connections", "3"],  # more connections than calls in flight
        ["-c", "4", "--client-procs", "2", "--connections", "1"],  # a process without one
        ["--target", "192.0.2.1:50051"],  # not loopback
        ["--feast-peer", "192.0.2.1:50051", "--feast-models", "models"],  # not loopback
        ["--feast-peer", "127.0.0.1:50051"],  # which features to ask for?
    ],
)
def test_refuses_unbounded_or_remote_runs(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", *argv]) == 2
    assert "nudge bench:" in capsys.readouterr().err


def test_ids_from_json_list_ghz_file_and_lines(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text('["a", "b"]')
    (tmp_path / "ghz.json").write_text('[{"customer_id": "a"}, {"customer_id": "b"}]')
    (tmp_path / "lines.txt").write_text("a\n\nb\n")
    for name in ("list.json", "ghz.json", "lines.txt"):
        assert bench.load_ids(tmp_path / name, None) == ["a", "b"]


def test_ghz_data_round_trips_through_the_proto(tmp_path: Path, ids_file: Path) -> None:
    single, batch = tmp_path / "single.json", tmp_path / "batch.json"
    now = ["--now", "2026-05-05T00:00:00+00:00"]
    assert cli.main(["bench", "ghz-data", "--ids", str(ids_file), *now, "--out", str(single)]) == 0
    assert (
        cli.main(["bench", "ghz-data", "--ids", str(ids_file), "--batch-size", "2", "--out", str(batch)]) == 0
    )
    rows = json.loads(single.read_text())
    assert [r["customer_id"] for r in rows] == IDS and rows[0]["now"] == "2026-05-05T00:00:00Z"
    for row in rows:
        json_format.ParseDict(row, pb.ScoreRequest())  # what ghz's jsonpb does with each object
    batches = json.loads(batch.read_text())
    assert len(batches) == len(IDS) // 2 and all(
        len(json_format.ParseDict(b, pb.ScoreBatchRequest()).requests) == 2 for b in batches
    )


def test_committed_ghz_config_and_data_match_the_api() -> None:
    config = json.loads((ROOT / "loadtest" / "ghz.json").read_text())
    service_name, _, method = config["call"].rpartition(".")
    assert method in pb.DESCRIPTOR.services_by_name[service_name.rpartition(".")[2]].methods_by_name
    assert "proto" not in config and "protoset" not in config  # reflection only
    rows = json.loads((ROOT / config["data-file"]).read_text())
    assert rows and bench.load_ids(ROOT / config["data-file"], None) == [r["customer_id"] for r in rows]
    for row in rows:
        json_format.ParseDict(row, pb.ScoreRequest())


def test_feature_comparison_interleaves_paths_on_the_same_customers() -> None:
    seen: dict[str, list[list[str]]] = {"feast": [], "nudge": []}

    def recorder(name: str) -> bench_features.Read:
        return seen[name].append

    paths = {name: recorder(name) for name in seen}
    timings = bench_features.compare(paths, [1, 3], ["a", "b", "c", "d"], repetitions=4)
    assert {size: {p: len(t) for p, t in by.items()} for size, by in timings.items()} == {
        1: {"feast": 4, "nudge": 4},
        3: {"feast": 4, "nudge": 4},
    }
    assert seen["feast"] == seen["nudge"]  # same customers, call for call
    rows = bench_features.summarize(timings, "feast", "nudge")
    assert [r["customers"] for r in rows] == [1, 3]
    assert set(rows[0]) == {
        "customers",
        "feast_median_ms",
        "nudge_median_ms",
        "feast_p90_ms",
        "nudge_p90_ms",
        "speedup",
    }


def test_ingest_requests_are_new_in_order_and_disjoint_between_processes() -> None:
    """Every event id once in all processes' requests, each customer in one process only, its
    event times strictly increasing call after call (so a server applies every one)."""
    source = bench.ingest_events([f"c{i}" for i in range(7)], None, batch_size=3)
    seen: dict[str, int] = {}
    owner: dict[str, int] = {}
    last: dict[str, int] = {}
    for index in range(2):
        for raw in source.requests(40, index, 2):
            events = ingest_pb2.IngestRequest.FromString(raw).events
            assert len(events) == 3
            for e in events:
                seen[e.event_id] = seen.get(e.event_id, 0) + 1
                assert owner.setdefault(e.customer_id, index) == index
                at = e.event_time.seconds * 10**9 + e.event_time.nanos
                assert at >= last.get(e.customer_id, 0)  # equal within a call (a batch wrapping round)
                last[e.customer_id] = at
                assert (e.event_type == "purchase") == e.HasField("amount")
    assert len(seen) == 2 * 40 * 3 and set(seen.values()) == {1}
    assert len(owner) == 7


def test_ingest_tally_counts_outcomes_and_reasons() -> None:
    outcome = ingest_pb2.EventResult
    ok = ingest_pb2.IngestResponse(results=[outcome(outcome=outcome.OUTCOME_APPLIED)], applied=1)
    mixed = ingest_pb2.IngestResponse(
        results=[
            outcome(outcome=outcome.OUTCOME_APPLIED),
            outcome(outcome=outcome.OUTCOME_LATE, reason="older than the newest (2026-01-01T00:00:00)"),
            outcome(outcome=outcome.OUTCOME_DUPLICATE, reason="event_id already applied"),
        ],
        applied=1,
        duplicates=1,
        rejected=1,
    )
    tally = bench.tally_ingest([ok.SerializeToString(), mixed.SerializeToString()])
    assert tally == {
        "applied": 2,
        "duplicates": 1,
        "rejected": 1,
        "late": 1,
        "LATE: older than the newest": 1,
        "DUPLICATE: event_id already applied": 1,
    }


# --- the real thing: `nudge serve` and the Feast stores of the shared stack --------------------


def test_bench_ingest_against_the_real_server_applies_every_event(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs in a row on the same customers: every event of both is applied (new ids, times
    after the previous run's); a run whose events are beyond the server's skew says so."""
    log = tmp_path / "events.log.jsonl"
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"bench-test-{i}" for i in range(8)) + "\n")  # customers of this test only
    argv = ["--target", "", "--ids", str(ids), "--call", "Ingest", "-n", "50", "--rounds", "2", "-c", "2"]
    with ServerProcess(stack, "--event-log", str(log)) as server:
        argv[1] = server.target
        reports = [bench_json(capsys, *argv, "--warmup", "5") for _ in range(2)]
        future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()  # events 1 h ahead
        assert cli.main(["bench", *argv, "--warmup", "0", "--no-baseline", "--now", future, "--json"]) == 0
        out, warnings = capsys.readouterr()
    ahead = json.loads(out)
    for report in reports:
        assert report["call"] == "Ingest" and report["options"]["batch_size"] == 1
        ingest = report["results"]["Ingest"]
        assert ingest["method"] == "nudge.v1.IngestService/Ingest"
        assert ingest["status_codes"] == {"OK": 50}
        assert ingest["events"] == {
            "per_call": 1,
            "sent": 50,
            "applied": 50,
            "duplicates": 0,
            "rejected": 0,
            "late": 0,
            "not_applied_reasons": {},
            "all_applied": True,
            "ran_out_of_requests": False,
        }
        assert report["results"]["Check"]["events"] is None and report["ratio_p50"] > 0
    logged = event_log_lines(log)
    assert len(logged) == 2 * (50 + 5) == len({line["event_id"] for line in logged})
    events = ahead["results"]["Ingest"]["events"]
    assert events["applied"] == 0 and events["rejected"] == 50 and not events["all_applied"]
    assert events["not_applied_reasons"] and all(
        reason.startswith("REJECTED: event_time is") and "ahead of the server clock" in reason
        for reason in events["not_applied_reasons"]
    )
    assert "WARNING: 50 of 50 events not applied" in warnings
    assert "Events (1 per call, OK calls): 50 sent, 0 applied" in bench.format_report(ahead)


def test_bench_against_the_real_server(
    server: ServerProcess, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    report = bench_json(
        capsys,
        *["--target", server.target, "--ids-from", str(stack.customers), "-n", "200", "--rounds", "2"],
        *["--warmup", "20", "--now", stack.as_of.isoformat()],
    )
    assert report["results"]["Score"]["status_codes"] == {"OK": 200}
    assert report["results"]["Check"]["status_codes"] == {"OK": 200}
    assert report["ratio_p50"] > 0


def test_watch_server_samples_rss_and_cpu_of_the_server_and_its_workers(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    with ServerProcess(stack, workers=2) as server:
        assert server.process is not None
        pid = server.process.pid
        report = bench_json(
            capsys,
            *["--target", server.target, "--ids-from", str(stack.customers)],
            *["--now", stack.as_of.isoformat(), "--rps", "100", "--duration", "3", "--rounds", "1"],
            *["--no-baseline", "--warmup", "10", "--connections", "4"],
            *["--watch-server", str(pid), "--sample-every", "0.25", "--rss-growth-from", "1"],
        )
        text = bench.format_report(report)
    assert report["results"]["Score"]["status_codes"] == {"OK": 300}
    watched = report["server"]
    assert watched["root_pid"] == pid
    processes = watched["processes"]
    assert str(pid) in processes
    workers = [p for p in processes.values() if p["max_mb"] > 100]  # models + sessions loaded
    assert len(workers) == 2, processes
    for p in workers:
        assert len(p["samples"]) >= 8
        assert p["growth_pct"] is not None
        assert p["first_mb"] <= p["max_mb"] and p["last_mb"] <= p["max_mb"]
        assert 0 <= p["cpu_cores"] <= 2
    growths = [p["growth_pct"] for p in processes.values() if p["growth_pct"] is not None]
    assert watched["max_growth_pct"] == max(growths)
    # 300 calls cost the workers CPU; sums are per process, rounded.
    assert 0 < sum(p["cpu_cores"] for p in workers) <= watched["cpu_cores"] + 0.01
    assert f"Server (process {pid} and its children" in text


def test_watching_a_missing_process_is_a_clear_error(
    fake_target: str, ids_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--target", fake_target, "--ids", str(ids_file), "-n", "5", "--rounds", "1"]
    assert cli.main([*argv, "--watch-server", "999999999"]) == 1
    assert "no process 999999999 to watch" in capsys.readouterr().err


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_bench_features_on_real_stores(
    store: str,
    stack: Stack,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = stack.repo if store == "sqlite" else request.getfixturevalue("redis_stack").repo
    argv = ["bench", "features", "--repo", str(repo), "--ids-from", str(stack.customers)]
    argv += ["--now", stack.as_of.isoformat(), "--repetitions", "10", "--sizes", "1,20", "--json"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "nudge.bench.features/v1"
    assert report["online_store"] == store
    assert report["reader"] == {"sqlite": "SqliteFeatureReader", "redis": "RedisFeatureReader"}[store]
    assert report["found_share"] > 0.5
    assert [row["customers"] for row in report["results"]] == [1, 20]
    assert all(row["feast_median_ms"] > 0 and row["nudge_median_ms"] > 0 for row in report["results"])


def test_the_bound_server_answers_prepared_customers_through_the_same_wrapper(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """loadtest/bound_server.py (the fastest Score a server could give with these models):
    it serves the first customers' real answers, in order, and the bench runs against it."""
    port = free_port()
    log = tmp_path / "bound.log"
    argv = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "loadtest" / "bound_server.py")]
    argv += ["--repo", str(stack.repo), "--models", str(stack.models), "--port", str(port)]
    argv += ["--ids-from", str(stack.customers), "--batch-size", "5"]
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while "bound server on" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
        first = pd.read_parquet(stack.customers)["customer_id"].astype(str).tolist()[:5]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            batch = stub.ScoreBatch(pb.ScoreBatchRequest(), timeout=5)
            assert [r.response.customer_id for r in batch.results] == first
            assert all(0 <= r.response.purchase_propensity <= 1 for r in batch.results)
            answers = [stub.Score(pb.ScoreRequest(customer_id="any"), timeout=5) for _ in range(6)]
            assert [a.customer_id for a in answers] == [*first, first[0]]
        report = bench_json(
            capsys, "--target", f"127.0.0.1:{port}", "-n", "50", "--rounds", "1", "--warmup", "5"
        )
        assert report["results"]["Score"]["status_codes"] == {"OK": 50}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()


def test_bench_against_feasts_grpc_feature_server_as_a_peer(
    server: ServerProcess, stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--feast-peer: Feast's own gRPC feature server (`feast listen`) on the same store answers
    the same customers' features, alternating with Score; the report gives both and the ratio."""
    port = free_port()
    log = tmp_path / "feast.log"
    argv = [str(ROOT / ".venv" / "bin" / "feast"), "-c", str(stack.repo), "listen", "-a", f"127.0.0.1:{port}"]
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=stack.repo)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=90)
        report = bench_json(
            capsys,
            *["--target", server.target, "--ids-from", str(stack.customers), "-n", "60", "--rounds", "2"],
            *["--warmup", "5", "--feast-peer", f"127.0.0.1:{port}", "--feast-models", str(stack.models)],
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert report["results"]["Feast"]["status_codes"] == {"OK": 60}, log.read_text()
    assert report["results"]["Score"]["status_codes"] == {"OK": 60}
    assert report["peer"] == f"Feast at 127.0.0.1:{port}"
    assert report["peer_ratio_p50"] > 0 and all(r["peer_ratio_p50"] > 0 for r in report["rounds"])
