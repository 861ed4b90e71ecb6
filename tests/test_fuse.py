"""The HorNet layers exact to the official fixtures on both paths (the plain PyTorch layers and the CPU kernels of
models/cpu_kernels.py), before and after `fuse()`, in train and eval mode; whole models unchanged by `Model.fuse()`;
GF differentiable under autocast; the kernels off on a torch whose private ops are missing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from models import cpu_kernels
from models.hornet import GlobalLocalFilter, HorBlock, gnConv
from models.yolo import Model, parse_model

from conftest import fixture_cases

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


def build(case) -> torch.nn.Module:
    """The case's layer built from a YAML row, as a user's model would build it, with the official weights."""
    module = "gnConv" if case["kind"] == "gnconv" else "HorBlock"
    filt = "gf" if case["filter"] == "gf" else 7
    args = [case["dim"], case["order"], filt, "1/3", case.get("h", 14), case.get("w", 8)]
    seq, _ = parse_model({"nc": 1, "backbone": [[-1, 1, module, args]], "head": []}, ch=[case["dim"]], verbose=False)
    layer = seq[0]
    layer.load_state_dict(case["state_dict"])  # official names and shapes, strict
    return layer


def max_err(layer, case) -> float:
    err = 0.0
    for x, y in zip(case["inputs"], case["outputs"]):
        err = max(err, (layer(x) - y).abs().max().item())
    return err


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu-kernels", "plain"])
@pytest.mark.parametrize("case", fixture_cases())
def test_fixture_case_eval_train_and_fused(case, kernels):
    if kernels and cpu_kernels.UNAVAILABLE:
        pytest.skip(f"the CPU kernels cannot run with this torch: {cpu_kernels.UNAVAILABLE}")
    with cpu_kernels.enabled(kernels):
        check_fixture_case(case)


def check_fixture_case(case):
    layer = build(case)
    with torch.no_grad():
        assert max_err(layer.eval(), case) < TOL, "eval mode"
    assert max_err(layer.train(), case) < TOL, "train mode (with autograd recording)"
    fused = copy.deepcopy(layer).eval().fuse()
    assert fused.gnconv.scale == 1.0 if isinstance(fused, HorBlock) else fused.scale == 1.0
    with torch.no_grad():
        assert max_err(fused, case) < TOL, "after fuse()"
        assert max_err(fused, case) < TOL, "after fuse(), second call (GF filter cache)"


def _randomize_gammas(model: torch.nn.Module) -> None:
    """Layer scales of 1e-6 would hide any mistake in folding them: make them order 1."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, HorBlock):
                m.gamma1.uniform_(0.2, 1.0)
                m.gamma2.uniform_(0.2, 1.0)


@pytest.mark.parametrize("cfg", ["yolov5n-hornet.yaml", "yolov5n-hornet-gf.yaml", "yolov5n-gnconv.yaml"])
def test_model_fuse_keeps_outputs(cfg):
    torch.manual_seed(0)
    model = Model(ROOT / "cfg" / cfg, verbose=False)
    _randomize_gammas(model)
    model.eval()
    x = torch.rand(1, 3, 160, 192)
    with torch.no_grad():
        before = model(x)[0]
        model.fuse(verbose=False)
        after = model(x)[0]
    assert all(m.fused for m in model.modules() if isinstance(m, HorBlock))
    assert all(m.scale == 1.0 for m in model.modules() if isinstance(m, gnConv))
    scale = before.abs().max().clamp(min=1.0)  # box coordinates are in pixels: compare relative to their size
    assert ((before - after).abs().max() / scale).item() < TOL


def test_gf_block_backward_under_bf16_autocast():
    torch.manual_seed(0)
    block = HorBlock(64, 64, order=4, filter="gf", h=14, w=8)
    _randomize_gammas(block)
    x = torch.randn(2, 64, 20, 24, requires_grad=True)  # not the filter's size: the interpolation path too
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    y.float().square().mean().backward()
    gf = block.gnconv.dwconv
    assert isinstance(gf, GlobalLocalFilter)
    for name, t in [("input", x), ("complex_weight", gf.complex_weight), ("dw", gf.dw.weight), ("gamma1", block.gamma1)]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_gf_filter_cache_follows_weight_updates():
    gf = GlobalLocalFilter(32, 14, 8).eval()
    x = torch.randn(1, 32, 20, 24)
    with torch.no_grad():
        a = gf(x)
        gf.complex_weight.mul_(2.0)  # an in-place update (optimizer step, load_state_dict) must not reuse the cache
        b = gf(x)
        assert not torch.allclose(a, b)
        gf.complex_weight.div_(2.0)
        assert torch.allclose(gf(x), a, atol=1e-6)


