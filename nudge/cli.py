"""The ``nudge`` command: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen module is imported, so ``nudge --help`` and light
subcommands start fast (``import feast`` alone costs seconds).

Bad input is reported here, once for every command: a ``UserError`` (nudge/inputs.py) or a
file the command could not open becomes one line, ``nudge COMMAND: message``, and a non-zero
exit status; argparse reports its own usage errors (exit 2). Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from nudge.inputs import UserError

# name -> (module, one-line help). Order is the order of the pipeline.
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("training.simulate", "Write simulated events, customers and ground truth."),
    "import-cdnow": ("training.cdnow", "Write the CDNOW purchase log (real data in lifetimes) as events."),
    "import-completejourney": (
        "training.completejourney",
        "Write the Complete Journey baskets (real data with times of day) as events.",
    ),
    "features": ("training.features", "Build the point-in-time feature tables Feast reads."),
    "train": ("training.train", "Train, evaluate and export both models from the Feast repo."),
    "load-states": ("service.load_states", "Load the live states nudge features built into the live store."),
    "serve": ("service.server", "Run the gRPC scoring server."),
    "score": ("nudge.client.score", "Score customers against a running server."),
    "score-audience": ("service.audience", "Score a whole audience as of a time into a parquet file."),
    "evaluate-policy": ("training.policy_eval", "Value a plan's decisions by the simulator's truth."),
    "ingest": ("nudge.client.ingest", "Replay an events file through a running server's Ingest API."),
    "bench": ("nudge.client.bench", "Load-test a server the way ghz does; compare feature paths."),
    "demo": ("nudge.demo", "Simulate, build features, train, serve and score, end to end."),
}


# What `pip install nudge[train]` adds (pyproject): a server image has none of it.
TRAINING_EXTRA = frozenset({"sklearn", "skl2onnx", "onnx", "scipy", "matplotlib", "threadpoolctl"})


def _top_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    parser = argparse.ArgumentParser(
        prog="nudge",
        description="Purchase propensity and best send time over gRPC, from Feast features and ONNX models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<{width}} {text}" for name, (_, text) in COMMANDS.items())
        + "\n\nRun 'nudge COMMAND --help' for a command's options.",
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return parser


def load(command: str) -> ModuleType:
    """Import the module that implements ``command``."""
    return importlib.import_module(COMMANDS[command][0])


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``nudge COMMAND ...`` to the command's module."""
    argv = sys.argv[1:] if argv is None else argv
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        top.parse_args(argv[:1] or ["--help"])
        return 2
    command, rest = argv[0], argv[1:]
    try:
        module = load(command)
        parser = argparse.ArgumentParser(
            prog=f"nudge {command}",
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        args = parser.parse_args(rest)
        return int(module.run(args) or 0)
    except UserError as exc:
        print(f"nudge {command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if exc.name not in TRAINING_EXTRA:
            raise
        print(
            f"nudge {command}: needs the training extra ({exc.name}): pip install 'nudge[train]'",
            file=sys.stderr,
        )
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        # A file the up-front checks could not foresee: one a command finds on its own, or one
        # removed meanwhile.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"nudge {command}: {where}{exc.strerror or exc}; check the path", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
