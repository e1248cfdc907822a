"""Route: `GET /metrics`, the service's Prometheus metrics in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import ObservabilityDep
from app.observability.prometheus import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
def prometheus_metrics(observability: ObservabilityDep) -> Response:
    """HTTP traffic, jobs by status, queue, workers, training speed, tokens and the model cache, for Prometheus."""
    return Response(observability.exposition(), media_type=CONTENT_TYPE)
