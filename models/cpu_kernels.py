"""CPU float32 kernels for gnConv and HorBlock: the arithmetic of models/hornet.py in forms that measured faster.

The layers in models/hornet.py write the paper's formulas once and run their steps as `PlainOps` (plain PyTorch).
Each gnConv and HorBlock MLP asks `applies(x, self)` once per call (its one dispatch point) and, when the answer is
yes, runs the same five steps from here instead: `project_in`, `filter`, `pointwise`, `project_out`, `mlp`. The numbers are the same up to float32 rounding (tests/test_fuse.py holds both paths to the official
fixtures); only the speed differs (benchmarks/bench_layers.py, docs/speed.md):

- training: the depth-wise conv with its own backward (`_DepthwiseConvCPU`), HorBlock's MLP on oneDNN a block of
  rows at a time with a matching backward (`_MlpCPU`): a HorBlock's forward+backward about 1.8x the plain form's;
- inference: the 1x1 convs as oneDNN linears on the channels-last view, GELU fused into the first MLP linear,
  both residual adds inside the GEMMs before them, gates multiplied in place.

The switch: `ENABLED` (start a process with HORNET_CPU_KERNELS=0 to turn it off; benchmarks and tests use
`enabled(False)`). The kernels also stay off, whatever the switch says, wherever they could matter to a user:
hooks on any module of the block (thop's FLOP count, feature taps), tracing, scripting or compiling (exporters
must see the modules), autocast, other dtypes and devices, and a torch whose private ops below (oneDNN's
`mkldnn._linear_pointwise`, `aten.convolution_backward`, `aten.gelu_backward`, the global hook registries) are
missing or compute something else: `probe()` runs each once on tiny tensors at import, against the plain result.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from itertools import repeat

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

ENABLED = os.environ.get("HORNET_CPU_KERNELS", "1") != "0"


@contextmanager
def enabled(on: bool):
    """Turn the kernels on or off inside a `with` block (benchmarks, tests); the previous setting comes back after."""
    global ENABLED
    saved, ENABLED = ENABLED, on
    try:
        yield
    finally:
        ENABLED = saved


def probe():
    """(oneDNN's linear op, '') when every private op used here exists and matches the plain computation on tiny
    tensors; (None, the reason) when one does not, and the layers then always take their plain path."""
    module = nn.modules.module
    if not all(hasattr(module, n) for n in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return None, "this torch has no global forward-hook registries to check"
    if not torch.backends.mkldnn.is_available():
        return None, "this torch build has no oneDNN (mkldnn)"
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b, r = (torch.randn(*s, generator=g) for s in ((5, 4), (3, 4), (3,), (5, 3)))
        op = torch.ops.mkldnn._linear_pointwise
        checks = {
            "mkldnn._linear_pointwise": (op(x, w, b, "none", [], ""), F.linear(x, w, b)),
            "mkldnn._linear_pointwise gelu": (op(x, w, b, "gelu", [], "none"), F.gelu(F.linear(x, w, b))),
            "mkldnn._linear_pointwise.binary add": (op.binary(x, r, w, b, "add"), F.linear(x, w, b) + r),
        }
        h = torch.randn(5, 4, generator=g)
        grad = torch.empty_like(h)
        torch.ops.aten.gelu_backward.grad_input(x, h, grad_input=grad)
        checks["aten.gelu_backward"] = (grad, torch.ops.aten.gelu_backward(x, h))
        img, k = torch.randn(1, 2, 5, 5, generator=g), torch.randn(2, 1, 3, 3, generator=g)
        out = torch.randn(1, 2, 5, 5, generator=g)
        grad_w = torch.ops.aten.convolution_backward(out, img, k, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 2, [False, True, False])[1]
        k_ = k.clone().requires_grad_()
        F.conv2d(img, k_, padding=1, groups=2).backward(out)
        checks["aten.convolution_backward"] = (grad_w, k_.grad)
    except (AttributeError, RuntimeError, TypeError) as e:
        return None, f"a private torch op is missing or changed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    for name, (got, want) in checks.items():
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-5, rtol=1e-4):
            return None, f"{name} computes something else in this torch"
    return op, ""


_LINEAR, UNAVAILABLE = probe()  # UNAVAILABLE: '' when the kernels can run here, else why not


def applies(x: torch.Tensor, block: nn.Module, bypassed=None) -> bool:
    """Whether `block` (a gnConv or HorBlock) may run its kernel here: the one dispatch question, see the docstring.

    `bypassed`: the modules the kernel computes without calling them (their hooks and dtypes are checked); default
    all of the block's."""
    if not ENABLED or _LINEAR is None or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu") or torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    registry = nn.modules.module
    if registry._global_forward_hooks or registry._global_forward_pre_hooks:
        return False
    act = getattr(block, "act", None)  # HorBlock's MLP: the fused kernels compute the exact GELU
    if act is not None and not (isinstance(act, nn.GELU) and act.approximate == "none"):
        return False
    for m in block.modules() if bypassed is None else bypassed:
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        if any(p.dtype != torch.float32 for p in m.parameters(recurse=False)):
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# The steps: PlainOps' five, called by gnConv.forward and HorBlock.mlp when `applies`
# ---------------------------------------------------------------------------------------------------


def project_in(g: nn.Module, x: torch.Tensor):
    """PlainOps.project_in; in inference as two linears, so that q reaches the filter contiguous."""
    if torch.is_grad_enabled():
        return g.proj_in(x).split((g.dims[0], sum(g.dims)), dim=1)
    d0, w, b = g.dims[0], g.proj_in.weight.flatten(1), g.proj_in.bias
    return _pointwise(x, w[:d0], b[:d0]), _pointwise(x, w[d0:], b[d0:])


def filter(g: nn.Module, q: torch.Tensor) -> torch.Tensor:
    """PlainOps.filter: the depth-wise conv through `_DepthwiseConvCPU` in training, the Global Filter as it is."""
    f = g.dwconv
    if not isinstance(f, nn.Conv2d):
        return f(q, g.scale)
    weight, bias = f.weight, f.bias
    if g.scale != 1.0:
        weight, bias = weight * g.scale, None if bias is None else bias * g.scale
    if not torch.is_grad_enabled():
        return F.conv2d(q, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])
    return _DepthwiseConvCPU.apply(q.contiguous(memory_format=torch.channels_last), weight, bias)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """PlainOps.pointwise; in inference as a linear on the channels-last view."""
    return conv(x) if torch.is_grad_enabled() else _pointwise(x, conv.weight.flatten(1), conv.bias)


