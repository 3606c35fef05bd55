"""The scoring core: features → both ONNX models → send-time policy. Knows nothing of gRPC.

One call scores a batch: it validates each query, makes ONE online read for the union of both
models' features for every valid customer, runs each ONNX session once for the whole batch and
applies the policy. A customer's invalid query becomes that customer's error; the others are
scored. When the online store is unreachable, the answer is the cold-start (population) one
with status UNAVAILABLE, or ``StoreUnavailable`` is raised if the settings ask to fail fast.

Two forms of the same call:

* per customer, :meth:`Scorer.score`: query objects in, ScoreResult objects out, the model rows
  filled from each customer's feature dict and the per-customer policy (service/policy.py).
  What a single Score takes: for one customer it costs least.
* column-wise, :meth:`Scorer.score_queries` / :meth:`Scorer.score_columns`: queries as
  columns (:class:`Queries`), features as columns (:class:`~service.feature_columns.
  FeatureColumns`), each model's matrix filled a column at a time, the column-wise policy
  (service/policy_columns.py), answers as columns (:class:`Scores`). What ScoreBatch and
  ``nudge score-audience`` take: no Python per customer but the readers', the sentences and
  the output (ScoreBatch's response and the audience's columns are built from the arrays;
  :meth:`Scores.result` gives one row as a ScoreResult, what the tests compare with Score's).

tests/unit/test_scorer_columns.py holds the two forms' answers equal.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from nudge.contract.channel_model import CHANNEL_NAMES, RATE_FEATURES, SEND_FEATURES
from nudge.contract.features import STATS_VIEW
from service.config import Settings, id_problem
from service.feature_columns import MISSING_US, FeatureColumns, FeatureKinds
from service.models import LoadedModel, ModelSet
from service.online.base import CustomerFeatures, FeatureStoreUnavailable, OnlineFeatureReader
from service.online.live import LiveFeatures
from service.policy import (
    ONE_US,
    PlanQuery,
    PolicyConfig,
    PolicyInputError,
    SendPlan,
    plan_send_batch,
    to_datetime,
    to_us,
)
from service.policy_columns import PlanInputs, Plans, no_error, plan_columns
from service.reminders import Interest, interest_of, open_interest

TIME_ZONE_REF = "customer_stats:time_zone"
DORMANCY_REF = "customer_stats:days_since_last_engagement"
# The open interest a reminder follows (service/reminders.py), from engagement_v1.
INTEREST_REFS = tuple(
    f"{STATS_VIEW}:{name}"
    for name in ("hours_since_open_interest", "open_interest_is_cart", "decide_time_hours")
)
# Each channel's response rate and sends (CHANNELS order), for the channel model.
CHANNEL_RATE_REFS = tuple(f"{STATS_VIEW}:{name}" for name in RATE_FEATURES)
CHANNEL_SEND_REFS = tuple(f"{STATS_VIEW}:{name}" for name in SEND_FEATURES)
# Read beside the models' inputs: the policy needs them whatever the models are.
CONTEXT_REFS = (TIME_ZONE_REF, DORMANCY_REF, *INTEREST_REFS, *CHANNEL_RATE_REFS, *CHANNEL_SEND_REFS)
# A request without window_end may be messaged within a day of window_start (see the proto).
DEFAULT_WINDOW = timedelta(hours=24)
UNSET = np.iinfo(np.int64).min  # a time the caller left out (Queries)


_T = TypeVar("_T")
Reasons = Sequence[tuple[str, float]]
IntArray = npt.NDArray[np.int64]
ObjectArray = npt.NDArray[np.object_]
_DEFAULT_WINDOW_US = DEFAULT_WINDOW // ONE_US


class ScoreProbe(Protocol):
    """Observability hook (service/metrics.py, service/tracing.py): wraps a scoring stage.

    Each method gets the stage once, at ``Scorer.instrument`` time, and returns a callable
    with the same arguments (``inference`` gets the ModelSet first)."""

    def feature_fetch(self, read: Callable[..., _T]) -> Callable[..., _T]: ...

    def inference(self, infer: Callable[..., _T]) -> Callable[..., _T]: ...


class InvalidQuery(ValueError):
    """A query that cannot be scored as asked; the message says what is wrong."""


class StoreUnavailable(RuntimeError):
    """The online store failed and the settings say to fail rather than answer cold-start."""


class FeatureStatus(enum.Enum):
    FRESH = "FRESH"
    STALE = "STALE"
    MISSING = "MISSING"
    UNAVAILABLE = "UNAVAILABLE"


# Scores.status holds each customer's status as its index here.
STATUSES = (FeatureStatus.FRESH, FeatureStatus.STALE, FeatureStatus.MISSING, FeatureStatus.UNAVAILABLE)


@dataclass(frozen=True)
class ScoreQuery:
    """One customer to score; unset times take the defaults documented in the proto."""

    customer_id: str
    now: datetime | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    quiet_hours: tuple[int, int] | None = None
    channel: str = "UNSPECIFIED"


@dataclass(frozen=True)
class ScoreResult:
    """The answer for one customer."""

    customer_id: str
    purchase_propensity: float
    horizon_days: int
    plan: SendPlan
    models: dict[str, str]
    feature_status: FeatureStatus
    feature_age_seconds: float
    channel: str
    # The features that moved the propensity most: (code, log-odds contribution), largest first.
    propensity_reasons: Reasons = ()


@dataclass(frozen=True)
class Queries:
    """n queries as columns, one entry per customer: times in µs since the epoch (UNSET where
    the caller left them out: the core applies the defaults), quiet hours (start, end) with
    (-1, -1) where not given, the channel's name ("UNSPECIFIED" for none) and, where a query
    could not even be converted, why (``error``, else None)."""

    customer_ids: list[str]
    now_us: IntArray
    window_start_us: IntArray
    window_end_us: IntArray
    quiet: IntArray  # (n, 2)
    channel: list[str]
    error: ObjectArray

    def __len__(self) -> int:
        return len(self.customer_ids)


@dataclass(frozen=True)
class Scores:
    """The answers for n customers as columns (row i answers query i). A row with an ``error``
    has no score (the message an InvalidQuery carries). ``status`` indexes STATUSES;
    ``reason_codes``/``reason_values`` are the propensity's reasons, largest first (None codes
    past a row's last); ``plans`` the policy's answers; ``models`` the model set that scored."""

    customer_ids: list[str]
    error: ObjectArray
    propensity: npt.NDArray[np.float64]
    status: npt.NDArray[np.int8]
    age_seconds: npt.NDArray[np.float64]
    reason_codes: ObjectArray
    reason_values: npt.NDArray[np.float64]
    plans: Plans
    channel: list[str]
    models: ModelSet

    def __len__(self) -> int:
        return len(self.customer_ids)

    def result(self, i: int) -> ScoreResult | InvalidQuery:
        """Row ``i`` as one object: its ScoreResult, or its InvalidQuery."""
        error = self.error[i]
        if error is not None:
            return InvalidQuery(error)
        reasons = [
            (c, v)
            for c, v in zip(self.reason_codes[i].tolist(), self.reason_values[i].tolist(), strict=True)
            if c is not None
        ]
        return ScoreResult(
            customer_id=self.customer_ids[i],
            purchase_propensity=float(self.propensity[i]),
            horizon_days=self.models.horizon_days,
            plan=self.plans.send_plan(i),
            models=self.models.versions,
            feature_status=STATUSES[self.status[i]],
            feature_age_seconds=float(self.age_seconds[i]),
            channel=self.channel[i],
            propensity_reasons=reasons,
        )


@dataclass(frozen=True)
class _Resolved:
    query: ScoreQuery
    now: datetime
    window_start: datetime
    window_end: datetime
    quiet_hours: tuple[int, int] | None


class Scorer:
    """Scores queries with a feature reader and a model set chosen at start-up.

    With ``live`` (the customers' live states, service/online/live.py), a customer who has a
    state is scored on features exact at the query's ``now``; the others on the snapshot rows
    ``reader`` reads. ``swap`` replaces models and reader (hot swap); a call reads each
    attribute once, so calls in flight finish on the models they started with.
    """

    def __init__(
        self,
        reader: OnlineFeatureReader,
        models: ModelSet,
        settings: Settings,
        live: LiveFeatures | None = None,
    ) -> None:
        self.reader = reader
        self.live = live
        self.models = models
        self.settings = settings
        self.policy = PolicyConfig(
            min_propensity=settings.min_propensity,
            max_dormant_days=settings.max_dormant_days,
            top_k=settings.top_slots,
            default_zone=settings.default_time_zone,
            max_window=timedelta(hours=settings.max_window_hours),
            default_decide_hours=settings.default_decide_hours,
        )
        self._stale_after_s = settings.stale_after_hours * 3600.0
        quiet = (settings.quiet_start_hour, settings.quiet_end_hour)
        self._default_quiet = quiet if quiet[0] != quiet[1] else None
        self._kinds: tuple[ModelSet, tuple[str, ...], FeatureKinds] | None = None
        # Runs the send-time model beside the propensity's for batches (started on first use).
        self._beside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nudge-send-time")
        self.instrument()

    def swap(self, models: ModelSet, reader: OnlineFeatureReader | None = None) -> None:
        """Serve ``models`` from the next call on, and ``reader`` too when given (new models
        may need features the current reader does not read); the replaced reader is closed.
        Runs on the event loop's thread, which is also where reads run: none is using it."""
        if reader is not None and reader is not self.reader:
            replaced, self.reader = self.reader, reader
            replaced.close()
        self.models = models

    # --- observability hook: metrics and tracing wrap the two stages once, here ---------------
    def instrument(self, *probes: ScoreProbe) -> None:
        """Route the feature read and inference through each probe's wrapper. Done once, not
        per call: without probes the stages are the plain bound methods, so an uninstrumented
        Scorer pays nothing, and a hot swap of ``models`` keeps the wrappers."""
        fetch: Callable[..., Any] = self._read
        fetch_columns: Callable[..., Any] = self._read_columns
        infer: Callable[..., Any] = self._infer
        infer_columns: Callable[..., Any] = self._infer_columns
        for probe in probes:
            fetch, infer = probe.feature_fetch(fetch), probe.inference(infer)
            fetch_columns, infer_columns = probe.feature_fetch(fetch_columns), probe.inference(infer_columns)
        self._fetch_stage, self._infer_stage = fetch, infer
        self._fetch_columns_stage, self._infer_columns_stage = fetch_columns, infer_columns

    @staticmethod
    def _infer(models: ModelSet, rows: list[Any]) -> tuple[np.ndarray, np.ndarray, Sequence[Reasons]]:
        """Both models on the batch, and the propensity's reasons from the same input rows."""
        x = models.propensity.rows(rows)
        propensity = models.propensity.predict(x)[:, 1]
        reasons = (
            models.propensity.reasons.explain(x)
            if models.propensity.reasons is not None
            else [[]] * len(rows)
        )
        return propensity, models.send_time.predict(models.send_time.rows(rows)), reasons

    def score(
        self, queries: Sequence[ScoreQuery], clock: datetime | None = None
    ) -> list[ScoreResult | InvalidQuery]:
        """Score each query; an invalid one yields its InvalidQuery in place of a result."""
        clock = clock or datetime.now(UTC)
        resolved = [self._resolve(q, clock) for q in queries]
        valid = [r for r in resolved if isinstance(r, _Resolved)]
        if not valid:
            return [r for r in resolved if isinstance(r, InvalidQuery)]
        features = self._fetch_stage([r.query.customer_id for r in valid], [r.now for r in valid])
        models = self.models  # read once: a hot swap never mixes versions within a call
        rows = [f.values if f is not None else {} for f in features]
        propensity, send_time, reasons = self._infer_stage(models, rows)
        propensities = propensity.tolist()
        # One policy call for the whole batch: customers sharing a zone and window share work.
        plans = plan_send_batch(
            send_time,
            [self._plan_query(r, f, p) for r, f, p in zip(valid, features, propensities, strict=True)],
            self.policy,
            models.channel,
        )
        answers = iter(zip(valid, features, propensities, plans, reasons, strict=True))
        results: list[ScoreResult | InvalidQuery] = []
        for item in resolved:
            if isinstance(item, InvalidQuery):
                results.append(item)
                continue
            query, found, p, plan, why = next(answers)
            if isinstance(plan, PolicyInputError):
                results.append(InvalidQuery(str(plan)))
            else:
                results.append(self._answer(query, found, p, plan, models, why))
        return results

    def _read(self, customer_ids: Sequence[str], nows: Sequence[datetime]) -> list[CustomerFeatures | None]:
        """Online reads, one per distinct ``now`` (TTL is judged as of the query's time; a batch
        normally shares one): live states first, snapshot rows for customers without one.
        None per customer when a store is down and cold start is allowed."""
        found: list[CustomerFeatures | None] = [None] * len(customer_ids)
        reader = self.reader
        try:
            for now, indexes in _by_value(nows).items():
                ids = [customer_ids[i] for i in indexes]
                live = self.live.read(ids, now, reader.feature_refs) if self.live is not None else {}
                rest = [i for i, cid in zip(indexes, ids, strict=True) if cid not in live]
                for i, cid in zip(indexes, ids, strict=True):
                    found[i] = live.get(cid)
                if rest:
                    read = reader.read([customer_ids[i] for i in rest], now)
                    for i, features in zip(rest, read, strict=True):
                        found[i] = features
        except FeatureStoreUnavailable as exc:
            self._unavailable(exc)
            return [None] * len(customer_ids)
        return found

    def _read_columns(
        self, customer_ids: Sequence[str], now_us: IntArray, kinds: FeatureKinds
    ) -> FeatureColumns:
        """:meth:`_read` as columns (ScoreBatch): live states finalised column-wise, without a
        dict per customer (LiveFeatures.read_columns); snapshot rows for customers without one."""
        reader, live = self.reader, self.live
        if live is None or not live.covers(reader.feature_refs):
            nows = [to_datetime(us) for us in now_us.tolist()]
            return FeatureColumns.from_features(kinds, self._read(customer_ids, nows))
        parts: list[tuple[Sequence[int], FeatureColumns]] = []
        try:
            for us, indexes in _by_value(now_us.tolist()).items():
                now = to_datetime(us)
                ids = [customer_ids[i] for i in indexes]
                rows, states = live.read_columns(ids, now)
                have, found, rest = [], [], []  # with a state (and its row), without one
                for i, cid in zip(indexes, ids, strict=True):
                    row = rows.get(cid)
                    if row is None:
                        rest.append(i)
                    else:
                        have.append(i)
                        found.append(row)
                if have:
                    parts.append((have, FeatureColumns.from_live(kinds, states, found, us)))
                if rest:
                    read = reader.read([customer_ids[i] for i in rest], now)
                    parts.append((rest, FeatureColumns.from_features(kinds, read)))
        except FeatureStoreUnavailable as exc:
            self._unavailable(exc)
            return FeatureColumns.from_features(kinds, [None] * len(customer_ids))
        return FeatureColumns.gather(kinds, len(customer_ids), parts)

    def _unavailable(self, exc: FeatureStoreUnavailable) -> None:
        """A store failed: StoreUnavailable if the settings ask to fail, else the caller
        answers cold start."""
        if self.settings.store_unavailable == "fail":
            raise StoreUnavailable(f"online feature store unavailable: {exc}") from exc

    # --- column-wise: ScoreBatch, score-audience ---------------------------------------------

    def feature_kinds(self, models: ModelSet | None = None) -> FeatureKinds:
        """How the reader's features are held as columns for ``models`` (default: the current
        ones): the models' array inputs as arrays, the time zone as text, numbers otherwise.
        Made once per model set and reader."""
        models = models or self.models
        refs = tuple(self.reader.feature_refs)
        cached = self._kinds
        if cached is None or cached[0] is not models or cached[1] != refs:
            arrays = {
                f.ref: f.size
                for model in (models.propensity, models.send_time)
                for f in model.manifest.features
                if f.size > 1
            }
            cached = self._kinds = (models, refs, FeatureKinds.of(refs, arrays, (TIME_ZONE_REF,)))
        return cached[2]

    def _infer_columns(
        self, models: ModelSet, features: FeatureColumns
    ) -> tuple[np.ndarray, np.ndarray, tuple[ObjectArray, np.ndarray]]:
        """Both models on the batch, and the propensity's reasons from the same input matrix.
        From PARALLEL_ROWS rows on, the send-time model runs on a second thread meanwhile
        (onnxruntime releases the GIL while it runs)."""
        n = len(features)
        send_x = model_matrix(models.send_time, features)
        beside = self._beside.submit(_predict, models.send_time, send_x) if n >= PARALLEL_ROWS else None
        x = model_matrix(models.propensity, features)
        propensity = _predict(models.propensity, x)[:, 1].astype(np.float64)
        reasons = (
            models.propensity.reasons.top(x)
            if models.propensity.reasons is not None
            else (np.full((n, 0), None, dtype=object), np.zeros((n, 0)))
        )
        hour_probs = beside.result() if beside is not None else _predict(models.send_time, send_x)
        return propensity, hour_probs, reasons

    def score_queries(self, queries: Queries, clock: datetime | None = None) -> Scores:
        """Score queries given as columns: one read of the valid customers' features (one per
        distinct ``now``), then :meth:`score_columns`."""
        resolved = self._resolve_columns(queries, to_us(clock or datetime.now(UTC), "clock"))
        valid = np.flatnonzero(no_error(resolved.error))
        models = self.models  # read once: a hot swap never mixes versions within a call
        kinds, n, rows = self.feature_kinds(models), len(resolved), valid.tolist()
        if not rows:
            return self.score_columns(resolved, FeatureColumns.from_features(kinds, [None] * n), models)
        ids = [resolved.customer_ids[i] for i in rows]
        columns = self._fetch_columns_stage(ids, resolved.now_us[valid], kinds)
        return self.score_columns(resolved, FeatureColumns.gather(kinds, n, [(rows, columns)]), models)

    def score_columns(
        self, queries: Queries, features: FeatureColumns, models: ModelSet | None = None
    ) -> Scores:
        """Score resolved queries (no UNSET time; see :meth:`resolve`) on their customers'
        features, row i of each: inference, feature status and the policy, all as arrays."""
        models = models or self.models
        propensity, hour_probs, (codes, values) = self._infer_columns_stage(models, features)
        now = queries.now_us
        status, age = self._statuses(features, now)
        hours_ago, cart, decide_own = (features.scalar(ref) for ref in INTEREST_REFS)
        if STATS_VIEW in features.stamps:
            # A snapshot row's age is as of the snapshot: the time since is added (a live state
            # is finalised at now: its stamp is now).
            stamp = features.stamps[STATS_VIEW]
            hours_ago = (
                hours_ago + np.where(stamp == MISSING_US, 0, np.maximum(now - stamp, 0)) / 1e6 / 3600.0
            )
        interest_hours, is_cart, decide = open_interest(hours_ago, cart, decide_own)
        sends = features.matrix(CHANNEL_SEND_REFS)
        inputs = PlanInputs(
            propensity=propensity,
            zone=features.strings[TIME_ZONE_REF],
            now_us=now,
            window_start_us=queries.window_start_us,
            window_end_us=queries.window_end_us,
            dormant_days=features.scalar(DORMANCY_REF),
            quiet=queries.quiet,
            interest_hours=interest_hours,
            interest_is_cart=is_cart,
            decide_hours=decide,
            channel_rates=features.matrix(CHANNEL_RATE_REFS),
            channel_sends=np.where(np.isnan(sends), 0.0, sends),
            channel=np.array([_CHANNEL_INDEX.get(c, -1) for c in queries.channel], dtype=np.int64),
        )
        plans = plan_columns(hour_probs, inputs, self.policy, models.channel, queries.error)
        return Scores(
            queries.customer_ids,
            plans.error,
            propensity,
            status,
            age,
            codes,
            values,
            plans,
            queries.channel,
            models,
        )

    def resolve(self, queries: Queries, clock: datetime) -> Queries:
        """``queries`` with the defaults in place of what the caller left out (now: ``clock``;
        window: [now, start + 1 day); quiet hours: the server's) and an id the server refuses
        as the query's error."""
        return self._resolve_columns(queries, to_us(clock, "clock"))

    def _resolve_columns(self, q: Queries, clock_us: int) -> Queries:
        now = np.where(q.now_us == UNSET, clock_us, q.now_us)
        start = np.where(q.window_start_us == UNSET, now, q.window_start_us)
        end = np.where(q.window_end_us == UNSET, start + _DEFAULT_WINDOW_US, q.window_end_us)
        quiet = np.where(q.quiet[:, :1] < 0, np.array(self._default_quiet or (-1, -1)), q.quiet)
        limit = self.settings.max_id_length
        # What could not be converted first (ScoreBatch has always answered that), then the id.
        errors = [
            error or id_problem("customer_id", cid, limit)
            for cid, error in zip(q.customer_ids, q.error.tolist(), strict=True)
        ]
        error = np.empty(len(errors), dtype=object)
        error[:] = errors
        return Queries(q.customer_ids, now, start, end, quiet, q.channel, error)

    def _statuses(
        self, features: FeatureColumns, now_us: IntArray
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float64]]:
        """Each customer's feature status (index in STATUSES) and age in seconds: the age of
        the newest of its views' rows; UNAVAILABLE when the store could not be read."""
        n = len(features)
        stamps = [features.stamps[view] for view in features.kinds.views]
        newest = np.max(stamps, axis=0) if stamps else np.full(n, MISSING_US)
        found = features.available & (newest != MISSING_US)
        age = np.where(found, np.maximum(now_us - np.where(found, newest, 0), 0), 0) / 1e6
        status = np.where(age > self._stale_after_s, 1, 0)
        status = np.where(found, status, np.where(features.available, 2, 3)).astype(np.int8)
        return status, age

    # --- per customer: Score --------------------------------------------------------------------

    def _resolve(self, query: ScoreQuery, clock: datetime) -> _Resolved | InvalidQuery:
        problem = id_problem("customer_id", query.customer_id, self.settings.max_id_length)
        if problem is not None:
            return InvalidQuery(problem)
        # Window and quiet-hour checks live in the policy (PolicyInputError → InvalidQuery).
        now = query.now or clock
        start = query.window_start or now
        end = query.window_end or start + DEFAULT_WINDOW
        quiet = query.quiet_hours if query.quiet_hours is not None else self._default_quiet
        return _Resolved(query, now, start, end, quiet)

    def _plan_query(self, r: _Resolved, features: CustomerFeatures | None, propensity: float) -> PlanQuery:
        """The policy's inputs for one customer: the query's window and the context features."""
        values = features.values if features is not None else {}
        zone = values.get(TIME_ZONE_REF)
        dormant = values.get(DORMANCY_REF)
        return PlanQuery(
            propensity=propensity,
            zone=zone if isinstance(zone, str) else None,
            now=r.now,
            window_start=r.window_start,
            window_end=r.window_end,
            days_since_last_engagement=float(dormant) if isinstance(dormant, float | int) else None,
            quiet_hours=r.quiet_hours,
            interest=self._interest(r, features),
            channel_rates=_numbers(values, CHANNEL_RATE_REFS, math.nan),
            channel_sends=_numbers(values, CHANNEL_SEND_REFS, 0.0),
            channel=None if r.query.channel == "UNSPECIFIED" else r.query.channel,
        )

    @staticmethod
    def _interest(r: _Resolved, features: CustomerFeatures | None) -> Interest | None:
        """The open interest, its age as of the query's ``now``: a snapshot row's age is as of
        the snapshot, so the time since is added (a live state is finalised at ``now``)."""
        if features is None:
            return None
        hours_ago, is_cart, decide = (features.values.get(ref) for ref in INTEREST_REFS)
        stamp = features.event_timestamps.get(STATS_VIEW)
        if isinstance(hours_ago, float | int) and stamp is not None:
            hours_ago = hours_ago + max((r.now - stamp).total_seconds(), 0.0) / 3600.0
        return interest_of(hours_ago, is_cart, decide)

    def _answer(
        self,
        r: _Resolved,
        features: CustomerFeatures | None,
        propensity: float,
        plan: SendPlan,
        models: ModelSet,
        reasons: Reasons,
    ) -> ScoreResult:
        status, age = self._status(features, r.now)
        return ScoreResult(
            customer_id=r.query.customer_id,
            purchase_propensity=propensity,
            horizon_days=models.horizon_days,
            plan=plan,
            models=models.versions,
            feature_status=status,
            feature_age_seconds=age,
            channel=r.query.channel,
            propensity_reasons=reasons,
        )

    def _status(self, features: CustomerFeatures | None, now: datetime) -> tuple[FeatureStatus, float]:
        if features is None:
            return FeatureStatus.UNAVAILABLE, 0.0
        stamps = [ts for ts in features.event_timestamps.values() if ts is not None]
        if not stamps:
            return FeatureStatus.MISSING, 0.0
        newest = max(stamps)
        age = max((now - newest).total_seconds(), 0.0)
        stale = age > self._stale_after_s
        return (FeatureStatus.STALE if stale else FeatureStatus.FRESH), age


