"""The YAML parser, the model zoo and the heads."""

import re
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import yaml
from ultralytics.cfg import get_cfg
from ultralytics.utils.torch_utils import get_flops

from models.heads import AnchorDetect
from models.hornet import HorBlock
from models.yolo import Model, ModelConfigError, load_model, load_model_yaml, parse_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# The original YOLOv5 v6+ architecture, written out here so that the check does not depend on cfg/.
YOLOV5 = """
nc: 80
anchors: [[10,13, 16,30, 33,23], [30,61, 62,45, 59,119], [116,90, 156,198, 373,326]]
backbone:
  [[-1, 1, Conv, [64, 6, 2, 2]], [-1, 1, Conv, [128, 3, 2]], [-1, 3, C3, [128]],
   [-1, 1, Conv, [256, 3, 2]], [-1, 6, C3, [256]], [-1, 1, Conv, [512, 3, 2]], [-1, 9, C3, [512]],
   [-1, 1, Conv, [1024, 3, 2]], [-1, 3, C3, [1024]], [-1, 1, SPPF, [1024, 5]]]
head:
  [[-1, 1, Conv, [512, 1, 1]], [-1, 1, nn.Upsample, [None, 2, 'nearest']], [[-1, 6], 1, Concat, [1]],
   [-1, 3, C3, [512, False]], [-1, 1, Conv, [256, 1, 1]], [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 4], 1, Concat, [1]], [-1, 3, C3, [256, False]], [-1, 1, Conv, [256, 3, 2]],
   [[-1, 14], 1, Concat, [1]], [-1, 3, C3, [512, False]], [-1, 1, Conv, [512, 3, 2]],
   [[-1, 10], 1, Concat, [1]], [-1, 3, C3, [1024, False]], [[17, 20, 23], 1, Detect, [nc, anchors]]]
"""

HORNET_T = [
    [-1, 1, "HorStem", [64]],
    [-1, 2, "HorBlock", [64, 2]],
    [-1, 1, "HorDown", [128]],
    [-1, 3, "HorBlock", [128, 3]],
    [-1, 1, "HorDown", [256]],
    [-1, 18, "HorBlock", [256, 4]],
    [-1, 1, "HorDown", [512]],
    [-1, 2, "HorBlock", [512, 5]],
]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("scale,depth,width,expected", [("n", 0.33, 0.25, 1_872_157), ("s", 0.33, 0.50, 7_235_389), ("m", 0.67, 0.75, 21_190_557)])
def test_yolov5_parameter_counts(scale, depth, width, expected):
    d = yaml.safe_load(YOLOV5) | {"depth_multiple": depth, "width_multiple": width}
    assert n_params(Model(d, verbose=False)) == expected


def test_cfg_yolov5s_is_yolov5s_and_gives_25200_candidates():
    model = Model(ROOT / "cfg/yolov5s.yaml", verbose=False)
    assert n_params(model) == 7_235_389
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    with torch.no_grad():
        y, raw = model.eval()(torch.zeros(1, 3, 640, 640))
    assert y.shape == (1, 84, 25_200)
    assert [tuple(r.shape) for r in raw] == [(1, 3, 80, 80, 85), (1, 3, 40, 40, 85), (1, 3, 20, 20, 85)]


def test_hornet_t_backbone_rows_have_the_official_counts():
    head = [[[3, 5, 7], 1, "Detect", ["nc"]]]
    model = Model({"nc": 80, "backbone": deepcopy(HORNET_T), "head": head}, verbose=False)
    assert n_params(model.model[:8]) == 21_895_488
    gf = deepcopy(HORNET_T)
    gf[5][3] = [256, 4, "gf", "1/3", 14, 8]
    gf[7][3] = [512, 5, "gf", "1/3", 7, 4]
    model = Model({"nc": 80, "backbone": gf, "head": head}, verbose=False)
    assert n_params(model.model[:8]) == 22_477_824


def train_step(model, imgsz=64):
    """One optimizer step of the anchor-free head's ultralytics loss; returns the loss and the params before."""
    model.args = get_cfg()
    model.train()
    batch = {
        "img": torch.rand(2, 3, imgsz, imgsz),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[0.0], [1.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2]]),
    }
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss, _ = model.loss(batch)
    loss.sum().backward()
    optimizer.step()
    return loss, before


