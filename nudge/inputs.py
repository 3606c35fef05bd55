"""Command-line input a user can get wrong, and the one-line error that says so.

A command raises :class:`UserError` (or lets one of the project's errors derived from it
through); ``nudge``'s entry point prints ``nudge COMMAND: message`` once and exits non-zero,
without a traceback: a traceback is for bugs. The checks below run before a command's heavy
work (imports of Feast, minutes of training), so a typo costs a second, not the whole run.
Each ``*_problem`` function returns what is wrong, or None; :func:`check` raises all of them
as one error.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

USAGE_EXIT = 2  # as argparse: the command was given input it cannot use, and did nothing


class UserError(Exception):
    """Input the user can fix: a bad argument, a missing or unreadable file, a taken port.

    The message names the problem and the fix on one line; ``exit_code`` is the command's."""

    def __init__(self, message: str, exit_code: int = USAGE_EXIT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def user_errors(*kinds: type[Exception], exit_code: int = USAGE_EXIT) -> Iterator[None]:
    """Report exceptions of ``kinds`` raised inside as UserErrors: only around calls whose
    errors of those kinds come from the user's input (parsing it, reading the files it names)."""
    try:
        yield
    except kinds as exc:
        raise UserError(str(exc), exit_code) from exc


def check(*problems: str | None) -> None:
    """Raise one UserError naming every problem found (None: that check passed)."""
    found = [problem for problem in problems if problem]
    if found:
        raise UserError("; ".join(found))


# --------------------------------------------------------------------------- files


def missing_input(path: Path | None, name: str, hint: str = "check the path") -> str | None:
    """An input file (or dataset directory) that is absent or unreadable; None if given none."""
    if path is None:
        return None
    if not path.exists():
        return f"{name} {path}: no such file; {hint}"
    if not os.access(path, os.R_OK):
        return f"{name} {path}: not readable (permission denied); fix its permissions or copy it"
    return None


def unwritable_dir(path: Path, name: str) -> str | None:
    """An output directory that could not be created or written (checked without creating it)."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{name} {path}: {existing} is a file, not a directory; choose a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"{name} {path}: cannot write under {existing} (permission denied); choose a writable directory"
        )
    return None


def unwritable_file(path: Path | None, name: str) -> str | None:
    """An output file that could not be written; None if given none."""
    if path is None:
        return None
    if path.is_dir():
        return f"{name} {path}: a directory; give a file name"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{name} {path}: not writable (permission denied); choose another file"
    return unwritable_dir(path.parent, name)


def feast_repo_problem(
    repo: Path, yaml: Path | None = None, names: tuple[str, str] = ("--repo", "--feature-store-yaml")
) -> str | None:
    """A Feast repo without its feature_store.yaml (or a missing alternative yaml)."""
    if yaml is not None:
        return missing_input(yaml, names[1])
    if not (repo / "feature_store.yaml").is_file():
        return (
            f"{names[0]} {repo}: no feature_store.yaml there; point it at the Feast repo (e.g. feature_repo)"
        )
    return None


# --------------------------------------------------------------------------- ports


def port_problem(host: str, port: int, name: str = "--port") -> str | None:
    """Why a server could not listen on ``host:port``; None if it can.

    gRPC would not say: it wraps a port past 65535 round to another one, and with SO_REUSEPORT
    (how --workers share a port) it joins a port another server of the same user holds. So a
    plain socket probes first, with SO_REUSEADDR as gRPC (connections of a stopped server in
    TIME_WAIT do not count) but without SO_REUSEPORT: any listener counts, another server too.
    """
    if not 1 <= port <= 65535:
        return f"{name} {port}: not a TCP port; choose one within 1..65535"
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: unknown host ({exc.strerror}); check --host"
    failures: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                failures.append(exc)
    codes = {failure.errno for failure in failures}
    if errno.EADDRINUSE in codes:
        return f"{name} {port}: already in use on {host} by another process; stop it or choose another port"
    if errno.EACCES in codes:
        return f"{name} {port}: permission denied on {host} (ports below 1024 need privileges); choose another port"
    if failures and len(failures) == len(addresses):
        return f"cannot listen on {host}:{port}: {failures[0].strerror}; check --host"
    return None


# --------------------------------------------------------------------------- values


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parse_time(text: str, name: str = "--now") -> datetime:
    """ISO-8601 from the command line; a time without offset is UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{name}: expected an ISO-8601 time such as 2026-05-05T00:00:00Z, got {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_pem(path: Path, what: str) -> bytes:
    """A PEM file's bytes (certificate, key or CA), or a UserError naming it and what is wrong."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    if b"-----BEGIN" not in data:
        raise UserError(f"{what} {path} is not PEM (no -----BEGIN line)")
    return data
