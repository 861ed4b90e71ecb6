"""HorNet layers built from YAML rows reproduce the official implementation's outputs."""

import pytest
import torch

from models.hornet import GlobalLocalFilter, HorBlock, gnConv
from models.yolo import parse_model


def build_row(row, c_in):
    """One YAML row on its own, as the parser builds it."""
    layers, _ = parse_model({"nc": 1, "backbone": [row], "head": []}, [c_in], verbose=False)
    return layers[0]


def case_row(case):
    module = "gnConv" if case["kind"] == "gnconv" else "HorBlock"
    filt = "gf" if case["filter"] == "gf" else 7
    return [-1, 1, module, [case["dim"], case["order"], filt, "1/3", case.get("h", 14), case.get("w", 8)]]


def test_every_fixture_case_matches_the_official_code(reference):
    assert len(reference["cases"]) >= 8
    for case in reference["cases"]:
        layer = build_row(case_row(case), case["dim"]).eval()
        layer.load_state_dict(case["state_dict"])  # strict: names and shapes are the official ones
        with torch.no_grad():
            for x, expected in zip(case["inputs"], case["outputs"]):
                err = (layer(x) - expected).abs().max().item()
                assert err < 1e-4, f"{case['name']} input {tuple(x.shape)}: max error {err}"


def test_scale_literal_and_gf_keys(reference):
    case = next(c for c in reference["cases"] if c["filter"] == "gf" and c["kind"] == "gnconv")
    layer = build_row(case_row(case), case["dim"])
    assert abs(layer.scale - 1 / 3) < 1e-12  # '1/3' in a YAML row is a number, not eval()-ed text
    assert isinstance(layer.dwconv, GlobalLocalFilter)
    assert set(layer.state_dict()) == set(case["state_dict"])


def test_gnconv_order_widths_are_coarse_to_fine():
    layer = gnConv(64, 64, order=4)
    assert layer.dims == [8, 16, 32, 64]
    assert layer.proj_in.out_channels == 128 and layer.dwconv.in_channels == 120


def test_gnconv_takes_a_different_input_width():
    layer = gnConv(48, 32, order=3)
    assert layer(torch.randn(2, 48, 9, 11)).shape == (2, 32, 9, 11)


@pytest.mark.parametrize("size", [(15, 21), (7, 6), (32, 32), (1, 1)])
def test_gf_any_size_forward_backward(size):
    layer = gnConv(32, 32, order=3, filter="gf", h=14, w=8)
    x = torch.randn(2, 32, *size, requires_grad=True)
    layer(x).square().mean().backward()
    assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    assert layer.dwconv.complex_weight.grad is not None and layer.dwconv.complex_weight.grad.abs().sum() > 0


def test_gf_under_autocast_runs_the_fft_in_float32():
    block = HorBlock(32, 32, order=3, filter="gf", h=6, w=4, layer_scale=0.5)
    x = torch.randn(2, 32, 11, 13)
    reference_out = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    out.float().square().mean().backward()
    assert torch.isfinite(block.gnconv.dwconv.complex_weight.grad).all()
    assert (out.float() - reference_out).abs().max() < 0.1  # bf16 convs, float32 FFT


def test_horblock_layer_scale_starts_at_1e6_and_projects_widths():
    block = HorBlock(24, 32, order=2)
    assert torch.all(block.gamma1 == 1e-6) and torch.all(block.gamma2 == 1e-6)
    assert block(torch.randn(1, 24, 8, 8)).shape == (1, 32, 8, 8)
    assert "proj.weight" not in HorBlock(32, 32).state_dict()  # no extra keys when widths match


def test_drop_path_only_in_training():
    from models.hornet import set_drop_path

    blocks = torch.nn.Sequential(*(HorBlock(16, 16, order=2, layer_scale=1.0) for _ in range(3)))
    set_drop_path(blocks, 0.2)
    assert [b.drop_path.p for b in blocks] == pytest.approx([0.0, 0.1, 0.2])
    x = torch.randn(64, 16, 4, 4)
    blocks.train()
    torch.manual_seed(0)
    first = blocks(x)
    torch.manual_seed(1)
    assert not torch.equal(first, blocks(x))  # training: other samples' residual branches dropped
    blocks.eval()
    with torch.no_grad():
        kept = blocks(x)
        for b in blocks:
            b.drop_path.p = 0.0
        assert torch.equal(kept, blocks(x))  # eval: drop path does nothing