def test_yoloair_rows_build_once_and_train():
    """YOLOAir's rows, fixed: widths and repeats mean what they say, one stage per HorNet row."""
    backbone = [
        [-1, 1, "HorNet", [64, 0, 3, [2, 3, 18, 2], 64]],
        [-1, 1, "HorNet", [128, 1, 3, [2, 3, 18, 2], 64]],
        [-1, 1, "HorNet", [256, 2, 3, [2, 3, 18, 2], 64]],
        [-1, 1, "HorNet", [512, 3, 3, [2, 3, 18, 2], 64]],
        [-1, 3, "gnconv", [256]],
        [-1, 3, "HorBlock", [128]],
    ]
    d = {"nc": 2, "backbone": backbone, "head": [[[1, 2, 5], 1, "Detect", ["nc"]]]}
    model = Model(d, verbose=False)
    assert n_params(model.model[:4]) == 21_895_488  # exactly HorNet-T's backbone: nothing built twice
    blocks = [m for m in model.model[:4].modules() if isinstance(m, HorBlock)]
    assert len(blocks) == 2 + 3 + 18 + 2
    assert all(torch.all(b.gamma1 == 1e-6) for b in model.modules() if isinstance(b, HorBlock))
    assert len(model.model[4]) == 3 and model.model[4][0].proj_out.out_channels == 512  # YOLOAir's gnconv keeps its width
    assert model.model[5][0].proj.in_channels == 512 and model.model[5][2].gamma2.shape == (128,)
    pointers = [p.data_ptr() for p in model.parameters()]
    assert len(pointers) == len(set(pointers))
    loss, before = train_step(model)
    assert torch.isfinite(loss).all()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"weights that take no part in the loss: {unused[:5]}"
    gamma = model.model[0].blocks[0].gamma1
    assert not torch.equal(before[[id(p) for p in model.parameters()].index(id(gamma))], gamma)  # the step moved it


def test_width_multiple_scales_hornet_rows():
    d = {"nc": 1, "width_multiple": 0.5, "backbone": [[-1, 1, "HorStem", [64]], [-1, 2, "gnConv", [128, 3]]], "head": []}
    model = Model(d, verbose=False)
    assert model.model[0][0].out_channels == 32 and model.model[1][0].proj_out.out_channels == 64


CFGS = sorted((ROOT / "cfg").rglob("*.yaml"))


@pytest.mark.parametrize("cfg", CFGS, ids=[str(p.relative_to(ROOT / "cfg")) for p in CFGS])
def test_every_cfg_builds_runs_non_square_and_matches_its_header(cfg):
    header = re.search(r"^# ([\d,]+) parameters, ([\d.]+) GFLOPs at 640x640", cfg.read_text(), re.M)
    assert header, f"{cfg} has no '# N parameters, G GFLOPs at 640x640' header"
    expected_params = int(header[1].replace(",", ""))
    if expected_params > 30e6:  # full-size HorNet-S/B/L: count the rows on the meta device (no memory, no time)
        with torch.device("meta"):
            layers, _ = parse_model(load_model_yaml(cfg), [3], verbose=False)
        assert n_params(layers) == expected_params
        return
    model = Model(cfg, verbose=False)
    assert n_params(model) == expected_params
    assert f"{get_flops(model, 640):.1f}" == header[2]
    model.train()
    out = model(torch.rand(1, 3, 160, 224))
    if isinstance(model.model[-1], AnchorDetect):
        assert [tuple(o.shape[2:4]) for o in out] == [(20, 28), (10, 14), (5, 7)]
        loss = sum(o.mean() for o in out)
    else:
        assert [tuple(f.shape[-2:]) for f in out["feats"]] == [(20, 28), (10, 14), (5, 7)]
        loss = out["boxes"].mean() + out["scores"].mean()
    loss.backward()
    assert all(p.grad is not None for p in model.model[0].parameters())


def test_norm_rows_take_the_width_of_their_input():
    d = {"nc": 1, "width_multiple": 0.5, "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "LayerNorm2d", []],
                                                      [-1, 1, "nn.BatchNorm2d", []]], "head": []}
    model = Model(d, verbose=False)
    ln, bn = model.model[1], model.model[2]
    assert ln.normalized_shape == (16,) and bn.num_features == 16
    with torch.no_grad():
        y = ln(model.model[0](torch.rand(2, 3, 32, 32) * 5))
    assert y.mean(1).abs().max() < 1e-4 and (y.var(1, unbiased=False) - 1).abs().max() < 1e-2  # over the channels


def test_scales_block_and_scale_letter_from_file_name(tmp_path):
    d = yaml.safe_load(YOLOV5)
    d["scales"] = {"n": [0.33, 0.25, 1024], "s": [0.33, 0.50, 1024]}
    (tmp_path / "yolov5-mine.yaml").write_text(yaml.safe_dump(d))
    assert n_params(Model(tmp_path / "yolov5s-mine.yaml", verbose=False)) == 7_235_389
    assert n_params(Model(tmp_path / "yolov5n-mine.yaml", verbose=False)) == 1_872_157
    assert n_params(Model(tmp_path / "yolov5-mine.yaml", verbose=False)) == 1_872_157  # first scale


