"""Real purchases: the CDNOW transaction log as nudge's events and customers.

CDNOW (Fader and Hardie) is every purchase of the 23,570 customers who first bought CDs from
CDNOW in the first quarter of 1997, through June 1998: one line per customer and day with
the customer id, the date (YYYYMMDD), the number of CDs and the dollar amount. It ships
inside the ``lifetimes`` wheel (``lifetimes/datasets/CDNOW_master.txt``, the ``train``
extra), so it is real data that needs no download at run time. The file is found without
importing ``lifetimes`` (its modules pull in autograd and are not needed to read a text file).

The conversion, and what it has to invent:

* every line becomes one ``purchase`` event with its dollar amount (zero amounts kept: the
  schema allows them); the number of CDs has no place in the events schema and is left out;
* CDNOW has dates, not times: each purchase is put at 12:00 local time in
  ``America/New_York`` (one zone for every customer, the retailer's), converted to UTC. The
  hour is therefore the importer's, not the customer's: ``nudge train`` finds one local hour of
  day in the data and reports send time as n/a instead of learning it;
* the 1997-1998 dates are kept, not shifted to recent ones: ``nudge features`` and ``nudge
  train`` read the offline tables point in time (``get_historical_features``), which needs no
  recent data; only materialising an online store for serving would (features past their
  view's TTL are not served);
* customers get the one zone and no ``signup_timestamp`` (CDNOW has none; a customer becomes
  known at their first purchase).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd

from nudge.inputs import UserError, check, positive_int, unwritable_dir

PACKAGE = "lifetimes"
DATA_FILE = Path("datasets") / "CDNOW_master.txt"
TIME_ZONE = "America/New_York"
LOCAL_HOUR = 12
RAW_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, help="writes OUT/events.parquet and OUT/customers.parquet"
    )
    parser.add_argument(
        "--max-customers",
        type=positive_int,
        help="keep only the first N customer ids (all of their purchases); default: all 23,570",
    )


def run(args: argparse.Namespace) -> int:
    check(unwritable_dir(args.out, "--out"))
    source = cdnow_path()
    events, customers = convert(read_cdnow(source), args.max_customers)
    args.out.mkdir(parents=True, exist_ok=True)
    events.to_parquet(args.out / "events.parquet", index=False)
    customers.to_parquet(args.out / "customers.parquet", index=False)
    first, last = events["event_timestamp"].min(), events["event_timestamp"].max()
    print(
        f"{source}: {len(events):,} purchases of {len(customers):,} customers, "
        f"{first.date()} to {last.date()}, each at {LOCAL_HOUR}:00 {TIME_ZONE} (CDNOW has dates only)"
    )
    print(f"wrote {args.out / 'events.parquet'} and {args.out / 'customers.parquet'}")
    return 0


def cdnow_path() -> Path:
    """Where the installed ``lifetimes`` keeps CDNOW_master.txt, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)  # a top-level name: locates, does not execute
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / DATA_FILE
        if path.is_file():
            return path
    where = f" ({', '.join(locations)} has no {DATA_FILE})" if locations else ""
    raise UserError(
        f"the CDNOW data ships in the {PACKAGE} package, which is not installed{where}: "
        f"pip install 'nudge[train]' (or pip install {PACKAGE}==0.11.3)"
    )


def read_cdnow(path: Path) -> pd.DataFrame:
    """The raw lines, every field as text (ids keep their leading zeros). The packaged file has a
    header line; the original distribution has none, so both are read."""
    with path.open() as f:
        first = f.readline().split()
    header = 0 if first and not first[0].isdigit() else None
    raw = pd.read_csv(path, sep=r"\s+", header=header, names=list(RAW_COLUMNS), dtype=str)
    if raw.isna().any().any():
        raise ValueError(f"{path}: lines with fewer than {len(RAW_COLUMNS)} fields")
    return raw


def convert(raw: pd.DataFrame, max_customers: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw CDNOW lines → (events, customers) in the events schema (training/events.py).

    ``max_customers`` keeps the first N customer ids in id order with all their lines, so a
    subset is a smaller population over the same 18 months, never a truncated history.
    """
    if max_customers is not None:
        kept = pd.Series(raw["customer_id"].unique()).sort_values().iloc[:max_customers]
        raw = raw[raw["customer_id"].isin(kept)]
    raw = raw.reset_index(drop=True)
    local = pd.to_datetime(raw["date"], format="%Y%m%d") + pd.Timedelta(hours=LOCAL_HOUR)
    events = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            # Noon is never in a DST gap or fold, so localising cannot fail or be ambiguous.
            "event_timestamp": local.dt.tz_localize(TIME_ZONE).dt.tz_convert("UTC"),
            "event_type": "purchase",
            "amount": pd.to_numeric(raw["dollar_value"]).astype("float64"),
        }
    )
    customers = pd.DataFrame({"customer_id": sorted(events["customer_id"].unique()), "time_zone": TIME_ZONE})
    return events, customers
