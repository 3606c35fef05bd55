"""Model hot swap: pick up a new model version without a restart.

Operators (or CI) write a new version directory ``MODELS/<name>/<version>/`` — write it
elsewhere and ``mv`` it into place so it appears whole. The server notices it by polling the
models directory every ``--model-poll-seconds`` (0 = off), or at once on SIGHUP. A candidate
is validated exactly like a start-up model (manifest, ONNX sha256, a smoke inference, every
manifest feature served by the Feast registry) and only then swapped in, as one new
``ModelSet`` assignment: a call reads the model set once, so calls in flight finish on the
models they started with and every response names the versions that produced it. A candidate
that fails is logged, counted, remembered (not retried until its directory changes name) and
the previous models keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from nudge.contract.manifest import ManifestError, latest_version_dir
from service.models import (
    PROPENSITY,
    SEND_TIME,
    ModelSet,
    check_served,
    load_channel_model,
    load_model,
    validate_pair,
)
from service.scorer import CONTEXT_REFS, Scorer

if TYPE_CHECKING:
    from feast import FeatureStore

    from service.metrics import Metrics

log = logging.getLogger("nudge.reloader")


@dataclass
class ReloadStats:
    """What the reloader did, for logs and metrics."""

    rejected: dict[str, str] = field(default_factory=dict)  # "name/version" -> reason


class ModelReloader:
    """Checks the models directory and swaps a validated new ModelSet into the scorer."""

    def __init__(self, scorer: Scorer, store: FeatureStore, metrics: Metrics | None = None) -> None:
        self.scorer = scorer
        self.store = store
        self.metrics = metrics
        self.stats = ReloadStats()

    def check(self) -> bool:
        """Load any newer version; True if a new model set is now serving."""
        current = self.scorer.models
        candidate = current
        for name in (PROPENSITY, SEND_TIME):
            try:
                newest = latest_version_dir(self.scorer.settings.models, name)
            except ManifestError:
                continue  # a directory emptied by hand: keep serving what is loaded
            key = f"{name}/{newest.name}"
            if newest.name == current.versions[name] or key in self.stats.rejected:
                continue
            try:
                model = load_model(newest)
                pair = (
                    replace(candidate, propensity=model)
                    if name == PROPENSITY
                    else replace(candidate, send_time=model)
                )
                validate_pair(pair)
                check_served(self.store, pair, CONTEXT_REFS)
            except ManifestError as exc:
                self.stats.rejected[key] = str(exc)
                log.error("rejected model %s: %s; still serving %s", key, exc, current.versions)
                self._count(name, "rejected")
                continue
            candidate = pair
        if candidate is current:
            return False
        try:  # trained with the new models: read again, kept as it was when it does not load
            candidate = replace(candidate, channel=load_channel_model(self.scorer.settings.models))
        except ManifestError as exc:
            log.error("channel model not reloaded: %s", exc)
        self._swap(candidate)
        for name, version in candidate.versions.items():
            if version != current.versions[name]:
                self._count(name, "swapped")
        return True

    def _count(self, model: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.model_reloads.labels(model, outcome).inc()

    def _swap(self, models: ModelSet) -> None:
        from service.online.readers import reader_for

        current = self.scorer.reader.feature_refs
        reader = None
        if not set(models.feature_refs) <= set(current):
            refs = list(dict.fromkeys([*models.feature_refs, *current]))
            reader = reader_for(self.store, refs, self.scorer.settings)
        self.scorer.swap(models, reader)
        if self.metrics is not None:
            self.metrics.set_models(models.versions)
        log.info("now serving models %s", models.versions)

    async def poll(self, every_s: float, wake: asyncio.Event) -> None:
        """Check every ``every_s`` seconds (if > 0) and whenever ``wake`` is set (SIGHUP)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=every_s if every_s > 0 else None)
            wake.clear()
            try:
                self.check()
            except Exception:  # a reload must never take the server down
                log.exception("model reload check failed; still serving %s", self.scorer.models.versions)
