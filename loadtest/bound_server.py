"""The fastest Score and ScoreBatch a nudge server could answer with these models: a bound.

  .venv/bin/python loadtest/bound_server.py --repo REPO --models MODELS --port P \
      --ids-from data/customers.parquet [--feature-store-yaml FILE]

then, as against ``nudge serve``:

  nudge bench --target 127.0.0.1:P --ids-from data/customers.parquet --duration 6 --rounds 4
  nudge bench --target 127.0.0.1:P --call ScoreBatch --batch-size 100 --duration 6 --no-baseline

It serves nudge.v1.ScoringService and grpc.health.v1 on one grpc.aio server with the
registration and per-call wrapper of ``nudge serve`` under default settings (service/rpc.py,
``add_health_service``), but a call does only what no implementation can skip: it runs the two
ONNX models and the propensity's reasons on input rows built at start-up (the first
``--batch-size`` customers of ``--ids-from``, read and finalised as the server would) and
returns, serialised per call, the real answer the scorer gave those customers at start-up.
No feature read, no policy, no response building per call.

What it measures: the Score ÷ Check ratio and the ScoreBatch p50 that faster Python could at
best approach on this machine with these models. A floor below these is out of reach by
making nudge's own code faster; it needs smaller models, or a faster machine for the
absolute ones.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
from grpc_health.v1.health import HealthServicer

from nudge.v1 import scoring_pb2 as pb
from service import config
from service.grpc_api import ScoringServicer, add_scoring_service, to_batch_queries, to_batch_response
from service.online.live import LiveFeatures
from service.rpc import Observation
from service.scorer import Scorer
from service.server import add_health_service, build_ingestor, build_scorer


class BoundServicer(ScoringServicer):
    """Answers with prepared responses after running the models on prepared rows."""

    def __init__(self, scorer: Scorer, ids: list[str]) -> None:
        super().__init__(scorer)
        models = scorer.models
        now = datetime.now(UTC)
        found = scorer._read(ids, [now] * len(ids))
        rows = [f.values if f is not None else {} for f in found]
        self._propensity_x = models.propensity.rows(rows)
        self._send_time_x = models.send_time.rows(rows)
        requests = [pb.ScoreRequest(customer_id=cid, now=now) for cid in ids]
        self._batch = to_batch_response(requests, scorer.score_queries(to_batch_queries(requests)))
        self._answers = [result.response for result in self._batch.results]
        self._next = itertools.cycle(range(len(ids)))

    def _infer(self, rows: slice) -> None:
        assert self.scorer is not None
        models = self.scorer.models
        x = self._propensity_x[rows]
        models.propensity.predict(x)
        if models.propensity.reasons is not None:
            models.propensity.reasons.top(x)
        models.send_time.predict(self._send_time_x[rows])

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        i = next(self._next)
        self._infer(slice(i, i + 1))
        return self._answers[i]

    async def ScoreBatch(
        self, request: pb.ScoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreBatchResponse:
        self._infer(slice(None))
        return self._batch


async def serve(settings: config.Settings, ids: list[str]) -> None:
    scorer, store = build_scorer(settings)
    scorer.live = LiveFeatures(build_ingestor(settings, store).store)
    server = grpc.aio.server()
    observed = Observation()
    add_health_service(server, HealthServicer(), observed)
    add_scoring_service(BoundServicer(scorer, ids), server, observed)
    server.add_insecure_port(settings.address)
    await server.start()
    print(f"bound server on {settings.address}: {len(ids)} prepared customers", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--feature-store-yaml", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--ids-from", type=Path, required=True, help="Parquet file with a customer_id column."
    )
    parser.add_argument("--batch-size", type=int, default=100, help="Customers prepared (default 100).")
    args = parser.parse_args()
    settings = config.Settings(
        repo=args.repo,
        models=args.models,
        feature_store_yaml=args.feature_store_yaml,
        port=args.port,
        plaintext=True,
    )
    ids = pd.read_parquet(args.ids_from, columns=["customer_id"])["customer_id"].astype(str)
    asyncio.run(serve(settings, np.asarray(ids)[: args.batch_size].tolist()))


if __name__ == "__main__":
    main()
