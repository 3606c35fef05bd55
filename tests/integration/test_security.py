"""Who may call nudge: TLS, mutual TLS and bearer tokens, against real server processes with
certificates this test generates. Health (and reflection) stay open for probes."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc
from service import config
from service.security import BearerTokenAuth, SecurityError, Token, parse_token_file
from tests.support.ops import Pki, delta, make_pki, matching, scrape
from tests.support.stack import BIN, ServerProcess, Stack, free_port

TOKENS = ("tok-campaigns-7f3a", "tok-dashboard-19c2")
SCORE_ONLY = "tok-score-only-55e1"
SCORE = "nudge.v1.ScoringService/Score"
BATCH = "nudge.v1.ScoringService/ScoreBatch"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(stack: Stack, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """TLS (server certificate only) with tokens from the environment."""
    log = tmp_path_factory.mktemp("tls") / "server.log"
    tls = ("--tls-cert", str(pki.path("server")), "--tls-key", str(pki.path("server-key")))
    env = {"NUDGE_AUTH_TOKENS": ",".join(TOKENS), "NUDGE_METRICS_PORT": str(free_port())}
    with ServerProcess(stack, *tls, log_path=log, env=env, credentials=pki.channel_credentials()) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(stack: Stack, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Mutual TLS with tokens from a file, one of them limited to Score."""
    root = tmp_path_factory.mktemp("mtls")
    tokens = root / "tokens"
    tokens.write_text(f"# nudge callers\n{TOKENS[0]}\n{SCORE_ONLY}  Score   # dashboard\n")
    tls = (
        "--tls-cert",
        str(pki.path("server")),
        "--tls-key",
        str(pki.path("server-key")),
        "--tls-client-ca",
        str(pki.path("ca")),
    )
    credentials = pki.channel_credentials(client="client")
    with ServerProcess(
        stack, *tls, "--auth-tokens-file", str(tokens), log_path=root / "server.log", credentials=credentials
    ) as server:
        yield server


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def score(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] | None = None) -> pb.ScoreResponse:
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    reply: pb.ScoreResponse = stub.Score(pb.ScoreRequest(customer_id="c000001"), metadata=metadata, timeout=5)
    return reply


def refused(call: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# --------------------------------------------------------------------------- TLS


def test_tls_serves_a_client_that_trusts_the_ca(tls_server: ServerProcess) -> None:
    with tls_server.channel() as channel:
        reply = score(channel, bearer(TOKENS[0]))
    assert reply.customer_id == "c000001"
    assert "(TLS)" in tls_server.log()


def test_tls_server_refuses_plaintext_and_untrusting_clients(tls_server: ServerProcess, pki: Pki) -> None:
    with grpc.insecure_channel(tls_server.target) as channel:
        error = refused(lambda: score(channel, bearer(TOKENS[0])))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # A client that does not trust our CA refuses the server's certificate.
    untrusting = grpc.ssl_channel_credentials(root_certificates=pki.read("other-ca"))
    with tls_server.channel(untrusting) as channel:
        error = refused(lambda: score(channel, bearer(TOKENS[0])))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_serves_a_client_with_a_certificate_from_the_ca(mtls_server: ServerProcess) -> None:
    with mtls_server.channel() as channel:
        assert score(channel, bearer(TOKENS[0])).customer_id == "c000001"
    assert "(mutual TLS)" in mtls_server.log()


@pytest.mark.parametrize("client", [None, "rogue"], ids=["no certificate", "certificate from another CA"])
def test_mtls_refuses_a_client_without_a_valid_certificate(
    mtls_server: ServerProcess, pki: Pki, client: str | None
) -> None:
    with mtls_server.channel(pki.channel_credentials(client=client)) as channel:
        error = refused(lambda: score(channel, bearer(TOKENS[0])))
        # The handshake fails before any RPC: health is refused too.
        health = health_pb2_grpc.HealthStub(channel)
        health_error = refused(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert health_error.code() == grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "missing bearer token"),
        (bearer("tok-nobody-has"), "invalid bearer token"),
        (bearer(TOKENS[0] + "x"), "invalid bearer token"),
        (bearer(TOKENS[0][:-1]), "invalid bearer token"),
        ((("authorization", f"Basic {TOKENS[0]}"),), "invalid bearer token"),
    ],
    ids=["missing", "unknown", "longer", "prefix", "wrong scheme"],
)
def test_bad_or_missing_token_is_unauthenticated(
    tls_server: ServerProcess, metadata: tuple[tuple[str, str], ...] | None, message: str
) -> None:
    with tls_server.channel() as channel:
        error = refused(lambda: score(channel, metadata))
        batch = scoring_pb2_grpc.ScoringServiceStub(channel).ScoreBatch
        batch_error = refused(lambda: batch(pb.ScoreBatchRequest(), metadata=metadata, timeout=5))
    for e in (error, batch_error):
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED
        assert message in (e.details() or "")


def test_refusals_are_counted_under_the_method_called(tls_server: ServerProcess) -> None:
    """A refusal is counted under the method called; a made-up method is not counted at all."""
    port = int(tls_server.env["NUDGE_METRICS_PORT"])
    before = scrape(port)
    with tls_server.channel() as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        refused(lambda: stub.ScoreBatch(pb.ScoreBatchRequest(), timeout=5))
        for _ in range(2):
            refused(lambda: score(channel))
        refused(lambda: channel.unary_unary("/nudge.v1.ScoringService/Made/Up", None, None)(b"", timeout=5))
        score(channel, bearer(TOKENS[0]))
    after = scrape(port)
    denied = "UNAUTHENTICATED"
    assert delta(before, after, "nudge_grpc_requests_total", method=BATCH, code=denied) == 1
    assert delta(before, after, "nudge_grpc_requests_total", method=SCORE, code=denied) == 2
    assert delta(before, after, "nudge_grpc_requests_total", method=SCORE, code="OK") == 1
    assert not [
        labels for labels, _ in matching(after, "nudge_grpc_requests_total") if "Made" in labels["method"]
    ]


