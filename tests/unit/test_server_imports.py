"""The server's processes load only what serving needs: each heavy library it does not use on
the request path costs every worker start-up time and tens of MB (pyarrow ~36 MB, Feast ~180 MB)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("feast", "pyarrow", "pandas", "duckdb", "pyspark", "sklearn", "scipy")


def test_importing_the_server_loads_none_of_the_batch_libraries() -> None:
    code = f"import json, sys, service.server; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
