"""Official HorNet checkpoints load into HorNet-YOLOv5 YAML rows (models/hornet_weights.py).

The mini checkpoints and their stage outputs come from the official implementation
(../shared/fixtures, see its README); the tests skip when that folder is absent.
"""

import argparse
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.hornet_weights import HorNetWeightsError, is_official_hornet_checkpoint, load_hornet_weights, to_official_state_dict
from conftest import fixture_file as fixture_path
from models.yolo import Model, load_model_yaml, parse_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def networks():
    """The two official mini networks of hornet_reference.pt, by name."""
    ref = torch.load(fixture_path("hornet_reference.pt"), weights_only=True)
    return {net["name"]: net for net in ref["networks"]}


def mini_yaml(base=32, gf=False, gf_hw=((14, 8), (7, 4))):
    """A HorNet backbone as YAML rows (depths [1, 1, 2, 1], orders 2-5) with a Detect head on rows 3, 5, 7."""
    f3 = ["gf", "1/3", *gf_hw[0]] if gf else [7, "1/3"]  # the official networks' s = 1/3 (the class default is 1.0)
    f4 = ["gf", "1/3", *gf_hw[1]] if gf else [7, "1/3"]
    backbone = [
        [-1, 1, "HorStem", [base]],  # 0  downsample_layers.0
        [-1, 1, "HorBlock", [base, 2, 7, "1/3"]],  # 1  stages.0 (one block: the row is the block)
        [-1, 1, "HorDown", [2 * base]],  # 2
        [-1, 1, "HorBlock", [2 * base, 3, 7, "1/3"]],  # 3  stages.1
        [-1, 1, "HorDown", [4 * base]],  # 4
        [-1, 2, "HorBlock", [4 * base, 4, *f3]],  # 5  stages.2 (nn.Sequential of 2 blocks)
        [-1, 1, "HorDown", [8 * base]],  # 6
        [-1, 1, "HorBlock", [8 * base, 5, *f4]],  # 7  stages.3
    ]
    return {"nc": 3, "depth_multiple": 1.0, "width_multiple": 1.0, "backbone": backbone,
            "head": [[[3, 5, 7], 1, "Detect", ["nc"]]]}  # fmt: skip


def yoloair_yaml(base=32):
    """The same backbone as four YOLOAir-style `HorNet` rows (one stage each)."""
    depths = [1, 1, 2, 1]
    backbone = [[-1, 1, "HorNet", [base * 2**k, k, 3, depths, base]] for k in range(4)]
    return {"nc": 3, "backbone": backbone, "head": [[[1, 2, 3], 1, "Detect", ["nc"]]]}


def stage_outputs(model, x, stage_rows):
    """Run the backbone rows one by one (each takes the previous row) and keep the outputs of `stage_rows`."""
    outs = []
    with torch.no_grad():
        for i in range(max(stage_rows) + 1):
            x = model.model[i](x)
            if i in stage_rows:
                outs.append(x)
    return outs


def assert_matches_official(model, net, stage_rows):
    model.eval()
    for x, expected in zip(net["inputs"], net["stage_outputs"]):
        for k, (out, ref) in enumerate(zip(stage_outputs(model, x, stage_rows), expected)):
            assert out.shape == ref.shape, f"{net['name']} stage {k + 1}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
            err = (out - ref).abs().max().item()
            assert err < 1e-4, f"{net['name']} input {tuple(x.shape)} stage {k + 1}: max error {err}"


@pytest.mark.parametrize("name", ["hornet_mini_7x7", "hornet_mini_gf"])
def test_official_mini_checkpoint_reproduces_stage_outputs(networks, name):
    net = networks[name]
    model = Model(mini_yaml(gf=net["filter"] == "gf"), verbose=False)
    report = load_hornet_weights(model, fixture_path(net["checkpoint"]), verbose=False)
    sd = torch.load(fixture_path(net["checkpoint"]), weights_only=True)["model"]
    backbone_keys = [k for k in sd if not k.startswith(("norm.", "head."))]
    assert report["loaded"] == len(backbone_keys) and sorted(report["loaded_keys"]) == sorted(backbone_keys)
    assert report["ignored"] == 4  # norm.weight/bias, head.weight/bias
    assert not report["not_covered"] and not report["unused"] and not report["mismatched"]
    assert sorted(report["rows"]) == list(range(8))
    assert_matches_official(model, net, stage_rows=(1, 3, 5, 7))