def project_out(g: nn.Module, p: torch.Tensor, gamma=None, residual=None) -> torch.Tensor:
    """PlainOps.project_out; in inference the residual is added inside the GEMM (oneDNN's add post-op)."""
    w, b = g.proj_out.weight, g.proj_out.bias
    if gamma is not None:
        w, b = w * gamma[:, None, None, None], b * gamma
    if not torch.is_grad_enabled():
        return _pointwise(p, w.flatten(1), b, residual)
    out = F.conv2d(p, w, b)
    return out if residual is None else residual + out


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual=None) -> torch.Tensor:
    """A 1x1 conv (weight (C_out, C_in)) on a channels-last (B, C, H, W) tensor, as a linear on its free NHWC view,
    plus `residual` (channels-last, the output's shape) when given, added inside oneDNN's GEMM.

    oneDNN's linear for the large weights, F.linear (MKL) for the small ones, where oneDNN's fixed cost of about
    15 us per call shows (2 threads: 196x32 -> 64 11 us against 25 us; 49x512 -> 2048 726 us against 545 us).
    PyTorch would send the small pws convs (under 20480 input values at batch 1) to an im2col kernel that also
    copies channels-last inputs: with gnConv's 1x1 convs here the HorNet-T backbone (224, fused, 2 threads) runs
    1.09x faster than with PyTorch's convs.
    """
    x = x.permute(0, 2, 3, 1)
    if residual is not None:
        y = _LINEAR.binary(x, residual.permute(0, 2, 3, 1), weight, bias, "add")
    elif weight.numel() > 32768:
        y = _LINEAR(x, weight, bias, "none", [], "")
    else:
        y = F.linear(x, weight, bias)
    return y.permute(0, 3, 1, 2)