def test_every_configured_token_is_accepted(tls_server: ServerProcess) -> None:
    with tls_server.channel() as channel:
        for token in TOKENS:
            assert score(channel, bearer(token)).customer_id == "c000001"
        lowercase_scheme = (("authorization", f"bearer {TOKENS[1]}"),)
        assert score(channel, lowercase_scheme).customer_id == "c000001"


def test_health_and_reflection_need_no_token(tls_server: ServerProcess, mtls_server: ServerProcess) -> None:
    for server in (tls_server, mtls_server):
        with server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", "nudge.v1.ScoringService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert "nudge.v1.ScoringService" in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_token_limited_to_score_gets_permission_denied_elsewhere(mtls_server: ServerProcess) -> None:
    with mtls_server.channel() as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        assert score(channel, bearer(SCORE_ONLY)).customer_id == "c000001"
        request = pb.ScoreBatchRequest(requests=[pb.ScoreRequest(customer_id="c000001")])
        error = refused(lambda: stub.ScoreBatch(request, metadata=bearer(SCORE_ONLY), timeout=5))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "ScoreBatch" in (error.details() or "")
        assert len(stub.ScoreBatch(request, metadata=bearer(TOKENS[0]), timeout=5).results) == 1
        # The environment's tokens are not this server's.
        assert refused(lambda: score(channel, bearer(TOKENS[1]))).code() == grpc.StatusCode.UNAUTHENTICATED


def test_refused_calls_never_reach_the_decoder(tls_server: ServerProcess) -> None:
    """Garbage without a token is UNAUTHENTICATED, not INVALID_ARGUMENT: it was never parsed."""
    with tls_server.channel() as channel:
        raw = channel.unary_unary("/nudge.v1.ScoringService/Score", None, None)
        error = refused(lambda: raw(b"\xff\xff\xff", timeout=5))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        error = refused(lambda: raw(b"\xff\xff\xff", metadata=bearer(TOKENS[0]), timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- clients


def test_score_cli_reaches_a_secured_server(tls_server: ServerProcess, pki: Pki) -> None:
    argv = [str(BIN / "nudge"), "score", "--target", tls_server.target, "--tls-ca", str(pki.path("ca"))]
    ok = subprocess.run(
        [*argv, "c000001"], capture_output=True, text=True, env={"NUDGE_TOKEN": TOKENS[1]}, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "c000001" in ok.stdout
    denied = subprocess.run([*argv, "c000001"], capture_output=True, text=True, env={}, check=False)
    assert denied.returncode == 1
    assert "UNAUTHENTICATED" in denied.stderr


def test_bench_cli_reaches_a_mtls_server(mtls_server: ServerProcess, pki: Pki) -> None:
    argv = [
        str(BIN / "nudge"),
        "bench",
        "--target",
        mtls_server.target,
        "--tls-ca",
        str(pki.path("ca")),
        "--tls-cert",
        str(pki.path("client")),
        "--tls-key",
        str(pki.path("client-key")),
        "--token",
        TOKENS[0],
        "-n",
        "40",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--json",
    ]
    run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    assert results["Score"]["ok"] == 40, results["Score"]["error_distribution"]
    assert results["Check"]["ok"] == 40


# --------------------------------------------------------------------------- units


def test_token_file_format(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\n\nalpha\nbeta Score,/nudge.v1.ScoringService/ScoreBatch  # both\n")
    alpha, beta = parse_token_file(path)
    assert alpha == Token(b"alpha", None)
    assert beta.methods == {"/nudge.v1.ScoringService/Score", "/nudge.v1.ScoringService/ScoreBatch"}
    path.write_text("alpha Score extra\n")
    with pytest.raises(SecurityError, match="tokens:1"):
        parse_token_file(path)
    path.write_text("# nothing\n")
    with pytest.raises(SecurityError, match="no tokens"):
        parse_token_file(path)


def test_token_match_checks_every_token() -> None:
    auth = BearerTokenAuth([Token(b"alpha", None), Token(b"beta", frozenset({"/x/Y"}))])
    assert auth.match(b"beta") == Token(b"beta", frozenset({"/x/Y"}))
    assert auth.match(b"alph") is None
    assert auth.match(b"") is None


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--tls-cert", "{cert}"], "tls_cert and tls_key must be given together"),
        (["--tls-client-ca", "{cert}"], "tls_client_ca (mutual TLS) needs tls_cert"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "{cert}"], "tls_cert: no such file"),
        (["--metrics-port", "50051"], "metrics_port must differ from port"),
        (["--log-format", "xml"], "log_format must be"),
        (["--tracing-exporter", "zipkin"], "tracing_exporter must be"),
        ([], "no TLS configured"),
        (
            ["--plaintext", "true", "--tls-cert", "{cert}", "--tls-key", "{cert}"],
            "plaintext and tls_cert exclude",
        ),
    ],
)
def test_settings_refuse_unusable_security_and_ops_options(pki: Pki, flags: list[str], problem: str) -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args([f.format(cert=pki.path("server")) for f in flags])
    with pytest.raises(ValueError) as info:
        config.from_args(args)
    assert problem in str(info.value)
