"""Who may call nudge, and what a caller can make it parse.

Transport: ``--tls-cert``/``--tls-key`` serve TLS only (no plaintext port beside it);
``--tls-client-ca`` adds mutual TLS, so the handshake itself refuses a client without a
certificate that CA signed. Without a certificate the server is plaintext and says so in a
warning at start-up: plaintext is for loopback, a sidecar or a mesh that does TLS for us.

Callers: with ``--auth-tokens-file`` or ``NUDGE_AUTH_TOKENS`` every RPC except health checks
and server reflection needs ``authorization: Bearer <token>`` metadata. Missing or unknown
token → UNAUTHENTICATED; a known token whose line in the file does not list the method →
PERMISSION_DENIED. Tokens are compared in constant time against every configured token, so
timing tells an attacker nothing about how much of a guess was right. The check runs in each
method's wrapper (service/rpc.py) before the request is decoded: an unauthenticated caller
cannot make the server parse anything. Health checks and server reflection need no token:
load balancers and probes check health; grpcurl and ghz need reflection before they can call
anything. Neither reveals customer data.

Hostile bytes: grpcio answers a request its deserializer rejects with UNKNOWN. nudge's
methods are registered without deserializers; their wrapper (service/rpc.py) parses, and turns
undecodable bytes (truncated, wrong wire types, invalid UTF-8) into INVALID_ARGUMENT naming
the message type instead.

Client side: ``nudge.client.credentials``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from nudge.contract.api import AUTHORIZATION, METHODS_BY_NAME, SCORING_SERVICE
from nudge.inputs import UserError, read_pem
from service.config import Settings

log = logging.getLogger("nudge.security")


class SecurityError(UserError, ValueError):
    """TLS or token configuration that cannot be used; the message says which file and why."""


# --------------------------------------------------------------------------- transport


def add_port(server: grpc.aio.Server, settings: Settings) -> str:
    """Bind ``settings.address`` with TLS, mutual TLS or plaintext; returns which, for the log."""
    credentials = None  # plaintext: settings validation allows it only with --plaintext chosen
    if settings.tls_cert is not None and settings.tls_key is not None:
        credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    try:
        if credentials is None:
            server.add_insecure_port(settings.address)
        else:
            server.add_secure_port(settings.address, credentials)
    except RuntimeError as exc:  # how grpcio reports a failed bind
        raise SecurityError(
            f"cannot listen on {settings.address} (in use by another process?); choose another --port"
        ) from exc
    if credentials is not None:
        return "mutual TLS" if settings.tls_client_ca is not None else "TLS"
    log.warning(
        "serving PLAINTEXT on %s (--plaintext): anyone who can reach the port can read the traffic%s",
        settings.address,
        " (including bearer tokens)" if load_tokens(settings) else "",
    )
    return "plaintext"


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; with ``client_ca`` every client must present a
    certificate that CA signed (checked in the handshake, before any RPC)."""
    chain, private_key = read_pem(cert, "certificate"), read_pem(key, "private key")
    roots = read_pem(client_ca, "client CA") if client_ca is not None else None
    try:
        return grpc.ssl_server_credentials(
            [(private_key, chain)], root_certificates=roots, require_client_auth=roots is not None
        )
    except Exception as exc:  # grpc raises plain errors for malformed PEM
        raise SecurityError(f"TLS credentials from {cert} and {key} are unusable: {exc}") from exc


# --------------------------------------------------------------------------- bearer tokens


@dataclass(frozen=True)
class Token:
    """One accepted token and the methods it may call (None: every protected method)."""

    secret: bytes
    methods: frozenset[str] | None


def load_tokens(settings: Settings) -> list[Token]:
    """Tokens from ``auth_tokens`` (env/flag, all methods) and ``auth_tokens_file``.

    File format, one token per line, ``#`` starts a comment::

        s3cr3t-for-the-campaign-service
        s3cr3t-for-a-dashboard  Score

    Method names are short (``Score``, ``Ingest``) or full (``/nudge.v1.ScoringService/Score``).
    """
    tokens = [Token(t.strip().encode(), None) for t in settings.auth_tokens.split(",") if t.strip()]
    if settings.auth_tokens_file is not None:
        tokens += parse_token_file(settings.auth_tokens_file)
    return tokens


def parse_token_file(path: Path) -> list[Token]:
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"cannot read auth tokens file {path}: {exc}") from exc
    tokens = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise SecurityError(f"{path}:{number}: expected 'TOKEN' or 'TOKEN Method,Method'")
        methods = None
        if len(fields) == 2:
            methods = frozenset(_full_method(m) for m in fields[1].split(",") if m)
        tokens.append(Token(fields[0].encode(), methods))
    if not tokens:
        raise SecurityError(f"auth tokens file {path} holds no tokens")
    return tokens


def _full_method(name: str) -> str:
    """A short name is looked up across nudge's services (method names are unique across them)."""
    if name.startswith("/"):
        return name
    return METHODS_BY_NAME.get(name, f"/{SCORING_SERVICE}/{name}")


Refusal = tuple[grpc.StatusCode, str]
"""The status and message a call is refused with (service/rpc.py ends the call with it)."""


class BearerTokenAuth:
    """Checks ``authorization: Bearer <token>``; built only when tokens are configured, so a
    server without auth pays nothing.

    Health checks are registered open (service/rpc.py) and reflection is not wrapped at all,
    so probes and grpcurl need no token; every other method's wrapper asks
    :meth:`for_method`'s check before it parses the request."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        if not tokens:
            raise ValueError("BearerTokenAuth needs at least one token")
        self._tokens = tuple(tokens)

    def for_method(self, method: str) -> Callable[[Iterable[tuple[str, str | bytes]] | None], Refusal | None]:
        """The check of one method's calls: the call's metadata → None (allowed) or why not.
        Its messages are built here, once per method."""
        missing: Refusal = (
            grpc.StatusCode.UNAUTHENTICATED,
            "missing bearer token: send metadata 'authorization: Bearer <token>'",
        )
        invalid: Refusal = (grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        denied: Refusal = (grpc.StatusCode.PERMISSION_DENIED, f"this token may not call {method[:200]}")
        match = self.match

        def refusal(metadata: Iterable[tuple[str, str | bytes]] | None) -> Refusal | None:
            presented = _bearer(metadata)
            if presented is None:
                return missing
            token = match(presented)
            if token is None:
                return invalid
            if token.methods is not None and method not in token.methods:
                return denied
            return None

        return refusal

    def match(self, presented: bytes) -> Token | None:
        """The configured token equal to ``presented``, comparing against all of them in
        constant time each (no early exit), so response time does not depend on the guess."""
        found = None
        for token in self._tokens:
            if hmac.compare_digest(token.secret, presented):
                found = token
        return found


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, credential = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                return b""
            return credential.strip().encode("utf-8", "surrogateescape")
    return None


def bearer_auth(settings: Settings) -> BearerTokenAuth | None:
    """The token check for these settings, or None when no tokens are configured."""
    tokens = load_tokens(settings)
    if not tokens:
        return None
    log.info("bearer-token auth on: %d token(s); health and reflection stay open", len(tokens))
    return BearerTokenAuth(tokens)
