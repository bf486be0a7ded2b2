"""Shared fixtures: an in-memory system per test (the testing preset), closed afterwards."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Run from a checkout without installing: the package lives next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import herald


@pytest.fixture
def system() -> Iterator[herald.System]:
    with herald.System.testing() as running:
        yield running
