"""The committed generated code in nudge/v1 is exactly what protoc makes of proto/."""

from pathlib import Path

from nudge import protogen


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "nudge" / "v1").iterdir())
    assert [str(p) for p in generated] == [
        "nudge/v1/ingest_pb2.py",
        "nudge/v1/ingest_pb2.pyi",
        "nudge/v1/ingest_pb2_grpc.py",
        "nudge/v1/scoring_pb2.py",
        "nudge/v1/scoring_pb2.pyi",
        "nudge/v1/scoring_pb2_grpc.py",
    ]
    for rel in generated:
        committed = protogen.ROOT / rel
        assert committed.read_text() == (tmp_path / rel).read_text(), f"{rel} is stale: run 'make proto'"


def test_generated_code_imports_from_package() -> None:
    from nudge.v1 import ingest_pb2, ingest_pb2_grpc, scoring_pb2, scoring_pb2_grpc

    assert scoring_pb2.DESCRIPTOR.package == "nudge.v1"
    assert hasattr(scoring_pb2_grpc, "ScoringServiceStub")
    assert scoring_pb2.Decision.Name(scoring_pb2.DECISION_SUPPRESS) == "DECISION_SUPPRESS"
    assert ingest_pb2.DESCRIPTOR.package == "nudge.v1"
    assert hasattr(ingest_pb2_grpc, "IngestServiceStub")