def test_yoloair_hornet_rows_reproduce_stage_outputs(networks):
    net = networks["hornet_mini_7x7"]
    model = Model(yoloair_yaml(), verbose=False)
    ckpt = torch.load(fixture_path(net["checkpoint"]), weights_only=True)
    report = load_hornet_weights(model, {"model_ema": ckpt["model"]}, verbose=False)  # a loaded object, EMA key
    assert sorted(report["rows"]) == [0, 1, 2, 3] and not report["not_covered"] and not report["mismatched"]
    assert_matches_official(model, net, stage_rows=(0, 1, 2, 3))


def test_wrong_width_raises_with_report_and_changes_nothing():
    model = Model(mini_yaml(base=64), verbose=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_hornet_weights(model, fixture_path("hornet_mini_7x7.pth"), verbose=False)
    message = str(err.value)
    assert "nothing was loaded" in message
    # both shapes of a mismatch are named: the stem conv is 32 wide in the checkpoint, 64 in the model
    assert "downsample_layers.0.0.weight -> model.0.0.weight: checkpoint [32, 3, 4, 4], model [64, 3, 4, 4]" in message
    mismatched = {key: (a, b) for key, _, a, b in err.value.report["mismatched"]}  # the whole list, as a dict
    assert mismatched["stages.3.0.pwconv1.weight"] == ((1024, 256), (2048, 512))
    assert len(mismatched) == 122  # every backbone tensor of the mini differs in width
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a failed load changed the model"


def test_fewer_blocks_and_unused_stages_are_reported():
    """A model with only stages 0-1 (and stage 2 shorter) takes what fits and reports the rest."""
    d = mini_yaml()
    d["backbone"] = d["backbone"][:5] + [[-1, 1, "HorBlock", [128, 4]]]  # stages.2 with 1 of 2 blocks, no stage 3
    d["head"] = [[[3, 5], 1, "Detect", ["nc"]]]
    model = Model(d, verbose=False)
    report = load_hornet_weights(model, fixture_path("hornet_mini_7x7.pth"), verbose=False)
    assert report["unused"] == ["stages.2.1", "downsample_layers.3", "stages.3.0"]
    assert not report["not_covered"] and not report["mismatched"]


def test_checkpoint_covering_nothing_is_an_error():
    model = Model(yoloair_yaml(), verbose=False)
    with pytest.raises(ValueError, match="not an official HorNet checkpoint"):
        load_hornet_weights(model, {"model": {"head.weight": torch.zeros(10, 256)}}, verbose=False)
    conv_only = {"nc": 3, "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": [[-1, 1, "nn.Identity", []]]}
    with pytest.raises(ValueError, match="no HorStem/HorDown/HorBlock/HorNet rows"):
        load_hornet_weights(Model(conv_only, verbose=False), fixture_path("hornet_mini_7x7.pth"), verbose=False)
    # the checkpoint only has stages the model lacks: nothing covered is an error, not a silent no-op
    sd = {k: v for k, v in torch.load(fixture_path("hornet_mini_7x7.pth"), weights_only=True)["model"].items()
          if k.startswith("stages.3")}  # fmt: skip
    with pytest.raises(ValueError, match="covers none"):
        load_hornet_weights(Model(mini_yaml(), verbose=False).model[:3], sd, verbose=False)


def test_gf_filters_are_resized_bilinearly():
    model = Model(mini_yaml(gf=True, gf_hw=((16, 9), (5, 3))), verbose=False)
    sd = torch.load(fixture_path("hornet_mini_gf.pth"), weights_only=True)
    report = load_hornet_weights(model, sd, verbose=False)
    assert sorted(k for k, _, _ in report["resized"]) == [
        "stages.2.0.gnconv.dwconv.complex_weight", "stages.2.1.gnconv.dwconv.complex_weight",
        "stages.3.0.gnconv.dwconv.complex_weight"]  # fmt: skip
    for key, param, hw in [
        ("stages.2.1.gnconv.dwconv.complex_weight", model.model[5][1].gnconv.dwconv.complex_weight, (16, 9)),
        ("stages.3.0.gnconv.dwconv.complex_weight", model.model[7].gnconv.dwconv.complex_weight, (5, 3)),
    ]:
        w = sd["model"][key]  # (C, h, w, 2) -> (2, C, h, w), as the layer interpolates it
        expected = F.interpolate(w.permute(3, 0, 1, 2), size=hw, mode="bilinear", align_corners=True).permute(1, 2, 3, 0)
        assert param.shape == expected.shape and torch.allclose(param, expected, atol=1e-7)


def test_is_official_hornet_checkpoint(tmp_path):
    sd = torch.load(fixture_path("hornet_mini_7x7.pth"), weights_only=True)["model"]
    assert is_official_hornet_checkpoint(fixture_path("hornet_mini_7x7.pth"))
    for wrapped in ({"model": sd}, {"model_ema": sd}, {"state_dict": sd}, sd, {f"module.{k}": v for k, v in sd.items()}):
        assert is_official_hornet_checkpoint(wrapped)
    model = Model(yoloair_yaml(), verbose=False)
    assert not is_official_hornet_checkpoint({"model_yaml": {}, "model": model.state_dict()})  # our own format
    assert not is_official_hornet_checkpoint({"model": {"head.weight": torch.zeros(1)}})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert not is_official_hornet_checkpoint(tmp_path / "junk.pt")


def test_unreadable_checkpoints_are_named(tmp_path):
    """Training arguments (an argparse.Namespace) beside the weights are plain data and read; a file that would run
    code, or one that is missing, fails with one line naming it and nothing in the model changes."""
    import os

    torch.save({"model": {"stages.0.0.gamma1": torch.zeros(2)}, "args": argparse.Namespace(lr=1)}, tmp_path / "ns.pth")
    assert is_official_hornet_checkpoint(tmp_path / "ns.pth")

    class Runs:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'MARKER'}",))

    torch.save({"model": {"stages.0.0.gamma1": torch.zeros(2)}, "args": Runs()}, tmp_path / "code.pth")
    rows = torch.nn.Sequential()
    with pytest.raises(HorNetWeightsError, match=r"code\.pth: refused, nothing in it was run: it needs posix\.system"):
        load_hornet_weights(rows, tmp_path / "code.pth", verbose=False)
    assert not is_official_hornet_checkpoint(tmp_path / "code.pth") and not (tmp_path / "MARKER").exists()
    with pytest.raises(HorNetWeightsError, match="missing.pth: cannot be read"):
        load_hornet_weights(rows, tmp_path / "missing.pth", verbose=False)


