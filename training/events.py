"""Events and customers: the data contract for users' own data, loaded and validated.

Two tables, each a Parquet or CSV file (chosen by suffix: ``.parquet``/``.pq`` or ``.csv``):

``events``, one row per event:

* ``customer_id`` (string; integer ids in Parquet are accepted and turned into strings),
* ``event_timestamp``: a timestamp, tz-aware or naive; naive means UTC. In CSV, ISO 8601
  text (``2025-03-01T09:30:00Z``, ``2025-03-01 09:30:00+01:00``, ``2025-03-01 09:30``),
* ``event_type``: one of :data:`EVENT_TYPES`,
* ``amount`` (float): the value of a purchase, finite and >= 0. Ignored (set to null) on other
  event types. The column may be absent only when there are no purchase events.

``customers``, one row per customer:

* ``customer_id`` (string), unique,
* ``time_zone``: an IANA name such as ``Europe/Berlin`` (the zone database of Python's
  ``zoneinfo``, which the service uses too),
* ``signup_timestamp`` (optional column, nulls allowed): same rules as ``event_timestamp``.

Every event's customer must be in ``customers``. A data set may hold only some event types
(only purchases, say). Other columns are ignored.

Invalid rows are never dropped silently: by default loading raises one
:class:`EventDataError` listing every problem with its row count and example rows (row numbers
count data rows from 0, header excluded). With ``drop_invalid=True`` the invalid rows are
dropped, and the counts per reason are printed to stderr and returned. Problems with a whole
column (missing, wrong type) cannot be fixed by dropping rows and always raise.
"""

from __future__ import annotations

import csv
import functools
import sys
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

# The vocabulary lives in the contract (the live feature state shares it); re-exported here as
# part of this module's data contract.
from nudge.contract.events import ENGAGEMENT_TYPES as ENGAGEMENT_TYPES
from nudge.contract.events import EVENT_TYPES as EVENT_TYPES
from nudge.inputs import missing_input

EVENT_COLUMNS = ("customer_id", "event_timestamp", "event_type", "amount")
CUSTOMER_COLUMNS = ("customer_id", "time_zone", "signup_timestamp")
EXAMPLES_SHOWN = 3
TIMESTAMP = "datetime64[ns, UTC]"


@dataclass(frozen=True)
class Problem:
    """One kind of problem in one table: what, how many rows, and a few examples."""

    table: str
    reason: str
    rows: int = 0  # rows affected; 0 for a problem with a whole column
    examples: tuple[str, ...] = ()
    values: str = ""  # the most common offending values, when there are few distinct ones

    @property
    def droppable(self) -> bool:
        """Row problems can be fixed by dropping the rows; column problems cannot."""
        return self.rows > 0

    def __str__(self) -> str:
        head = f"{self.table}: {self.reason}"
        if self.droppable:
            head += f": {self.rows:,} row{'s' if self.rows != 1 else ''}"
        if self.values:
            head += f" (values: {self.values})"
        return "\n".join([head, *(f"    e.g. {example}" for example in self.examples)])


