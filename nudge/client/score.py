"""Score customers against a running server: `nudge score --target localhost:50051 c000001 c000002`.

A real gRPC client (one ScoreBatch call); prints a table, or JSON with --json.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from nudge.client.credentials import add_client_arguments, client_security
from nudge.inputs import UserError, parse_time, user_errors
from nudge.v1 import scoring_pb2 as pb
from nudge.v1 import scoring_pb2_grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("customer_ids", nargs="+", metavar="ID", help="Customer ids to score.")
    parser.add_argument("--target", default="localhost:50051", help="Server address HOST:PORT.")
    parser.add_argument("--now", help="Score as of this ISO-8601 time (default: the server clock).")
    parser.add_argument("--window-hours", type=float, help="Send window length from now (default 24).")
    parser.add_argument("--quiet", help="Local quiet hours START-END, e.g. 22-7.")
    parser.add_argument("--timeout", type=float, default=5.0, help="Deadline in seconds.")
    parser.add_argument("--json", action="store_true", help="Print the responses as JSON.")
    add_client_arguments(parser)


def _stamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def build_requests(args: argparse.Namespace) -> list[pb.ScoreRequest]:
    """One ScoreRequest per id with the shared options from the command line (a ValueError
    names the option it cannot use)."""
    options: dict[str, Any] = {}
    now = parse_time(args.now) if args.now else None
    if now is not None:
        options["now"] = _stamp(now)
    if args.window_hours is not None:
        start = now or datetime.now(UTC)
        options["window_start"] = _stamp(start)
        options["window_end"] = _stamp(
            datetime.fromtimestamp(start.timestamp() + args.window_hours * 3600, UTC)
        )
    if args.quiet:
        start, _, end = args.quiet.partition("-")
        if not (start.strip().isdigit() and end.strip().isdigit()):
            raise ValueError(f"--quiet: expected local hours START-END such as 22-7, got {args.quiet!r}")
        options["quiet_hours"] = pb.QuietHours(start_hour=int(start), end_hour=int(end))
    return [pb.ScoreRequest(customer_id=cid, **options) for cid in args.customer_ids]


def format_table(response: pb.ScoreBatchResponse) -> str:
    """A readable table: one line per customer, with the best channel, the reason that moved
    the propensity most and the reminder's local time when one is planned."""
    header = (
        f"{'customer':<12} {'propensity':>10} {'decision':<9} {'best send (local)':<26} {'features':<9} "
        f"{'channel':<11} {'top reason':<24} {'reminder (local)':<26} reason"
    )
    lines = [header, "-" * len(header)]
    for result in response.results:
        if result.HasField("error"):
            err = result.error
            lines.append(
                f"{err.customer_id:<12} {'-':>10} {'ERROR':<9} {'':<26} {'':<9} {'':<11} {'':<24} {'':<26} {err.message}"
            )
            continue
        r = result.response
        decision = pb.Decision.Name(r.decision).removeprefix("DECISION_")
        status = pb.FeatureStatus.Name(r.feature_status).removeprefix("FEATURE_STATUS_")
        local = r.best_send_time_local or "-"
        channel = "-"
        if r.channels:
            best = r.channels[0]
            channel = (
                f"{pb.Channel.Name(best.channel).removeprefix('CHANNEL_')} {best.engage_probability:.2f}"
            )
        why = r.propensity_reasons[0].code if r.propensity_reasons else "-"
        reminder = r.reminder.send_time_local if r.HasField("reminder") else "-"
        lines.append(
            f"{r.customer_id:<12} {r.purchase_propensity:>10.3f} {decision:<9} {local:<26} {status:<9} "
            f"{channel:<11} {why:<24} {reminder:<26} {r.reason}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    security = client_security(args)
    with user_errors(ValueError):
        requests = build_requests(args)
    with security.channel(args.target) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        try:
            response = stub.ScoreBatch(
                pb.ScoreBatchRequest(requests=requests),
                timeout=args.timeout,
                metadata=security.metadata,
            )
        except grpc.RpcError as exc:  # unreachable, refused, timed out: one line, exit 1
            raise UserError(f"{exc.code().name}: {exc.details()}", exit_code=1) from exc
    if args.json:
        print(json.dumps(json_format.MessageToDict(response), indent=2))
    else:
        print(format_table(response))
    return 0
