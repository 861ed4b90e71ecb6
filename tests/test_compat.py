"""YAMLs from other projects build the networks their authors meant (issue 13).

- ultralytics: every detection YAML shipped in the pinned package (v3, v5, v6, v8, 11, 12, 26) gives the parameter
  count and output shape of ultralytics' own DetectionModel, built before and after it in one process.
- YOLOv5: its yolov3 / yolov3-spp YAMLs (anchors, YOLOv5's Bottleneck) give YOLOv5's counts.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest
import torch
import ultralytics
import yaml
from ultralytics.nn.tasks import DetectionModel

from models.yolo import Model, ModelConfigError

PACKAGE_MODELS = Path(ultralytics.__file__).parent / "cfg" / "models"
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]

# Every detection YAML of the package in scope, at scale n; and at l where a block changes with the scale
# (C3k2's c3k at m/l/x, A2C2f's residual blocks at l/x).
CASES = [
    "v3/yolov3.yaml", "v3/yolov3-spp.yaml", "v3/yolov3-tiny.yaml", "v5/yolov5n.yaml", "v5/yolov5n-p6.yaml",
    "v6/yolov6n.yaml", "v8/yolov8n.yaml", "11/yolo11n.yaml", "11/yolo11l.yaml", "12/yolo12n.yaml", "12/yolo12l.yaml",
    "26/yolo26n.yaml", "26/yolo26l.yaml",
]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def signature(model) -> tuple:
    """Parameter count and eval output shape on a 64x64 image."""
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 64, 64))
    y = y[0] if isinstance(y, (list, tuple)) else y
    return n_params(model), tuple(y.shape)


@pytest.mark.parametrize("case", CASES)
def test_ultralytics_yamls_build_as_ultralytics_builds_them(case):
    """Ours, then ultralytics', then ours again: all three the same (the build does not depend on the order)."""
    path = PACKAGE_MODELS / case  # a scale letter in the name, as ultralytics reads it (yolo11l -> yolo11.yaml, l)
    assert not path.is_file() or case.startswith("v3/")
    first = signature(Model(path, verbose=False))
    theirs = signature(DetectionModel(str(path), verbose=False))
    again = signature(Model(path, verbose=False))
    assert first == theirs == again, (first, theirs, again)


def test_ultralytics_activation_key_is_applied_to_this_model_only():
    from ultralytics.nn.modules import Conv

    model = Model(PACKAGE_MODELS / "v6/yolov6n.yaml", verbose=False)
    assert isinstance(model.model[0].act, torch.nn.ReLU) and isinstance(Conv.default_act, torch.nn.SiLU)


def test_unknown_yaml_key_is_an_error_naming_it(tmp_path):
    d = yaml.safe_load((PACKAGE_MODELS / "v8/yolov8.yaml").read_text()) | {"depth_multipel": 0.33}
    with pytest.raises(ModelConfigError, match="unknown key 'depth_multipel' \\(did you mean 'depth_multiple'"):
        Model(d, verbose=False)


@pytest.mark.parametrize("name,expected", [("yolov3.yaml", 61_949_149), ("yolov3-spp.yaml", 62_998_749)])
def test_yolov5_yolov3_yamls_have_yolov5_counts(name, expected):
    """YOLOv5's yolov3 YAMLs are ultralytics' rows with anchors (written here from the package's file)."""
    d = yaml.safe_load((PACKAGE_MODELS / "v3" / name).read_text())
    d["anchors"] = deepcopy(ANCHORS)
    d["head"][-1][3] = ["nc", "anchors"]
    assert n_params(Model(d, verbose=False)) == expected


def test_yolov5_bottleneck_rows_take_yolov5_arguments():
    """[c2, shortcut, g, e] as YOLOv5 reads it: 1x1 to c2*e, then 3x3; BottleneckCSP's inner blocks the same."""
    d = {"nc": 2, "anchors": [[10, 13, 16, 30, 33, 23]],
         "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Bottleneck", [64, True, 1, 0.25]], [-1, 2, "BottleneckCSP", [64]]],
         "head": [[[-1], 1, "Detect", ["nc", "anchors"]]]}
    model = Model(d, verbose=False)
    bottleneck, csp = model.model[1], model.model[2]
    assert bottleneck.cv1.conv.kernel_size == (1, 1) and bottleneck.cv1.conv.out_channels == 16 and bottleneck.add
    assert bottleneck.cv2.conv.kernel_size == (3, 3)
    assert [m.cv1.conv.kernel_size for m in csp.m] == [(1, 1), (1, 1)]
    # the package's own (anchor-free) YAMLs keep ultralytics' Bottleneck: 3x3 first
    assert Model(PACKAGE_MODELS / "v3/yolov3.yaml", verbose=False).model[2].cv1.conv.kernel_size == (3, 3)
