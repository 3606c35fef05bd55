"""One typed settings object for the server, read from flags with environment defaults.

Every field is a flag (``--min-propensity``) and an environment variable
(``NUDGE_MIN_PROPENSITY``); a flag beats the environment, which beats the default.
``nudge serve --help`` lists them all with their defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nudge.inputs import UserError, feast_repo_problem


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Server configuration (see module docstring for how each field is set)."""

    repo: Path = _opt(Path("feature_repo"), "Feast feature repo (feature_store.yaml, definitions).")
    feature_store_yaml: Path | None = _opt(
        None, "Alternative feature_store.yaml, e.g. feature_repo/feature_store.redis.yaml."
    )
    models: Path = _opt(Path("models"), "Models directory: <name>/<version>/{model.onnx,manifest.json}.")
    host: str = _opt("127.0.0.1", "Address to listen on ('0.0.0.0' for all interfaces).")
    port: int = _opt(50051, "gRPC port.")
    workers: int = _opt(os.cpu_count() or 1, "Server processes sharing the port (SO_REUSEPORT).")
    fast_features: bool = _opt(True, "Read the online store directly instead of through Feast's SDK.")
    store_timeout_ms: float = _opt(50.0, "Timeout of each online-store call.")
    store_unavailable: str = _opt(
        "cold_start", "When the store fails: 'cold_start' (population answer) or 'fail' (UNAVAILABLE)."
    )
    min_propensity: float = _opt(0.02, "SUPPRESS below this purchase propensity.")
    max_dormant_days: float = _opt(180.0, "SUPPRESS customers who have not engaged for this long.")
    default_decide_hours: float = _opt(
        24.0, "Decide time (hours) of reminders for customers without visit → purchase latencies."
    )
    stale_after_hours: float = _opt(8 * 24.0, "Features older than this are reported STALE.")
    default_time_zone: str = _opt("UTC", "Zone used when a customer's zone is unknown (flagged).")
    quiet_start_hour: int = _opt(0, "Default local quiet hours start (equal to end: none).")
    quiet_end_hour: int = _opt(0, "Default local quiet hours end (exclusive).")
    top_slots: int = _opt(3, "Slots returned in top_slots.")
    max_window_hours: float = _opt(7 * 24.0, "Longest send window a caller may ask for.")
    max_batch: int = _opt(1000, "Most customers in one ScoreBatch.")
    max_id_length: int = _opt(128, "Longest customer id (and event id) accepted.")
    max_message_bytes: int = _opt(4 * 1024 * 1024, "Largest request or response message.")
    grace_seconds: float = _opt(10.0, "On SIGTERM/SIGINT, time in-flight calls get to finish.")
    model_poll_seconds: float = _opt(
        10.0, "Poll the models directory for new versions every N seconds (0: only on SIGHUP)."
    )
    log_level: str = _opt("INFO", "Logging level.")
    # --- live events (service/ingest.py) ---------------------------------------------------
    ingest_max_skew_seconds: float = _opt(
        300.0, "Ingest rejects events timed more than this far ahead of the server clock."
    )
    live_features: bool = _opt(
        True, "Score customers who have a live state on features exact at the request time."
    )
    event_log: Path | None = _opt(
        None, "Durable log (JSON lines) of every applied event (default: <repo>/data/events.log.jsonl)."
    )
    # --- who may call it (service/security.py) ---------------------------------------------
    plaintext: bool = _opt(False, "Serve without TLS. Must be chosen explicitly when no --tls-cert is given.")
    tls_cert: Path | None = _opt(None, "Server certificate chain (PEM). With --tls-key: serve TLS only.")
    tls_key: Path | None = _opt(None, "Server private key (PEM) for --tls-cert.")
    tls_client_ca: Path | None = _opt(
        None, "CA bundle (PEM) for mutual TLS: clients must present a certificate it signed."
    )
    auth_tokens_file: Path | None = _opt(
        None, "Bearer tokens, one per line: 'TOKEN' (all methods) or 'TOKEN Score,ScoreBatch'."
    )
    auth_tokens: str = _opt(
        "", "Comma-separated bearer tokens for all methods (use the env var: flags show in ps)."
    )
    # --- what operators see (service/metrics.py, service/logs.py, service/tracing.py) ------
    metrics_port: int = _opt(0, "Prometheus /metrics port (0: off). One port for all --workers.")
    metrics_host: str = _opt("", "Address the metrics port listens on (default: --host).")
    metrics_dir: Path | None = _opt(
        None, "With --workers > 1: directory for the workers' metric files (default: a new temp dir)."
    )
    log_format: str = _opt("text", "'text' or 'json' (one JSON object per line, with request ids).")
    access_log: bool = _opt(False, "Log one line per RPC: method, status, duration, request id.")
    access_log_every: int = _opt(
        100, "Access log: one OK call in N per method and process (1: all); other statuses always."
    )
    tracing: bool = _opt(False, "OpenTelemetry tracing of RPCs, feature fetch and inference.")
    tracing_exporter: str = _opt(
        "otlp", "'otlp' (gRPC, OTEL_EXPORTER_OTLP_* env) or 'console' (spans on stdout)."
    )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def event_log_path(self) -> Path:
        """Where applied events are logged: ``event_log``, else beside the repo's data."""
        return self.event_log if self.event_log is not None else self.repo / "data" / "events.log.jsonl"


