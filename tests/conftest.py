"""Shared test setup: the project root on sys.path, offline mode, and the official fixtures."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def reference():
    """The official HorNet reference tensors (../shared/fixtures/hornet_reference.pt)."""
    path = FIXTURES / "hornet_reference.pt"
    if not path.is_file():
        pytest.skip(f"official fixtures not found at {path} (../shared is not beside the project)")
    import torch

    return torch.load(path, weights_only=True)
