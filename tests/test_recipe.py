"""The training recipe of HorNet models: optimizer groups, layer-scale init, the hyp train.py picks per model.

Checks: the optimizer follows the official HorNet rule (no weight decay for any 1-D parameter: layer scales,
norms, biases) while convolution, linear and Global Filter weights keep it; plain YOLOv5 models get the
engine's groups unchanged; the `layer_scale` hyp key sets every HorBlock's gammas (and bad values are named);
train.py picks the HorNet recipe for models with HorNet layers and says so, and --hyp overrides it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

import train  # noqa: E402
from models.hornet import C3HB, HorBlock, set_layer_scale  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.hyp import EXTRA_DEFAULTS, HypError, load_hyp, recipe_for  # noqa: E402
from utils.trainer import HorNetTrainer  # noqa: E402


def groups_of(cfg: str, hornet_lr_scale: float = 1.0) -> tuple[dict, list]:
    """{parameter name: (group name, weight decay, lr)} of the trainer's AdamW for a model YAML, and the groups."""
    model = Model(cfg, nc=3, verbose=False)
    trainer = HorNetTrainer.__new__(HorNetTrainer)  # build_optimizer needs only args for a named optimizer
    trainer.args = SimpleNamespace(hornet_lr_scale=hornet_lr_scale)
    optimizer = trainer.build_optimizer(model, "AdamW", lr=1e-3, momentum=0.9, decay=0.05)
    group_of = {id(p): (g["param_group"], g["weight_decay"], g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    named = {name: group_of[id(p)] for name, p in model.named_parameters()}
    assert len(named) == len(group_of), "every parameter in exactly one group"
    return named, optimizer.param_groups


def test_hornet_optimizer_groups_follow_the_official_rule():
    named, groups = groups_of("cfg/yolov5n-hornet-gf.yaml")
    assert [g["param_group"] for g in groups] == ["weight", "bn", "bias", "no_decay"]
    gammas = [n for n in named if n.endswith(("gamma1", "gamma2"))]
    assert len(gammas) == 2 * 6  # [1, 1, 3, 1] blocks in yolov5n-hornet-gf
    for name in gammas:
        assert named[name] == ("no_decay", 0.0, 1e-3), name
    model = Model("cfg/yolov5n-hornet-gf.yaml", nc=3, verbose=False)
    for name, p in model.named_parameters():
        if p.ndim <= 1:  # layer scales, LayerNorm/BatchNorm weights, biases
            assert named[name][1] == 0.0, name
        else:  # conv and linear weights, the Global Filter's complex weight
            assert named[name] == ("weight", 0.05, 1e-3), name
    assert any(n.endswith("complex_weight") for n in named)


def test_plain_yolov5_keeps_the_engine_groups():
    named, groups = groups_of("cfg/yolov5n.yaml")
    assert [g["param_group"] for g in groups] == ["weight", "bn", "bias"]
    assert all(decay == 0.05 for n, (g, decay, lr) in named.items() if n.endswith("conv.weight"))


def test_hornet_lr_scale_slows_only_the_hornet_layers():
    named, groups = groups_of("cfg/yolov5n-horblock.yaml", hornet_lr_scale=0.2)
    plain, _ = groups_of("cfg/yolov5n-horblock.yaml")
    rows = Model("cfg/yolov5n-horblock.yaml", nc=3, verbose=False).model
    for name, (group, decay, lr) in named.items():
        row = rows[int(name.split(".")[1])]  # model.<row>.<...>
        inside = isinstance(row, C3HB) and ".m." in name  # C3HB's HorBlocks; its cv1/cv2/cv3 are YOLOv5 convs
        assert lr == pytest.approx(2e-4 if inside else 1e-3), name
        assert (group, decay) == plain[name][:2], name  # same decay and warm-up treatment as without the scale
    assert all(g["params"] for g in groups)  # no empty group left behind


def test_set_layer_scale_opens_every_block():
    model = Model("cfg/yolov5n-horblock.yaml", nc=3, verbose=False)
    blocks = [m for m in model.modules() if isinstance(m, HorBlock)]
    assert blocks and all(torch.all(b.gamma1 == 1e-6) for b in blocks)  # the paper's init by default
    assert set_layer_scale(model, 0.1) == len(blocks)
    assert all(torch.allclose(b.gamma1, torch.full_like(b.gamma1, 0.1)) and torch.allclose(b.gamma2, torch.full_like(b.gamma2, 0.1))
               for b in blocks)


@pytest.mark.parametrize("key, value", [("layer_scale", -1e-6), ("layer_scale", "1e-2x"), ("lr0", "fast"), ("drop_path", 1.5),
                                        ("ema_decay", 1.0), ("ema_tau", 0)])
def test_bad_recipe_values_name_the_key(tmp_path, key, value):
    f = tmp_path / "hyp.yaml"
    f.write_text(yaml.safe_dump({"lr0": 0.001, key: value}))
    with pytest.raises(HypError, match=f"{f}.*'{key}'"):
        load_hyp(f)


def test_ema_hyp_keys_shape_the_weight_average():
    from ultralytics.utils.torch_utils import ModelEMA

    trainer = HorNetTrainer.__new__(HorNetTrainer)  # the EMA needs only the args and the model
    trainer.args = SimpleNamespace(ema_decay=0.99, ema_tau=10)
    ramp = trainer.ema_ramp()
    assert abs(ramp(10) - 0.99 * (1 - torch.e**-1)) < 1e-9 and abs(ramp(1e6) - 0.99) < 1e-12
    trainer.args = SimpleNamespace(**{k: EXTRA_DEFAULTS[k] for k in ("ema_decay", "ema_tau")})  # the defaults: the engine's
    assert abs(trainer.ema_ramp()(2000) - ModelEMA(torch.nn.Module()).decay(2000)) < 1e-12
    # a resumed run's EMA takes the checkpoint's weights and step count into the EMA the engine made
    model = Model("cfg/yolov5n.yaml", nc=3, verbose=False)
    trainer.ema, trainer.stopper = ModelEMA(model), SimpleNamespace()
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    trainer._load_checkpoint_state({"model": state, "updates": 7, "best_fitness": 0.5})
    assert trainer.ema.updates == 7 and trainer.best_fitness == 0.5
    assert all(torch.equal(v, state[k]) for k, v in trainer.ema.ema.state_dict().items())


def test_layer_scale_hyp_reaches_the_model(tmp_path):
    from utils.shapes import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "shapes", n_train=4, n_val=2, imgsz=64, seed=0)
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                                    "names": dict(enumerate("abcdef"))}))
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text(yaml.safe_dump({**load_hyp(ROOT / "data/hyps/hyp.hornet.yaml"), "layer_scale": 0.25}))
    opt = train.parse_opt(["--cfg", "cfg/yolov5n-hornet.yaml", "--data", str(root / "data.yaml"), "--hyp", str(hyp),
                           "--project", str(tmp_path / "runs"), "--img", "64"])
    trainer = HorNetTrainer(overrides=train.overrides_from(opt))
    trainer.data = {"nc": 6, "names": dict(enumerate("abcdef")), "channels": 3}
    model = trainer.get_model(cfg="cfg/yolov5n-hornet.yaml", verbose=False)
    gammas = [b.gamma2 for b in model.modules() if isinstance(b, HorBlock)]
    assert gammas and all(torch.allclose(g, torch.full_like(g, 0.25)) for g in gammas)


