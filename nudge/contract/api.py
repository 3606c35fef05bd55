"""Names both ends of the API use beyond the proto: the service, its methods, the auth header."""

from __future__ import annotations

from nudge.v1 import scoring_pb2 as pb

SCORING_SERVICE = pb.DESCRIPTOR.services_by_name["ScoringService"].full_name  # nudge.v1.ScoringService
SCORING_METHODS = tuple(
    f"/{SCORING_SERVICE}/{m.name}" for m in pb.DESCRIPTOR.services_by_name["ScoringService"].methods
)
AUTHORIZATION = "authorization"  # metadata key of the bearer token
TOKEN_ENV = "NUDGE_TOKEN"  # where clients take the token from when --token is not given
