"""Shared test setup: the project root on sys.path, offline mode, and the official fixtures (loaded here only).

Tests that need a fixture file skip with the reason when `../shared` is not beside the project; every other test runs.
"""

import functools
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


def shapes_data_yaml(folder, n_train: int, n_val: int, imgsz: int, seed: int, val: str = "images/val"):
    """A generated shapes set in `folder` and the path of its data YAML (`val` may point at the train images)."""
    import yaml

    from utils.shapes import CLASSES, make_shapes_dataset

    root = make_shapes_dataset(folder, n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed)
    f = root / "data.yaml"
    f.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": val, "names": dict(enumerate(CLASSES))}))
    return f


def fixture_file(name: str):
    """The path of an official fixture file; skips the calling test when it is not there."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"official fixture {path} not found (../shared is not beside the project)")
    return path


@functools.cache
def reference_cases() -> list:
    """The layer cases of hornet_reference.pt for parametrizing at collection time; [] without the fixtures."""
    path = FIXTURES / "hornet_reference.pt"
    if not path.is_file():
        return []
    import torch

    return torch.load(path, weights_only=True)["cases"]


def fixture_cases():
    """pytest.param per reference case, or one skipped param naming the missing file."""
    cases = reference_cases()
    if not cases:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no reference fixtures at {FIXTURES} (../shared is not beside the project)"))]
    return [pytest.param(c, id=c["name"]) for c in cases]


@pytest.fixture(scope="session")
def reference():
    """The official HorNet reference tensors (../shared/fixtures/hornet_reference.pt)."""
    import torch

    return torch.load(fixture_file("hornet_reference.pt"), weights_only=True)


@pytest.fixture
def said():
    """What the ultralytics logger says during a test (it does not propagate to pytest's caplog), line by line."""
    import logging

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("ultralytics")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def pytest_terminal_summary(terminalreporter):
    """Without the official fixtures the layers were not compared with the paper's code: say so last, where it is seen."""
    if not (FIXTURES / "hornet_reference.pt").is_file():
        terminalreporter.write_sep("!", "THE PAPER WAS NOT CHECKED", red=True, bold=True)
        terminalreporter.write_line(f"No official reference tensors at {FIXTURES}: the tests that compare gnConv, HorBlock, the Global Filter "
                                    "and the official checkpoints with the paper's code were skipped. Put ../shared beside the project "
                                    "and run again.", red=True)
