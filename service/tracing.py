"""OpenTelemetry tracing (``--tracing true``; off by default, and then this module is not used).

Spans: one per RPC from the standard grpc instrumentation (opentelemetry-instrumentation-grpc's
aio server interceptor; it joins the caller's trace from ``traceparent`` metadata), with two
children from the scoring core: ``nudge.feature_fetch`` (the online-store read) and
``nudge.inference`` (input rows and both ONNX models). Health checks and reflection are not
traced: probes would drown the traces that matter.

Export: ``--tracing-exporter otlp`` (default) sends batches over OTLP/gRPC, configured by the
standard environment (``OTEL_EXPORTER_OTLP_ENDPOINT``, default localhost:4317, and the other
``OTEL_EXPORTER_OTLP_*`` variables); ``console`` prints each span as JSON on stdout as it ends,
for debugging. Sampling follows ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` (default:
every trace, or as the caller's trace was sampled); the service name is ``nudge`` unless
``OTEL_SERVICE_NAME`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from service.config import Settings

T = TypeVar("T")
FETCH_SPAN = "nudge.feature_fetch"
INFERENCE_SPAN = "nudge.inference"


class Tracing:
    """The tracer provider, the RPC interceptor and the scoring-stage probe of one process."""

    def __init__(self, settings: Settings) -> None:
        resource = Resource.create({SERVICE_NAME: "nudge"})  # OTEL_SERVICE_NAME overrides
        self.provider = TracerProvider(resource=resource)
        if settings.tracing_exporter == "console":
            self.provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(self.provider)
        self.tracer = self.provider.get_tracer("nudge")

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        untraced = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(
            tracer_provider=self.provider, filter_=filters.negate(untraced)
        )
        return interceptor

    def feature_fetch(self, read: Callable[..., T]) -> Callable[..., T]:
        """Core hook (Scorer.instrument): a span around every online read."""
        start = self.tracer.start_as_current_span

        def traced_read(queries: Any, *rest: Any) -> T:
            with start(FETCH_SPAN, attributes={"nudge.customers": len(queries)}):
                return read(queries, *rest)

        return traced_read

    def inference(self, infer: Callable[..., T]) -> Callable[..., T]:
        """Core hook (Scorer.instrument): a span around inference, naming the model versions."""
        start = self.tracer.start_as_current_span

        def traced_infer(models: Any, rows: Any, *rest: Any) -> T:
            attributes: dict[str, Any] = {"nudge.customers": len(rows)}
            for name, version in models.versions.items():
                attributes[f"nudge.model.{name}"] = version
            with start(INFERENCE_SPAN, attributes=attributes):
                return infer(models, rows, *rest)

        return traced_infer

    def shutdown(self) -> None:
        """Flush spans still queued for export."""
        self.provider.shutdown()
