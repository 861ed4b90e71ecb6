"""YAMLs from other projects build the networks their authors meant.

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


# --- YOLOAir's HorNet-family rows ------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def yolov5s_rows() -> dict:
    """YOLOv5s (cfg/yolov5s.yaml: YOLOv5's own rows and 7,235,389 parameters) as a dict to edit."""
    return yaml.safe_load((ROOT / "cfg" / "yolov5s.yaml").read_text())


def test_yoloair_c3hb_row_builds_yoloair_network():
    """YOLOAir's yolov5s_C3HB.yaml: the last backbone C3 is a bare C3HB row; inner HorBlocks of order 5, s 1.0."""
    d = yolov5s_rows()
    assert d["backbone"][8][2:] == ["C3", [1024]]
    d["backbone"][8][2] = "C3HB"
    model = Model(d, verbose=False)
    assert n_params(model) == 7_372_285  # YOLOAir's count
    block = model.model[8].m[0]
    assert block.gnconv.order == 5 and block.gnconv.scale == 1.0


def test_yoloair_gnconv_row_keeps_its_input_width():
    """YOLOAir's yolov5_gnconv.yaml: `[-1, 3, gnconv, [256]]` in place of the head's first lateral Conv."""
    d = yolov5s_rows()
    assert d["head"][4][2:] == ["Conv", [256, 1, 1]]
    d["head"][4] = [-1, 3, "gnconv", [256]]
    model = Model(d, verbose=False)
    assert n_params(model) == 7_517_693  # YOLOAir's count
    layer = model.model[14]  # number 3 x depth_multiple 0.33: one layer
    assert layer.order == 5 and layer.scale == 1.0 and layer.proj_in.in_channels == layer.proj_out.out_channels == 256


def test_official_hornet_t_weights_load_into_a_yoloair_hornet_tiny_yaml(tmp_path):
    """Four YOLOAir `HorNet` rows at width_multiple 0.5 are HorNet-T's official widths: official weights load whole."""
    from models.hornet_weights import load_hornet_weights, to_official_state_dict

    depths = [2, 3, 18, 2]
    d = {"nc": 80, "depth_multiple": 0.33, "width_multiple": 0.50, "anchors": deepcopy(ANCHORS),
         "backbone": [[-1, 1, "HorNet", [64 * 2**k, k, 3, depths, 64]] for k in range(4)],
         "head": [[-1, 1, "Conv", [512, 1, 1]], [[1, 2, 4], 1, "Detect", ["nc", "anchors"]]]}
    model = Model(d, verbose=False)
    assert [model.model[k].blocks[0].gnconv.proj_out.out_channels for k in range(4)] == [64, 128, 256, 512]
    assert n_params(model.model[:4]) == 21_895_488  # the official HorNet-T backbone
    generator = torch.Generator().manual_seed(0)
    official = {k: torch.randn(v.shape, generator=generator) for k, v in to_official_state_dict(model).items()}
    torch.save({"model": official}, tmp_path / "hornet_tiny_7x7.pth")
    fresh = Model(d, verbose=False)
    report = load_hornet_weights(fresh, tmp_path / "hornet_tiny_7x7.pth", verbose=False)
    assert report["loaded"] == len(official) and not report["mismatched"] and not report["not_covered"]
    assert torch.equal(fresh.model[2].blocks[17].gnconv.pws[2].weight, official["stages.2.17.gnconv.pws.2.weight"])


def test_hornet_row_width_must_be_the_stage_width():
    d = {"nc": 3, "backbone": [[-1, 1, "HorNet", [96, 0, 3, [2, 3, 18, 2], 64]]], "head": [[[0], 1, "Detect", ["nc"]]]}
    with pytest.raises(ModelConfigError, match="stage 0 of a HorNet with dim_base 64 is 64 wide, the row says 96"):
        Model(d, verbose=False)


def test_bare_model_names_are_found_in_cfg_and_in_the_package(tmp_path, monkeypatch):
    """--cfg yolo11n.yaml is the package's yolo11.yaml at scale n; --cfg yolov5s-hornet is cfg/'s."""
    import train
    from models.yolo import find_model_yaml

    monkeypatch.chdir(tmp_path)
    assert find_model_yaml("yolov5s-hornet") == ROOT / "cfg" / "yolov5s-hornet.yaml"
    found = find_model_yaml("yolo11n.yaml")
    assert found == PACKAGE_MODELS / "11" / "yolo11n.yaml" and not found.is_file()  # the scale letter, read on load
    assert find_model_yaml("yolo99n.yaml") is None
    assert train.model_of(train.parse_opt(["--cfg", "yolo11n.yaml"])) == (str(found), "yolov5")
    with pytest.raises(FileNotFoundError, match="--cfg: model YAML not found: yolo99n.yaml"):
        train.model_of(train.parse_opt(["--cfg", "yolo99n.yaml"]))