def test_hornet_t_backbone_params_and_full_size_round_trip(tmp_path):
    cfg = ROOT / "cfg" / "hornet" / "yolov5-hornet-t.yaml"
    d = load_model_yaml(cfg)
    rows, _ = parse_model({**d, "head": []}, [3], verbose=False)  # the backbone rows alone, as Model builds them
    assert [r.type for r in rows[:8]] == ["HorStem"] + ["HorBlock", "HorDown"] * 3 + ["HorBlock"]
    assert sum(p.numel() for p in rows[:8].parameters()) == 21_895_488  # the official HorNet-T backbone

    official = to_official_state_dict(rows)
    assert sum(v.numel() for v in official.values()) == 21_895_488
    assert len([k for k in official if k.startswith("stages.2.")]) == 18 * 22  # 18 order-4 blocks of 22 tensors
    assert "stages.2.17.gnconv.pws.2.weight" in official and "downsample_layers.3.1.weight" in official
    generator = torch.Generator().manual_seed(1)
    official = {k: torch.randn(v.shape, generator=generator) for k, v in official.items()}  # not the init values
    official["norm.weight"], official["head.weight"] = torch.ones(512), torch.zeros(1000, 512)
    torch.save({"model": official}, tmp_path / "hornet_tiny_7x7.pth")

    target = Model(cfg, verbose=False)  # the whole detector, head included
    assert sum(p.numel() for p in target.model[:8].parameters()) == 21_895_488
    report = load_hornet_weights(target, tmp_path / "hornet_tiny_7x7.pth", verbose=False)
    assert report["loaded"] == len(official) - 2 and report["ignored"] == 2
    assert not report["not_covered"] and not report["unused"] and not report["mismatched"]
    back = to_official_state_dict(target)
    assert back.keys() == official.keys() - {"norm.weight", "head.weight"}
    assert all(torch.equal(back[k], official[k]) for k in back), "a backbone tensor did not round-trip"
    assert torch.equal(target.model[5][17].gnconv.pws[2].weight, official["stages.2.17.gnconv.pws.2.weight"])
