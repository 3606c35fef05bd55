"""The scoring core: features → both ONNX models → send-time policy. Knows nothing of gRPC.

One call scores a batch: it validates each query, makes ONE online read for the union of both
models' features for every valid customer, assembles float32 rows by feature name in each
manifest's order, runs each ONNX session once for the whole batch, and applies the policy per
customer. A customer's invalid query becomes that customer's error; the others are scored.
When the online store is unreachable, the answer is the cold-start (population) one with
status UNAVAILABLE, or ``StoreUnavailable`` is raised if the settings ask to fail fast.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import numpy as np

from nudge.contract.channel_model import RATE_FEATURES, SEND_FEATURES
from nudge.contract.features import STATS_VIEW
from service.config import Settings, id_problem
from service.models import ModelSet
from service.online.base import CustomerFeatures, FeatureStoreUnavailable, OnlineFeatureReader
from service.online.live import LiveFeatures
from service.policy import PlanQuery, PolicyConfig, PolicyInputError, SendPlan, plan_send_batch
from service.reminders import Interest, interest_of

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


_T = TypeVar("_T")
Reasons = Sequence[tuple[str, float]]


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
        infer: Callable[..., Any] = self._infer
        for probe in probes:
            fetch, infer = probe.feature_fetch(fetch), probe.inference(infer)
        self._fetch_stage, self._infer_stage = fetch, infer

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
        features = self._fetch_stage(valid)
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

    def _read(self, queries: list[_Resolved]) -> list[CustomerFeatures | None]:
        """Online reads, one per distinct ``now`` (TTL is judged as of the query's time; a batch
        normally shares one): live states first, snapshot rows for customers without one.
        None per customer when a store is down and cold start is allowed."""
        by_now: dict[datetime, list[int]] = {}
        for i, q in enumerate(queries):
            by_now.setdefault(q.now, []).append(i)
        found: list[CustomerFeatures | None] = [None] * len(queries)
        reader = self.reader
        try:
            for now, indexes in by_now.items():
                ids = [queries[i].query.customer_id for i in indexes]
                live = self.live.read(ids, now, reader.feature_refs) if self.live is not None else {}
                rest = [i for i, cid in zip(indexes, ids, strict=True) if cid not in live]
                for i, cid in zip(indexes, ids, strict=True):
                    found[i] = live.get(cid)
                if rest:
                    read = reader.read([queries[i].query.customer_id for i in rest], now)
                    for i, features in zip(rest, read, strict=True):
                        found[i] = features
        except FeatureStoreUnavailable as exc:
            if self.settings.store_unavailable == "fail":
                raise StoreUnavailable(f"online feature store unavailable: {exc}") from exc
            return [None] * len(queries)
        return found

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


def _numbers(values: dict[str, object], refs: Sequence[str], missing: float) -> tuple[float, float, float]:
    """Three features as floats (the channels'), ``missing`` for a null."""
    a, b, c = (float(v) if isinstance(v, float | int) else missing for v in (values.get(ref) for ref in refs))
    return a, b, c