@pytest.mark.parametrize("cfg, recipe", [
    ("cfg/yolov5n.yaml", "hyp.scratch-adamw.yaml"),
    ("cfg/yolov5s.yaml", "hyp.scratch-adamw.yaml"),
    ("cfg/yolov5n-gnconv.yaml", "hyp.hornet.yaml"),
    ("cfg/yolov5n-horblock.yaml", "hyp.hornet.yaml"),
    ("cfg/yolov5n-hornet-gf.yaml", "hyp.hornet.yaml"),
    ("cfg/yolov5n-horfpn.yaml", "hyp.hornet.yaml"),
    ("cfg/hornet/yolov5-hornet-t.yaml", "hyp.hornet.yaml"),
])
def test_train_picks_the_recipe_of_the_model(cfg, recipe):
    assert recipe_for(ROOT / cfg).name == recipe


def test_train_says_which_recipe_and_hyp_overrides(tmp_path):
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("ultralytics").addHandler(handler)
    try:
        o = train.overrides_from(train.parse_opt(["--cfg", "cfg/yolov5n-horfpn.yaml", "--project", str(tmp_path)]))
        picked = [line for line in seen if line.startswith("hyp: ")]
        assert picked == ["hyp: data/hyps/hyp.hornet.yaml (the HorNet recipe: the model has HorNet layers; --hyp overrides)"]
        assert Path(o["hyp"]) == ROOT / "data/hyps/hyp.hornet.yaml"
        seen.clear()
        o = train.overrides_from(train.parse_opt(["--cfg", "cfg/yolov5n-horfpn.yaml", "--project", str(tmp_path),
                                                  "--hyp", "data/hyps/hyp.scratch-low.yaml"]))
        assert Path(o["hyp"]).resolve() == ROOT / "data/hyps/hyp.scratch-low.yaml" and o["optimizer"] == "SGD"
        assert not [line for line in seen if line.startswith("hyp: ")]
        o = train.overrides_from(train.parse_opt(["--cfg", "cfg/yolov5n-horfpn.yaml", "--project", str(tmp_path),
                                                  "--hyp", "hyp.scratch-low.yaml"]))  # a bare name: data/hyps/, as YOLOv5
        assert Path(o["hyp"]) == ROOT / "data/hyps/hyp.scratch-low.yaml"
    finally:
        logging.getLogger("ultralytics").removeHandler(handler)


@pytest.mark.parametrize("cfg", ["cfg/yolov5n-hornet.yaml", "cfg/yolov5n-hornet-gf.yaml"])
def test_paper_stem_is_one_word_away(cfg):
    """Style 3 ships YOLOv5's ConvStem; HorStem (the paper's 4x4 patchify stem) in its place builds the same outputs."""
    from models.yolo import load_model_yaml

    d = load_model_yaml(ROOT / cfg)
    assert d["backbone"][0][2] == "ConvStem"
    d["backbone"][0][2] = "HorStem"
    ours, paper = Model(ROOT / cfg, nc=3, verbose=False).eval(), Model(d, nc=3, verbose=False).eval()
    assert type(paper.model[0]).__name__ == "HorStem"
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        shapes = [[t.shape for t in m(x)[1]] for m in (ours, paper)]
    assert shapes[0] == shapes[1] and torch.equal(ours.stride, paper.stride)
    assert sum(p.numel() for p in ours.model[1:].parameters()) == sum(p.numel() for p in paper.model[1:].parameters())


@pytest.mark.parametrize("args", [["abc"], [0], []])
def test_bad_conv_stem_row_names_file_and_row(args):
    from models.yolo import ModelConfigError, load_model_yaml

    d = load_model_yaml(ROOT / "cfg/yolov5n-hornet.yaml")
    d["backbone"][0][3] = args
    with pytest.raises(ModelConfigError, match=r"yolov5n-hornet.yaml: row 0 .*ConvStem.*output width"):
        Model(d, nc=3, verbose=False)
