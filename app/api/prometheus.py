"""Route: `GET /metrics`, the service's Prometheus metrics in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.auth import AUTH_RESPONSES, AdminKey
from app.api.deps import ObservabilityDep
from app.observability.prometheus import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}, **AUTH_RESPONSES})
def prometheus_metrics(principal: AdminKey, observability: ObservabilityDep) -> Response:
    """HTTP traffic, jobs and scorings by status, both queues, ended jobs, workers, training speed, tokens,
    the model cache and the build, for Prometheus.

    It names every job and worker, so with authentication on it needs an admin key (Prometheus sends
    one with `authorization: {credentials_file: ...}` in its scrape config)."""
    return Response(observability.exposition(), media_type=CONTENT_TYPE)