class EventDataError(ValueError):
    """The data breaks the schema; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [f"invalid event data ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
        lines += [f"  - {problem}" for problem in problems]
        if all(problem.droppable for problem in problems):
            lines.append("Fix the data, or drop these rows with drop_invalid=True (nudge: --drop-invalid).")
        super().__init__("\n".join(lines))


@dataclass
class _Checked:
    """One table being checked: raw rows (for examples), normalised columns, what is wrong where."""

    name: str
    raw: pd.DataFrame
    columns: tuple[str, ...]
    normalised: dict[str, pd.Series] = field(default_factory=dict)
    column_problems: list[str] = field(default_factory=list)
    bad_rows: dict[str, np.ndarray] = field(default_factory=dict)
    bad_values: dict[str, str] = field(default_factory=dict)

    def flag(self, reason: str, bad: np.ndarray | pd.Series, values: pd.Series | None = None) -> None:
        """Record rows with a problem; ``values`` also reports the most common offending values."""
        mask = np.asarray(bad, dtype=bool)
        if not mask.any():
            return
        self.bad_rows[reason] = mask
        if values is not None:
            top = values[mask].value_counts().head(EXAMPLES_SHOWN)
            self.bad_values[reason] = ", ".join(f"{value!r} x{count:,}" for value, count in top.items())

    def invalid_rows(self) -> np.ndarray:
        return np.logical_or.reduce([np.zeros(len(self.raw), bool), *self.bad_rows.values()])

    def problems(self) -> list[Problem]:
        found = [Problem(self.name, reason) for reason in self.column_problems]
        shown = self.raw[[column for column in self.columns if column in self.raw.columns]]
        for reason, mask in self.bad_rows.items():
            examples = tuple(
                f"row {row}: " + ", ".join(f"{col}={_show(value)}" for col, value in shown.iloc[row].items())
                for row in np.flatnonzero(mask)[:EXAMPLES_SHOWN]
            )
            found.append(
                Problem(self.name, reason, int(mask.sum()), examples, self.bad_values.get(reason, ""))
            )
        return found

    def clean(self) -> tuple[pd.DataFrame, dict[str, int]]:
        """The normalised frame without invalid rows, and the rows each reason removed (printed)."""
        frame = pd.DataFrame(self.normalised, columns=list(self.columns))
        if not self.bad_rows:
            return frame, {}
        bad = self.invalid_rows()
        counts = {reason: int(mask.sum()) for reason, mask in self.bad_rows.items()}
        print(
            f"{self.name}: dropped {int(bad.sum()):,} of {len(bad):,} rows: "
            + "; ".join(f"{reason}: {count:,}" for reason, count in counts.items()),
            file=sys.stderr,
        )
        return frame[~bad].reset_index(drop=True), counts


@dataclass(frozen=True)
class EventData:
    """Validated, normalised events and customers, and the rows dropped per table and reason."""

    events: pd.DataFrame
    customers: pd.DataFrame
    dropped: dict[str, dict[str, int]]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV file as it is; CSV columns stay text so ids keep leading zeros."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix == ".csv":
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        options = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), null_values=[""], strings_can_be_null=True
        )
        return pa_csv.read_csv(path, convert_options=options).to_pandas()
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")


def load_events(path: str | Path, *, drop_invalid: bool = False) -> pd.DataFrame:
    """Events from one file, checked on their own (without customers to check ids against).

    Columns: ``customer_id`` (str), ``event_timestamp`` (datetime64[ns, UTC]), ``event_type``
    (categorical over :data:`EVENT_TYPES`), ``amount`` (float64, null except on purchases).
    """
    return _finish([_check_events(read_table(path), Path(path).name)], drop_invalid)[0][0]


def load_customers(path: str | Path, *, drop_invalid: bool = False) -> pd.DataFrame:
    """Customers from one file: ``customer_id`` (str), ``time_zone`` (str), ``signup_timestamp``."""
    return _finish([_check_customers(read_table(path), Path(path).name)], drop_invalid)[0][0]


def load_event_data(
    events_path: str | Path, customers_path: str | Path, *, drop_invalid: bool = False
) -> EventData:
    """Both files, checked together so that one error lists the problems of both."""
    return validate(
        read_table(events_path),
        read_table(customers_path),
        drop_invalid=drop_invalid,
        names=(Path(events_path).name, Path(customers_path).name),
    )


def missing_files(events_path: Path, customers_path: Path) -> list[str | None]:
    """``--events`` and ``--customers`` that cannot be read: checked before the work that reads them."""
    return [
        missing_input(path, flag, f"check the path (nudge simulate --out DIR writes DIR/{name}.parquet)")
        for path, flag, name in (
            (events_path, "--events", "events"),
            (customers_path, "--customers", "customers"),
        )
    ]


def validate(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    drop_invalid: bool = False,
    names: tuple[str, str] = ("events", "customers"),
) -> EventData:
    """Check and normalise both tables, including that every event's customer has a valid row.

    ``EventData.dropped`` is keyed ``"events"`` / ``"customers"``, then by reason.
    """
    checked_events = _check_events(events, names[0])
    checked_customers = _check_customers(customers, names[1])
    if "customer_id" in checked_events.normalised and "customer_id" in checked_customers.normalised:
        ids = checked_events.normalised["customer_id"]
        listed = checked_customers.normalised["customer_id"].dropna()
        checked_events.flag(f"customer_id absent from {names[1]}", ids.notna() & ~ids.isin(listed))
        invalid = checked_customers.invalid_rows()
        if invalid.any():
            bad_ids = listed[invalid[listed.index]].drop_duplicates()
            good_ids = listed[~invalid[listed.index]]
            orphans = ids.isin(bad_ids[~bad_ids.isin(good_ids)])
            checked_events.flag(f"customer's row in {names[1]} is invalid", orphans)
    (events_frame, events_dropped), (customers_frame, customers_dropped) = _finish(
        [checked_events, checked_customers], drop_invalid
    )
    dropped = {"events": events_dropped, "customers": customers_dropped}
    return EventData(events_frame, customers_frame, {table: c for table, c in dropped.items() if c})


def _finish(tables: list[_Checked], drop_invalid: bool) -> list[tuple[pd.DataFrame, dict[str, int]]]:
    """Raise one error for every problem of every table, unless all are droppable and allowed."""
    problems = [problem for table in tables for problem in table.problems()]
    if problems and (not drop_invalid or not all(problem.droppable for problem in problems)):
        raise EventDataError(problems)
    return [table.clean() for table in tables]


def _check_events(raw: pd.DataFrame, name: str) -> _Checked:
    checked = _Checked(name, raw.reset_index(drop=True), EVENT_COLUMNS)
    ids = _required_text(checked, "customer_id", ids=True)
    _timestamps(checked, "event_timestamp", required=True)
    types = _required_text(checked, "event_type")
    if types is not None:
        checked.flag("unknown event_type", types.notna() & ~types.isin(EVENT_TYPES), values=types)
        checked.normalised["event_type"] = pd.Series(pd.Categorical(types, categories=EVENT_TYPES))
    is_purchase = types.eq("purchase").to_numpy() if types is not None else np.zeros(len(raw), bool)
    _amounts(checked, is_purchase)
    if ids is not None:
        checked.normalised["customer_id"] = ids
    return checked


def _check_customers(raw: pd.DataFrame, name: str) -> _Checked:
    checked = _Checked(name, raw.reset_index(drop=True), CUSTOMER_COLUMNS)
    ids = _required_text(checked, "customer_id", ids=True)
    if ids is not None:
        checked.flag("duplicate customer_id (the first row is kept)", ids.notna() & ids.duplicated())
        checked.normalised["customer_id"] = ids
    zones = _required_text(checked, "time_zone")
    if zones is not None:
        checked.flag("unknown time_zone", zones.notna() & ~zones.isin(known_time_zones()), values=zones)
        checked.normalised["time_zone"] = zones
    _timestamps(checked, "signup_timestamp", required=False)
    return checked


@functools.cache
def known_time_zones() -> frozenset[str]:
    """IANA names zoneinfo knows; ``localtime`` is the machine's zone, not a portable name."""
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def _required_text(checked: _Checked, column: str, *, ids: bool = False) -> pd.Series | None:
    """A required text column as str/None values; missing values are flagged per row."""
    if column not in checked.raw.columns:
        checked.column_problems.append(_missing_column(checked.raw, column))
        return None
    values = _as_text(checked, column, ids=ids)
    if values is not None:
        checked.flag(f"missing {column}", values.isna())
    return values


