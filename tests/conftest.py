"""Shared fixtures for the service tests (the harness itself is in tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Service, open_service, write_corpus


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
