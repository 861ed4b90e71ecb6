"""val.py on a tiny generated shapes set: our .pt checkpoints (rebuilt, never unpickled) and an exported ONNX file.

The model is a yolov5n that a one-epoch train.py run wrote (so the checkpoint is the real format); the checks
are that the metrics, per-class table, COCO JSON and txt labels come out, that the ONNX export of the same
model gives the same mAP, and that bad input is a clear error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

import train  # noqa: E402
import val  # noqa: E402

NAMES = ["circle", "square", "triangle", "star", "cross", "hexagon"]
KEYS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 16 + 8 image set (96 px) and best.pt of a one-epoch yolov5n run on it."""
    from utils.shapes import make_shapes_dataset

    root = make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_train=16, n_val=8, imgsz=96, seed=2)
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": dict(enumerate(NAMES))}))
    trainer = train.run(cfg="cfg/yolov5n.yaml", data=str(data), epochs=1, imgsz=64, batch_size=8, workers=0, noplots=True,
                        noautoanchor=True, project=str(tmp_path_factory.mktemp("runs")))
    return data, trainer.best


def test_val_pt_metrics_and_outputs(setup, tmp_path):
    data, best = setup
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("ultralytics").addHandler(handler)
    try:
        m = val.run(weights=str(best), data=str(data), imgsz=64, batch_size=4, workers=0, verbose=True, save_json=True,
                    save_txt=True, save_conf=True, project=str(tmp_path))
    finally:
        logging.getLogger("ultralytics").removeHandler(handler)
    assert all(0.0 <= m[k] <= 1.0 for k in KEYS)
    assert m["speed"]["inference"] > 0
    out = Path(m["save_dir"])
    assert out == tmp_path / "exp"
    preds = json.loads((out / "predictions.json").read_text())
    assert preds and {"image_id", "category_id", "bbox", "score"} <= set(preds[0])  # COCO results format
    rows = [r.split() for f in (out / "labels").glob("*.txt") for r in f.read_text().splitlines()]
    assert rows and all(len(r) == 6 for r in rows)  # class x y w h conf
    first = [line.split()[:1] for line in lines]
    assert ["all"] in first and ["Speed:"] in first  # P R mAP50 mAP50-95 of all classes, and the speed
    assert ["hexagon"] in first or ["circle"] in first  # --verbose: per-class rows


def test_val_speed_and_second_run_folder(setup, tmp_path):
    data, best = setup
    (tmp_path / "exp").mkdir()
    m = val.run(weights=str(best), data=str(data), imgsz=64, batch_size=4, workers=0, task="speed", project=str(tmp_path))
    assert Path(m["save_dir"]).name == "exp2" and m["speed"]["inference"] > 0


def test_val_onnx_matches_pt(setup, tmp_path):
    pytest.importorskip("onnxruntime")
    import export

    data, best = setup
    onnx = export.run(weights=str(best), include=("onnx",), imgsz=(64,))["onnx"]["file"]
    m_pt = val.run(weights=str(best), data=str(data), imgsz=64, batch_size=1, workers=0, project=str(tmp_path))
    m_onnx = val.run(weights=str(onnx), data=str(data), imgsz=64, batch_size=1, workers=0, project=str(tmp_path))
    for k in KEYS:
        assert m_onnx[k] == pytest.approx(m_pt[k], abs=0.02), k


def test_val_bad_input(setup, tmp_path):
    data, best = setup
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        val.run(weights=str(tmp_path / "missing.pt"), data=str(data), project=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        val.run(weights=str(best), data=str(tmp_path / "nope.yaml"), project=str(tmp_path))
    with pytest.raises(ValueError, match="no 'test' split"):
        val.run(weights=str(best), data=str(data), task="test", project=str(tmp_path))
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="foreign.pt"):
        val.run(weights=str(foreign), data=str(data), project=str(tmp_path))
    with pytest.raises(ValueError, match="^--device 99: "):
        val.run(weights=str(best), data=str(data), device="99", project=str(tmp_path))


def test_val_augment_and_half(setup, tmp_path, monkeypatch):
    """--augment runs the model's test-time augmentation in the validator (more candidates per image); --half on a
    CPU says it needs a GPU and validates in float32 (the same metrics)."""
    from models.yolo import Model

    data, best = setup
    calls = []
    augment = Model._predict_augment
    monkeypatch.setattr(Model, "_predict_augment", lambda self, x: calls.append(x.shape) or augment(self, x))
    args = dict(weights=str(best), data=str(data), imgsz=64, batch_size=4, workers=0)
    tta = val.run(augment=True, project=str(tmp_path / "tta"), **args)
    assert calls and all(0.0 <= tta[k] <= 1.0 for k in KEYS)
    plain = val.run(project=str(tmp_path / "plain"), **args)
    half = val.run(half=True, device="cpu", project=str(tmp_path / "half"), **args)
    assert [half[k] for k in KEYS] == [plain[k] for k in KEYS]
