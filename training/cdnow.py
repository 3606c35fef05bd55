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
from pathlib import Path

import pandas as pd

from nudge.inputs import check, unwritable_dir
from training import real_data

PACKAGE = "lifetimes"
REQUIREMENT = "lifetimes==0.11.3"
DATA_FILE = Path("datasets") / "CDNOW_master.txt"
TIME_ZONE = "America/New_York"
LOCAL_HOUR = 12
RAW_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    real_data.add_arguments(parser, everyone="all 23,570")


def run(args: argparse.Namespace) -> int:
    check(unwritable_dir(args.out, "--out"))
    source = cdnow_path()
    events, customers = convert(read_cdnow(source), args.max_customers)
    first, last = events["event_timestamp"].min(), events["event_timestamp"].max()
    print(
        f"{source}: {len(events):,} purchases of {len(customers):,} customers, "
        f"{first.date()} to {last.date()}, each at {LOCAL_HOUR}:00 {TIME_ZONE} (CDNOW has dates only)"
    )
    real_data.write(args.out, events, customers)
    return 0


def cdnow_path() -> Path:
    """Where the installed ``lifetimes`` keeps CDNOW_master.txt (its modules pull in autograd,
    which reading a text file does not need)."""
    return real_data.packaged_file(PACKAGE, DATA_FILE, REQUIREMENT)


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
    raw = raw[real_data.first_customers(raw["customer_id"], max_customers)]
    local = pd.to_datetime(raw["date"], format="%Y%m%d") + pd.Timedelta(hours=LOCAL_HOUR)
    # Noon is never in a DST gap or fold, so localising cannot fail or be ambiguous.
    at = local.dt.tz_localize(TIME_ZONE)
    return real_data.purchase_tables(raw["customer_id"], at, pd.to_numeric(raw["dollar_value"]), TIME_ZONE)
