"""Names both ends of the API use beyond the proto: the services, their methods, the auth header."""

from __future__ import annotations

from nudge.v1 import ingest_pb2, scoring_pb2

_SCORING = scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"]
_INGEST = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"]
SCORING_SERVICE = _SCORING.full_name  # nudge.v1.ScoringService
SCORING_METHODS = tuple(f"/{SCORING_SERVICE}/{m.name}" for m in _SCORING.methods)
INGEST_SERVICE = _INGEST.full_name  # nudge.v1.IngestService
INGEST_METHODS = tuple(f"/{INGEST_SERVICE}/{m.name}" for m in _INGEST.methods)
# Every method a bearer token may be scoped to, by its short name (``Score``, ``Ingest``).
METHODS_BY_NAME = {path.rsplit("/", 1)[1]: path for path in (*SCORING_METHODS, *INGEST_METHODS)}
AUTHORIZATION = "authorization"  # metadata key of the bearer token
TOKEN_ENV = "NUDGE_TOKEN"  # where clients take the token from when --token is not given
