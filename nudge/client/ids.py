"""Which customers a load run or benchmark asks about: ids from a parquet, JSON or text file."""

from __future__ import annotations

import json
from pathlib import Path

from nudge.inputs import check, missing_input

DEFAULT_IDS = Path(__file__).resolve().parents[2] / "loadtest" / "customers.json"


def load_ids(path: Path | None, parquet: Path | None) -> list[str]:
    """Customer ids from a parquet file's customer_id column, or a JSON/plain-text id file.

    A JSON file may be a list of ids or a ghz data file (objects with ``customer_id``);
    anything else is read as one id per line.
    """
    check(missing_input(path, "--ids"), missing_input(parquet, "--ids-from"))
    if parquet is not None:
        import pyarrow.parquet as pq  # only this input needs pyarrow

        ids = [str(v) for v in pq.read_table(parquet, columns=["customer_id"]).column(0).to_pylist()]
    else:
        ids = _read_id_file(path or DEFAULT_IDS)
    if not ids:
        raise ValueError("no customer ids to send")
    return ids


def _read_id_file(path: Path) -> list[str]:
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of ids or of objects with customer_id")
    return [str(item["customer_id"]) if isinstance(item, dict) else str(item) for item in data]
