"""Shared fixtures for the service tests (the harness itself is in tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from harness import Service, open_service, write_corpus

if TYPE_CHECKING:
    from s3server import S3Server


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A fresh migrated database and the app on it; workers started through it are killed afterwards."""
    svc, close = open_service(tmp_path)
    yield svc
    close()


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """The default tiny corpus: ~3,900 train, ~500 valid, ~250 test tokens, 13 types."""
    return write_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def s3_server() -> S3Server:
    """The test process' SeaweedFS S3 server (tests/s3server.py), started on first use, stopped at exit."""
    import s3server  # boto3 and the server only for tests that use S3

    return s3server.server()