class SettingsError(UserError, ValueError):
    """Settings that cannot work (every problem in one message): the server does not start."""


def _env_name(name: str) -> str:
    return "NUDGE_" + name.upper()


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(f: dataclasses.Field[Any]) -> Any:
    kind = str(f.type)
    if "bool" in kind:
        return _parse_bool
    if "Path" in kind:
        return Path
    if "int" in kind:
        return int
    if "float" in kind:
        return float
    return str


def add_arguments(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """Add one flag per Settings field (those named in ``only``, when given); defaults come from
    the environment, then the dataclass."""
    for f in dataclasses.fields(Settings):
        if only is not None and f.name not in only:
            continue
        env = _env_name(f.name)
        convert = _converter(f)
        default = os.environ.get(env)
        if default is not None:
            try:
                default = convert(default)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise SettingsError(f"{env}={default!r} in the environment: {exc}; fix or unset it") from exc
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=convert,
            default=f.default if default is None else default,
            help=f"{f.metadata['help']} [env {env}; default: %(default)s]",
        )


def from_args(args: argparse.Namespace) -> Settings:
    """The Settings an ``add_arguments`` parser produced, validated."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Reject settings that cannot work, with a message naming the field."""
    problems = _location_problems(settings)
    if settings.store_unavailable not in ("cold_start", "fail"):
        problems.append("store_unavailable must be 'cold_start' or 'fail'")
    for name in ("quiet_start_hour", "quiet_end_hour"):
        if not 0 <= getattr(settings, name) <= 23:
            problems.append(f"{name} must be within 0..23")
    for name in (
        "workers",
        "max_batch",
        "max_id_length",
        "top_slots",
        "max_message_bytes",
        "access_log_every",
    ):
        if getattr(settings, name) < 1:
            problems.append(f"{name} must be >= 1")
    if not 0.0 <= settings.min_propensity <= 1.0:
        problems.append("min_propensity must be within 0..1")
    if not settings.default_decide_hours > 0:
        problems.append("default_decide_hours must be > 0")
    if not settings.ingest_max_skew_seconds >= 0.0:  # also refuses NaN
        problems.append("ingest_max_skew_seconds must be >= 0")
    problems += _operations_problems(settings)
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))


def _location_problems(settings: Settings) -> list[str]:
    """The Feast repo and the models directory: checked before the server binds or imports Feast.

    (Whether the ports can be listened on is checked by ``nudge serve`` itself: it binds.)"""
    problems = []
    repo = feast_repo_problem(settings.repo, settings.feature_store_yaml, ("repo", "feature_store_yaml"))
    if repo:
        problems.append(repo)
    if not settings.models.is_dir():
        problems.append(
            f"models {settings.models}: no such directory; train first (nudge train --out {settings.models})"
        )
    return problems


def _operations_problems(settings: Settings) -> list[str]:
    """TLS, auth, metrics, logs and tracing settings that cannot work together."""
    problems = []
    if settings.plaintext and settings.tls_cert is not None:
        problems.append("plaintext and tls_cert exclude each other")
    if not settings.plaintext and settings.tls_cert is None:
        problems.append(
            "no TLS configured: give --tls-cert and --tls-key, or choose --plaintext true explicitly"
        )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        problems.append("tls_cert and tls_key must be given together")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        problems.append("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
    for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_tokens_file"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"{name}: no such file {path}")
    if not 0 <= settings.metrics_port <= 65535:
        problems.append("metrics_port must be within 0..65535")
    elif settings.metrics_port and settings.metrics_port == settings.port:
        problems.append("metrics_port must differ from port")
    if settings.log_format not in ("text", "json"):
        problems.append("log_format must be 'text' or 'json'")
    if settings.tracing_exporter not in ("otlp", "console"):
        problems.append("tracing_exporter must be 'otlp' or 'console'")
    return problems


def id_problem(name: str, value: str, limit: int) -> str | None:
    """What is wrong with a caller's id (empty or blank, longer than ``limit``), or None: the one
    rule Score and Ingest apply to the ids they are sent."""
    if not value.strip():
        return f"{name} is empty"
    if len(value) > limit:
        return f"{name} is {len(value)} characters; the limit is {limit}"
    return None