def test_inference_kernels_match_the_plain_path(monkeypatch):
    """No-grad CPU inference takes oneDNN's fused linear+GELU, the residual adds inside the GEMMs and in-place
    gating, the MLP in several row blocks here; the same block with the kernels switched off gives the same output."""
    monkeypatch.setattr(cpu_kernels, "_MLP_BLOCK_BYTES", 4 * 256 * 100)  # 100-row blocks: 960 rows = 9 blocks + 60
    calls = []
    mlp_rows = cpu_kernels._mlp_rows
    monkeypatch.setattr(cpu_kernels, "_mlp_rows", lambda *a, **k: calls.append(k.get("residual") is not None) or mlp_rows(*a, **k))
    torch.manual_seed(0)
    block = HorBlock(64, 64, order=3).eval()
    _randomize_gammas(block)
    x = torch.randn(2, 64, 20, 24)
    with torch.no_grad():
        fast = block(x)
        assert calls == [True], "the fused inference path (MLP with the residual inside) was not taken"
        with cpu_kernels.enabled(False):
            plain = block(x)
        assert calls == [True], "the switch did not turn the kernels off"
    with torch.enable_grad():
        graded = block(x)
    assert (fast - plain).abs().max().item() < 1e-5
    assert (fast - graded).abs().max().item() < 1e-5


def _backward_nodes(t: torch.Tensor) -> set:
    """Names of every autograd node behind `t`."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return names


@pytest.mark.parametrize("filt,size", [(7, (12, 10)), (7, (7, 5)), ("gf", (12, 10))])
def test_training_kernels_match_float64_plain_path(filt, size, monkeypatch):
    """CPU float32 training runs the depth-wise conv and the MLP through their own backward (models/cpu_kernels.py);
    float64 takes the modules' own autograd. Outputs and every gradient agree, the MLP split into several row
    blocks with a remainder; a map no larger than the 7x7 kernel takes the NCHW weight-gradient branch."""
    monkeypatch.setattr(cpu_kernels, "_MLP_BLOCK_BYTES", 4 * 128 * 64)  # 64-row blocks: 240 rows = 3 blocks + 48
    torch.manual_seed(0)
    block = HorBlock(32, 32, order=3, filter=filt, h=6, w=4).train()
    _randomize_gammas(block)
    ref = copy.deepcopy(block).double()
    x = torch.randn(2, 32, *size)
    g = torch.randn(2, 32, *size)
    results = []
    for m, xi in ((block, x), (ref, x.double())):
        xi = xi.clone().requires_grad_()
        y = m(xi)
        if m is block:
            nodes = _backward_nodes(y)
            assert "_MlpCPUBackward" in nodes and ("_DepthwiseConvCPUBackward" in nodes or filt == "gf"), nodes
        y.backward(g.to(y.dtype))
        results.append([y.detach(), xi.grad] + [p.grad for p in m.parameters()])
    names = ["output", "input grad"] + [n for n, _ in block.named_parameters()]
    for name, a, b in zip(names, *results):
        scale = b.abs().max().clamp(min=1e-3)
        assert ((a.double() - b).abs().max() / scale).item() < 1e-4, name


@pytest.mark.parametrize("name", ["gnconv", "gnconv.proj_in", "gnconv.dwconv", "gnconv.pws.0", "gnconv.proj_out", "pwconv1", "pwconv2"])
@pytest.mark.parametrize("train", [False, True])
def test_a_hook_on_any_bypassed_module_fires(name, train):
    """The CPU kernels call the arithmetic of these modules directly; a forward hook on any one of them (a
    feature tap, thop's FLOP count) must still see its call, in inference and in training."""
    block = HorBlock(32, 32, order=3).train(train)
    module = block.get_submodule(name)
    seen = []
    module.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.set_grad_enabled(train):
        block(torch.randn(1, 32, 10, 12))
    assert seen, f"the hook on {name} did not fire"


def test_missing_private_ops_turn_the_kernels_off_and_layers_stay_exact(monkeypatch, reference):
    """A torch without oneDNN's linear op (or with it changed): probe() says why, and with the kernels unavailable
    every layer takes its plain path, still exact to the official fixtures in inference and training."""

    class NoMkldnn:
        def __getattr__(self, name):
            raise AttributeError(f"no op {name}")

    monkeypatch.setattr(torch.ops, "mkldnn", NoMkldnn())
    op, why = cpu_kernels.probe()
    assert op is None and "_linear_pointwise" in why
    monkeypatch.undo()

    def wrong_gelu(x, w, b, attr, scalars, algorithm):  # an op that runs but computes something else
        return torch.nn.functional.linear(x, w, b) * 1.01

    class ChangedMkldnn:
        _linear_pointwise = wrong_gelu

    monkeypatch.setattr(torch.ops, "mkldnn", ChangedMkldnn())
    op, why = cpu_kernels.probe()
    assert op is None and why, why
    monkeypatch.undo()

    monkeypatch.setattr(cpu_kernels, "_LINEAR", None)
    taken = []
    for step in ("project_in", "filter", "pointwise", "project_out", "mlp"):
        monkeypatch.setattr(cpu_kernels, step, lambda *a, **k: taken.append(1))
    for case in reference["cases"]:
        check_fixture_case(case)
    assert not taken
