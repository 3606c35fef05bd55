"""How a client reaches a secured nudge server: TLS files and the bearer token.

``nudge score`` and ``nudge bench`` take ``--tls-ca``/``--tls-cert``/``--tls-key`` and
``--token`` (or ``NUDGE_TOKEN``) through :func:`add_client_arguments`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from nudge.contract.api import AUTHORIZATION, TOKEN_ENV
from nudge.inputs import UserError, read_pem


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches a secured server; picklable, so load processes get a copy."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    token: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """Per-call metadata carrying the token (None without one)."""
        return ((AUTHORIZATION, f"Bearer {self.token}"),) if self.token else None

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A blocking-stack channel: TLS when a CA or client certificate is set."""
        if not self.tls:
            return grpc.insecure_channel(target, options=list(options))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
        return grpc.secure_channel(target, credentials, options=list(options))


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (for a server started with TLS or tokens)")
    group.add_argument("--tls-ca", type=Path, help="CA (PEM) that signed the server's certificate: use TLS.")
    group.add_argument("--tls-cert", type=Path, help="Client certificate (PEM) for mutual TLS.")
    group.add_argument("--tls-key", type=Path, help="Client private key (PEM) for --tls-cert.")
    group.add_argument(
        "--token", help=f"Bearer token (prefer the {TOKEN_ENV} environment variable: flags show in ps)."
    )


def client_security(args: argparse.Namespace) -> ClientSecurity:
    """The ClientSecurity the ``add_client_arguments`` flags (and ``NUDGE_TOKEN``) describe."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UserError("--tls-cert and --tls-key go together")
    read = {name: read_pem(path, name) for name, path in _client_files(args) if path is not None}
    return ClientSecurity(
        ca=read.get("CA"),
        cert=read.get("certificate"),
        key=read.get("private key"),
        token=args.token or os.environ.get(TOKEN_ENV) or None,
    )


def _client_files(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    return [("CA", args.tls_ca), ("certificate", args.tls_cert), ("private key", args.tls_key)]
