"""Generate the Python gRPC code in ``nudge/v1`` from ``proto/`` (``make proto``).

The generated files are committed so the installed package imports without a build step;
``tests/unit/test_proto_sync.py`` regenerates them into a temporary folder and fails if the
committed copies differ from the proto.
"""

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO_FILES = ["nudge/v1/scoring.proto", "nudge/v1/ingest.proto"]


def generate(out_dir: Path) -> None:
    """Run protoc (from grpcio-tools) with the Python, gRPC and .pyi generators into out_dir."""
    include = str(resources.files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