class _DepthwiseConvCPU(torch.autograd.Function):
    """A stride-1 'same' depth-wise conv, (B, C, H, W) channels-last -> same, with a faster CPU backward.

    PyTorch's backward asks oneDNN for all three gradients at once. Measured on 8x224x40x40 with a 7x7 kernel, 2
    threads: 31 ms for all three; the input gradient alone 6.2 ms, but as a forward conv with the flipped kernel 2.5
    ms; the weight gradient alone 21 ms, 26 ms with the bias gradient, which is a plain sum. Here: flipped forward
    conv, weight gradient alone, sum: about 24 ms, and HorBlock 7x7 forward+backward about 10 ms faster.
    Where the kernel covers the whole map (HorNet-T's last stage at 224: 7x7), oneDNN's channels-last weight
    gradient is pathological (1x992x7x7: 14 ms, NCHW 0.9 ms with the two copies), so it gets NCHW copies there.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        c, pad = weight.shape[0], weight.shape[-1] // 2
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(2, 3), padding=pad, groups=c)
        if ctx.needs_input_grad[1]:
            a, b = (grad, x) if min(x.shape[-2:]) > weight.shape[-1] else (grad.contiguous(), x.contiguous())
            grad_w = torch.ops.aten.convolution_backward(
                a, b, weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], c, [False, True, False]
            )[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


_MLP_BLOCK_BYTES = 2 << 20  # float32 hidden activations per row block: about what fits in L2 on 2 cores


def _mlp_rows(x: torch.Tensor, w1, b1, w2, b2, keep_hidden: bool, residual=None):
    """Rows of x (N, C) through linear(w1, b1), GELU, linear(w2, b2) on oneDNN, a block of rows at a time.

    A block's hidden activations (rows x 4C) stay in cache from the first linear to the second: measured, 2
    threads, 12800 x 128 -> 512 -> 128 forward+backward: nn.Linear/GELU ~94 ms, oneDNN on whole tensors ~83 ms,
    in 1024-row blocks ~73 ms. In inference GELU is fused into the first linear (the HorNet-T backbone, 224, fused:
    1.08x faster than with a separate GELU, one A/B run), and `residual` (N, C), when given, is
    added inside the second; in training the pre-GELU blocks are returned for backward.
    """
    rows = max(64, _MLP_BLOCK_BYTES // (4 * w1.shape[0]))
    ys, hidden = [], []
    for xb, rb in zip(x.split(rows), repeat(None) if residual is None else residual.split(rows)):
        if keep_hidden:
            h = _LINEAR(xb, w1, b1, "none", [], "")
            hidden.append(h)
            h = F.gelu(h)
        else:
            h = _LINEAR(xb, w1, b1, "gelu", [], "none")
        if rb is None:
            ys.append(_LINEAR(h, w2, b2, "none", [], ""))
        else:
            ys.append(_LINEAR.binary(h, rb, w2, b2, "add"))
    return (ys[0] if len(ys) == 1 else torch.cat(ys)), hidden


class _MlpCPU(torch.autograd.Function):
    """HorBlock's MLP, (N, C) -> (N, C), on oneDNN in row blocks (see _mlp_rows), with a matching blocked backward.

    Saves only the input and the pre-GELU activations; GELU is recomputed per block in backward, where the block is
    in cache. The weight gradients accumulate over blocks.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        y, hidden = _mlp_rows(x, w1, b1, w2, b2, keep_hidden=True)
        ctx.save_for_backward(x, w1, w2, *hidden)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, w1, w2, *hidden = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x, grad_w1, grad_w2 = torch.empty_like(x), torch.zeros_like(w1), torch.zeros_like(w2)
        grad_b1 = w1.new_zeros(w1.shape[0])
        start = 0
        for h in hidden:
            end = start + h.shape[0]
            g = grad[start:end]
            grad_w2.addmm_(g.t(), F.gelu(h))
            g = g.mm(w2)  # gradient at the GELU's output, then (in place) at its input
            torch.ops.aten.gelu_backward.grad_input(g, h, grad_input=g)
            grad_w1.addmm_(g.t(), x[start:end])
            grad_b1 += g.sum(0)
            torch.mm(g, w1, out=grad_x[start:end])
            start = end
        return grad_x, grad_w1, grad_b1, grad_w2, grad.sum(0)


def mlp(block: nn.Module, x: torch.Tensor, gamma=None, residual=None) -> torch.Tensor:
    """PlainOps.mlp: oneDNN in row blocks (`_MlpCPU` in training), the residual added inside the second GEMM in
    inference; x and residual channels-last (B, C, H, W)."""
    w1, b1, w2, b2 = block.pwconv1.weight, block.pwconv1.bias, block.pwconv2.weight, block.pwconv2.bias
    if gamma is not None:
        w2, b2 = w2 * gamma[:, None], b2 * gamma
    x = block.norm2(x.permute(0, 2, 3, 1))  # a free view: x is channels-last
    rows = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled():
        y = _MlpCPU.apply(rows, w1, b1, w2, b2).view(x.shape).permute(0, 3, 1, 2)
        return y if residual is None else residual + y
    res = None if residual is None else residual.permute(0, 2, 3, 1).reshape(rows.shape)
    return _mlp_rows(rows, w1, b1, w2, b2, keep_hidden=False, residual=res)[0].view(x.shape).permute(0, 3, 1, 2)