def test_anchor_order_is_checked_against_strides():
    d = yaml.safe_load(YOLOV5) | {"depth_multiple": 0.33, "width_multiple": 0.25}
    d["anchors"] = d["anchors"][::-1]  # large anchors on P3: reversed
    head = Model(d, verbose=False).model[-1]
    assert head.anchors[0, 0].tolist() == [10 / 8, 13 / 8]  # flipped back, then in stride units


def test_nc_argument_overrides_the_yaml():
    model = Model(ROOT / "cfg/yolov5n-hornet.yaml", nc=3, verbose=False)
    assert model.model[-1].nc == 3 and len(model.names) == 3


BAD_ROWS = {
    "unknown module": ([[-1, 1, "HorBlok", [64]]], "row 0", "did you mean 'HorBlock'"),
    "from out of range": ([[-1, 1, "Conv", [16, 3, 2]], [[-1, 5], 1, "Concat", [1]]], "row 1", "out of range"),
    "gnConv width": ([[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "gnConv", [24, 5]]], "row 1", "divisible by 2^(order-1) = 16"),
    "wrong width type": ([[-1, 1, "Conv", ["wide", 3]]], "row 0", "output width"),
    "wrong filter": ([[-1, 1, "gnConv", [32, 3, 4]]], "row 0", "odd kernel size or 'gf'"),
    "not a row": ([[-1, 1, "Conv"]], "row 0", "[from, number, module, args]"),
    "bad number": ([[-1, 0, "Conv", [16]]], "row 0", "number must be a positive integer"),
    "norm with a width": ([[-1, 1, "Conv", [16]], [-1, 1, "LayerNorm2d", [16]]], "row 1", "its args must be []"),
}


@pytest.mark.parametrize("name", list(BAD_ROWS))
def test_bad_rows_fail_naming_the_row(name):
    rows, where, problem = BAD_ROWS[name]
    with pytest.raises(ModelConfigError) as e:
        Model({"nc": 1, "backbone": rows, "head": []}, verbose=False)
    assert where in str(e.value) and problem in str(e.value)


def test_missing_sections_and_files(tmp_path):
    bad = tmp_path / "nohead.yaml"
    bad.write_text("nc: 1\nbackbone: [[-1, 1, Conv, [16]]]\n")
    with pytest.raises(ModelConfigError, match=r"nohead.yaml: missing 'head'"):
        Model(bad, verbose=False)
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        Model(tmp_path / "nowhere.yaml", verbose=False)


def test_shape_mismatch_names_the_row():
    rows = [[-1, 1, "Conv", [16, 3, 2]], [-2, 1, "Conv", [16, 3, 2]], [[-1, 0], 1, "Concat", [1]]]
    with pytest.raises(ModelConfigError, match=r"row (1|2)"):
        Model({"nc": 1, "backbone": rows, "head": []}, verbose=False)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = Model(ROOT / "cfg/yolov5n-hornet-gf.yaml", nc=2, verbose=False)
    model.names = {0: "cat", 1: "dog"}
    path = save_checkpoint(tmp_path / "best.pt", model, epoch=4)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 4 and ckpt["model_yaml"]["nc"] == 2
    loaded = load_model(path)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(model.eval()(x)[0], loaded(x)[0])
    assert loaded.names == {0: "cat", 1: "dog"}
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a torch file"):
        load_model(tmp_path / "junk.pt")


def test_summary_command_prints_rows_and_totals():
    out = subprocess.run(
        [sys.executable, "models/yolo.py", "--cfg", "cfg/yolov5n-hornet.yaml"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "ConvStem" in text and "HorBlock" in text and "2,646,877 parameters" in text
    bad = subprocess.run([sys.executable, "models/yolo.py", "--cfg", "cfg/nope.yaml"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "cfg/nope.yaml" in bad.stderr


def test_anchor_free_head_does_not_depend_on_models_built_before():
    """ultralytics' parser sets the class attribute Detect.legacy; our build decides it by ultralytics' rule, from the
    rows alone (legacy layout unless C3k2/A2C2f/C2fCIB rows), not from what was built before."""
    from ultralytics.nn.modules import Detect

    d = yaml.safe_load(YOLOV5) | {"depth_multiple": 0.33, "width_multiple": 0.25}
    d["head"][-1] = [[17, 20, 23], 1, "Detect", ["nc"]]
    fresh = n_params(Model(deepcopy(d), verbose=False))
    saved = Detect.legacy
    try:
        for legacy in (True, False):
            Detect.legacy = legacy  # what ultralytics' parse_model leaves behind after a v5/v8 or a YOLO11 YAML
            model = Model(deepcopy(d), verbose=False)
            assert n_params(model) == fresh
            assert model.model[-1].legacy is True and Detect.legacy is legacy  # the class attribute is left as found
    finally:
        Detect.legacy = saved