def _by_value(values: Sequence[_T]) -> dict[_T, list[int]]:
    """The indexes of each distinct value, in order of first appearance."""
    indexes: dict[_T, list[int]] = {}
    for i, value in enumerate(values):
        indexes.setdefault(value, []).append(i)
    return indexes


def _numbers(values: dict[str, object], refs: Sequence[str], missing: float) -> tuple[float, float, float]:
    """Three features as floats (the channels'), ``missing`` for a null."""
    a, b, c = (float(v) if isinstance(v, float | int) else missing for v in (values.get(ref) for ref in refs))
    return a, b, c


_CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNEL_NAMES)}


# From this many rows on, a column-wise call runs its two models side by side: ScoreBatch(100)'s
# inference stage 1.50 -> 1.00 ms (loadtest/batch_stages.py, docs/benchmarks.md "Issue 14,
# 2026-12-04"); for a few rows the hand-over to the thread costs about what it saves.
PARALLEL_ROWS = 32

# Rows per ONNX run: onnxruntime's arena keeps the largest run's intermediates for good (the
# send-time model's for 50,000 rows took an audience job's RSS up by ~1.3 GB), and runs of
# this size cost no more per row than one large run.
INFER_ROWS = 8192


def _predict(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """The model's probabilities for the rows of ``x``, in runs of at most INFER_ROWS rows
    (none for no rows: onnxruntime's tree operators fail on an empty batch)."""
    if not len(x):
        return np.empty((0, model.manifest.output_width), dtype=np.float32)
    if len(x) <= INFER_ROWS:
        return model.predict(x)
    return np.concatenate([model.predict(x[i : i + INFER_ROWS]) for i in range(0, len(x), INFER_ROWS)])


def model_matrix(model: LoadedModel, features: FeatureColumns) -> np.ndarray:
    """The model's float32 input matrix in manifest order, filled a column (or an array
    feature's block of columns) at a time; a missing value stays NaN."""
    x = np.empty((len(features), model.width), dtype=np.float32)
    refs, columns = model.scalars
    x[:, columns] = features.matrix(refs)
    for ref, start, width in model.arrays:
        x[:, start : start + width] = features.arrays[ref]
    return x