def _as_text(
    checked: _Checked, column: str, *, ids: bool = False, expected: str = "text"
) -> pd.Series | None:
    """The column as object values (str or None); integer ids become their decimal text."""
    series = checked.raw[column]
    if ids and pd.api.types.is_integer_dtype(series.dtype):
        series = series.astype("string")
    elif isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.infer_dtype(series, skipna=True) not in ("string", "empty"):
        checked.column_problems.append(f"column {column!r} has type {series.dtype}; expected {expected}")
        return None
    text = series.astype(object)
    return text.where(text.notna() & text.ne(""), None)


def _timestamps(checked: _Checked, column: str, *, required: bool) -> None:
    """Timestamps normalised to UTC: naive ones mean UTC, text must be ISO 8601."""
    if column not in checked.raw.columns:
        if required:
            checked.column_problems.append(_missing_column(checked.raw, column))
        else:
            checked.normalised[column] = pd.Series(pd.NaT, index=checked.raw.index, dtype=TIMESTAMP)
        return
    series = checked.raw[column]
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        parsed = series.dt.tz_convert("UTC")
        present = parsed.notna()
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        parsed = series.dt.tz_localize("UTC")
        present = parsed.notna()
    elif (text := _as_text(checked, column, expected="a timestamp or ISO 8601 text")) is not None:
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        present = text.notna()
        checked.flag(f"unparseable {column}", present & parsed.isna())
    else:
        return
    if required:
        checked.flag(f"missing {column}", ~present)
    checked.normalised[column] = parsed.astype(TIMESTAMP)


def _amounts(checked: _Checked, is_purchase: np.ndarray) -> None:
    """Purchase amounts must be finite and >= 0; amounts of other events are ignored (null)."""
    if "amount" not in checked.raw.columns:
        if is_purchase.any():
            checked.column_problems.append(
                _missing_column(checked.raw, "amount") + " (required when there are purchase events)"
            )
        checked.normalised["amount"] = pd.Series(np.nan, index=checked.raw.index)
        return
    raw = checked.raw["amount"]
    if pd.api.types.is_bool_dtype(raw.dtype) or not (
        pd.api.types.is_numeric_dtype(raw.dtype)
        or pd.api.types.is_object_dtype(raw.dtype)
        or pd.api.types.is_string_dtype(raw.dtype)
    ):
        checked.column_problems.append(f"column 'amount' has type {raw.dtype}; expected a number")
        return
    present = (raw.notna() & raw.ne("")).to_numpy()
    amount = pd.to_numeric(raw.where(present, None), errors="coerce").astype("float64")
    checked.flag("purchase amount missing", is_purchase & ~present)
    checked.flag("purchase amount not a finite number", is_purchase & present & ~np.isfinite(amount))
    checked.flag("purchase amount negative", is_purchase & (amount < 0).to_numpy())
    checked.normalised["amount"] = amount.where(is_purchase)


def _missing_column(raw: pd.DataFrame, column: str) -> str:
    return f"missing column {column!r} (columns found: {', '.join(map(str, raw.columns)) or 'none'})"


def _show(value: object) -> str:
    """Text quoted (so stray spaces show), everything else as printed (nan, None, timestamps)."""
    return repr(value) if isinstance(value, str) else str(value)
