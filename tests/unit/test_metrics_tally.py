"""The in-process tallies the hot path adds to give, once flushed, exactly what
prometheus-client's own ``observe``/``inc`` would have: same buckets (bounds included), same
sum, same counts, whatever the number of flushes in between."""

from __future__ import annotations

import random

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from service.metrics import RPC_BUCKETS, Metrics, Tally, use_value_storage


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        if family.name == name
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_flushed_tally_equals_direct_observations() -> None:
    use_value_storage(None)
    registry = CollectorRegistry()
    direct = Histogram("direct", "d", buckets=RPC_BUCKETS, registry=registry)
    tallied = Histogram("tallied", "t", buckets=RPC_BUCKETS, registry=registry)
    count = Counter("tallied_calls", "c", registry=registry)
    tally = Tally(tallied, count)
    draw = random.Random(5)
    # Every bound exactly (a value equal to a bound belongs to that bucket), around it, and beyond.
    values = [*RPC_BUCKETS, *(b * 1.0000001 for b in RPC_BUCKETS), 0.0, 99.0]
    values += [draw.expovariate(1000) for _ in range(5000)]
    for i, v in enumerate(values):
        direct.observe(v)
        tally.observe(v)
        if i % 777 == 0:
            tally.flush()
    tally.flush()
    tally.flush()  # nothing new: moves nothing

    def renamed(name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(n.replace(name, "h"), labels): v for (n, labels), v in samples(registry, name).items()}

    tallied_samples, direct_samples = renamed("tallied"), renamed("direct")
    sum_key = ("h_sum", ())
    # The sum is added up in another order (per flush, then into the total): equal to rounding.
    assert tallied_samples.pop(sum_key) == pytest.approx(direct_samples.pop(sum_key), rel=1e-12)
    assert tallied_samples == direct_samples  # every bucket and the count, exactly
    assert samples(registry, "tallied_calls") == {("tallied_calls_total", ()): len(values)}


def test_rpc_records_count_by_method_and_code_only_when_flushed() -> None:
    metrics = Metrics()
    record = metrics.rpc("/nudge.v1.ScoringService/Score")
    for _ in range(3):
        record(grpc.StatusCode.OK, 0.001)
    record(grpc.StatusCode.UNAUTHENTICATED, 0.0001)
    labels = {"method": "nudge.v1.ScoringService/Score", "code": "OK"}
    assert metrics.registry.get_sample_value("nudge_grpc_requests_total", labels) in (None, 0.0)
    metrics.flush()
    assert metrics.registry.get_sample_value("nudge_grpc_requests_total", labels) == 3
    assert metrics.registry.get_sample_value("nudge_grpc_request_duration_seconds_count", labels) == 3
    denied = {**labels, "code": "UNAUTHENTICATED"}
    assert metrics.registry.get_sample_value("nudge_grpc_requests_total", denied) == 1
