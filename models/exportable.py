"""Export-time forms of the model: the same numbers, in operators and layouts that exporters and runtimes run well.

The Global Filter computes `irfft2(rfft2(x) * filter)`, and the TorchScript-based ONNX exporter (which
OpenVINO's PyTorch frontend shares the trace with) refuses `aten::fft_rfft2`. For a fixed input size that
step is a linear map, so `MatmulGlobalFilter` computes it with real matrix products (the DFT matrices)
built from the layer's own weights; `DynamicGlobalFilter` builds the matrices in the graph for any size.

The paper's layers move between (B, C, H, W) and (B, H, W, C) around each LayerNorm and MLP; an eager CPU
run gets that for free (channels-last memory), a traced graph gets a transpose each time. The export forms
stay in (B, C, H, W): LayerNorm over the channels as mean and variance along dim 1 (`ChannelNorm`), the
MLP as 1x1 convolutions (`ExportHorBlock`), the Global Filter's halves interleaved by one stack. On yolov5s-hornet
at 640, 2 threads, OpenVINO runs these forms 1.41x (float32) and 1.31x (bfloat16) faster than a trace of the layers.

`exportable_model` makes the copy of a model that every export traces.
"""

from __future__ import annotations

import math
from copy import deepcopy

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.heads import AnchorDetect
from models.hornet import GlobalLocalFilter, HorBlock, LayerNorm2d
from ultralytics.nn.modules import Detect


def filter_along_h(xr, xi, ch, sh, gr, gi):
    """The middle of the Global Filter as real matrix products: the FFT along H of a spectrum that is already
    transformed along W (real part xr, imaginary xi), times the complex filter (gr + i gi), and the inverse FFT
    along H. `ch`, `sh` are the (H, H) cosine and sine DFT matrices, normalised. Returns (real, imaginary)."""
    yr = torch.matmul(ch, xr) + torch.matmul(sh, xi)
    yi = torch.matmul(ch, xi) - torch.matmul(sh, xr)
    zr = yr * gr - yi * gi
    zi = yr * gi + yi * gr
    return torch.matmul(ch, zr) - torch.matmul(sh, zi), torch.matmul(ch, zi) + torch.matmul(sh, zr)


def channel_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """`norm` (a LayerNorm over C) applied to (B, C, H, W) along dim 1, without leaving that layout."""
    d = x - x.mean(1, keepdim=True)
    return d / torch.sqrt(d.pow(2).mean(1, keepdim=True) + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]


class ChannelNorm(LayerNorm2d):
    """LayerNorm2d in (B, C, H, W) throughout: the export form (runtimes fuse it into one normalisation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(x, self)


class ExportHorBlock(HorBlock):
    """HorBlock with its LayerNorm + MLP as a channel norm and two 1x1 convolutions on (B, C, H, W)."""

    def mlp(self, x: torch.Tensor, gamma=None, residual=None) -> torch.Tensor:
        y = self.act(F.conv2d(channel_norm(x, self.norm2), self.pwconv1.weight[:, :, None, None], self.pwconv1.bias))
        w, b = self.pwconv2.weight, self.pwconv2.bias
        if gamma is not None:
            w, b = w * gamma[:, None], b * gamma
        y = F.conv2d(y, w[:, :, None, None], b)
        return y if residual is None else residual + y


class _ExportGlobalFilter(GlobalLocalFilter):
    """GlobalLocalFilter with its halves interleaved in (B, C, H, W) (one stack); subclasses give `global_filter`."""

    @staticmethod
    def interleave(local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        B, C, H, W = glob.shape
        return torch.stack((local, glob), dim=2).reshape(B, 2 * C, H, W)  # channel 2c + j: local, global, local, ...


def _share_layers(new: GlobalLocalFilter, gf: GlobalLocalFilter) -> None:
    """`new` (not yet initialised) becomes a module with `gf`'s LayerNorms, depth-wise conv and complex weight."""
    nn.Module.__init__(new)
    new.dw, new.pre_norm, new.post_norm, new.complex_weight = gf.dw, gf.pre_norm, gf.post_norm, gf.complex_weight
    new._filter_cache = {}


class MatmulGlobalFilter(_ExportGlobalFilter):
    """A GlobalLocalFilter for one fixed input size, its 2-D DFT as matrix products.

    In: (B, C, H, W) with the (H, W) it was built for. Out: (B, C, H, W), equal (to float32 rounding) to
    the GlobalLocalFilter it was built from, whose modules and weight it shares; the spectral filter
    (resized to H x W as the layer does) and the DFT matrices are fixed buffers.
    """

    def __init__(self, gf: GlobalLocalFilter, height: int, width: int):
        _share_layers(self, gf)
        self.size = (height, width)
        with torch.no_grad():
            filt = gf.spectral_filter(height, width).detach().to(torch.complex128).cpu()  # (C, H, W//2 + 1)
        device = gf.complex_weight.device
        wr = width // 2 + 1
        h, m = torch.arange(height, dtype=torch.float64), torch.arange(height, dtype=torch.float64)
        angle_h = 2 * math.pi * torch.outer(h, m) / height
        n, k = torch.arange(width, dtype=torch.float64), torch.arange(wr, dtype=torch.float64)
        angle_w = 2 * math.pi * torch.outer(n, k) / width  # (W, Wr)
        # irfft weights: the bins between DC and Nyquist stand for two conjugate bins of the full spectrum
        twice = torch.full((wr,), 2.0, dtype=torch.float64)
        twice[0] = 1.0
        if width % 2 == 0:
            twice[-1] = 1.0
        norm_h, norm_w = 1 / math.sqrt(height), 1 / math.sqrt(width)  # norm="ortho" both ways
        buffers = {
            "ch": torch.cos(angle_h) * norm_h,  # (H, H), symmetric
            "sh": torch.sin(angle_h) * norm_h,
            "fw": torch.cat((torch.cos(angle_w), -torch.sin(angle_w)), 1) * norm_w,  # (W, 2 Wr): real | imag of rfft
            "bc": (torch.cos(angle_w) * twice).T * norm_w,  # (Wr, W)
            "bs": (torch.sin(angle_w) * twice).T * norm_w,
            "gr": filt.real,  # (C, H, Wr)
            "gi": filt.imag,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float().contiguous().to(device), persistent=False)

    def global_filter(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if not torch.jit.is_tracing() and (H, W) != self.size:  # while tracing, shapes are the example's
            raise ValueError(f"this exported Global Filter was built for a {self.size} input, got {(H, W)}")
        # float32 throughout, as the FFT form runs it (buffers may have been halved with the model)
        ch, sh, fw, bc, bs, gr, gi = (t.float() for t in (self.ch, self.sh, self.fw, self.bc, self.bs, self.gr, self.gi))
        xr, xi = torch.matmul(x.float(), fw).chunk(2, dim=-1)  # rfft along W
        ur, ui = filter_along_h(xr, xi, ch, sh, gr, gi)
        return torch.matmul(ur, bc) - torch.matmul(ui, bs)  # inverse rfft along W


class DynamicGlobalFilter(_ExportGlobalFilter):
    """A GlobalLocalFilter for any input size, its DFT and its filter resize as matrix products.

    In: (B, C, H, W), any H and W. Out: (B, C, H, W), equal (to float32 rounding) to the GlobalLocalFilter
    it was built from, whose modules it shares. The DFT matrices and the bilinear (align_corners=True)
    resize of the complex filter are built in the graph from the input's shape with arange/cos/sin (the
    layer's F.interpolate would trace to the example's size), so a traced export (ONNX or OpenVINO with
    dynamic axes, TorchScript) keeps working at every size. Slower than MatmulGlobalFilter, which has
    them as constants for one size.
    """

    def __init__(self, gf: GlobalLocalFilter):
        _share_layers(self, gf)
        self.register_buffer("weight", gf.complex_weight.detach().float().permute(3, 0, 1, 2).contiguous(), persistent=False)

    @staticmethod
    def resize_matrix(n_out: torch.Tensor, n_in: int) -> torch.Tensor:
        """(n_out, n_in) bilinear weights with align_corners=True: output i samples input i * (n_in-1)/(n_out-1)."""
        i = torch.arange(n_out, dtype=torch.float32) if not isinstance(n_out, torch.Tensor) else n_out
        last = (i[-1:]).clamp(min=1.0)  # n_out - 1, at least 1 (a single output row samples input 0)
        pos = i[:, None] * ((n_in - 1) / last)
        j = torch.arange(n_in, dtype=torch.float32)[None, :]
        return (1 - (pos - j).abs()).clamp(min=0.0)

    @staticmethod
    def dft(a: torch.Tensor, b: torch.Tensor, n: torch.Tensor):
        """(cos, sin) of 2 pi a b / n for integer index vectors a, b; the product is reduced mod n first (exact angles)."""
        k = torch.remainder(a[:, None] * b[None, :], n).to(torch.float32)
        angle = k * (2 * math.pi) / n.to(torch.float32)
        return torch.cos(angle), torch.sin(angle)

    def global_filter(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        hh = torch.arange(H, device=x.device)  # index vectors: their lengths carry the (dynamic) sizes
        ww = torch.arange(W, device=x.device)
        kk = ww[: W // 2 + 1]  # rfft bins 0..W//2
        n_h, n_w = hh[-1:] + 1, ww[-1:] + 1
        # the complex filter resized to (H, W//2 + 1), as GlobalLocalFilter.spectral_filter does
        rh = self.resize_matrix(hh.to(torch.float32), self.weight.shape[2])  # (H, h)
        rw = self.resize_matrix(kk.to(torch.float32), self.weight.shape[3])  # (Wr, w)
        filt = torch.matmul(torch.matmul(rh, self.weight.float()), rw.T)  # (2, C, H, Wr), float32 as the FFT form
        gr, gi = filt[0], filt[1]
        ch, sh = self.dft(hh, hh, n_h)
        cw, sw = self.dft(ww, kk, n_w)  # (W, Wr)
        norm_h, norm_w = torch.rsqrt(n_h.to(torch.float32)), torch.rsqrt(n_w.to(torch.float32))
        ch, sh, cw, sw = ch * norm_h, sh * norm_h, cw * norm_w, sw * norm_w
        twice = torch.where((kk == 0) | (2 * kk == n_w), 1.0, 2.0).to(torch.float32)  # irfft: conjugate pairs count twice
        g = x.to(torch.float32)
        xr, xi = torch.matmul(g, cw), -torch.matmul(g, sw)  # rfft along W
        ur, ui = filter_along_h(xr, xi, ch, sh, gr, gi)
        return torch.matmul(ur, (cw * twice).T) - torch.matmul(ui, (sw * twice).T)  # inverse rfft along W




def has_global_filter(model: nn.Module) -> bool:
    """True when the model holds a Global Filter (its export size is then fixed)."""
    return any(isinstance(m, GlobalLocalFilter) for m in model.modules())


def exportable_model(model: nn.Module, im: torch.Tensor, dynamic: bool = False) -> nn.Module:
    """A copy of `model` ready to trace on inputs shaped like `im`: eval, fused, head in export mode, export forms.

    In: a detection Model, an example input (B, 3, H, W), and whether the export takes any input size.
    Out: a new module whose forward returns only the predictions (B, 4 + nc, N); the original model is
    not touched. Global Filters become MatmulGlobalFilter (fixed to the sizes `im` gives them) or, when
    `dynamic`, DynamicGlobalFilter (any size); LayerNorm2d and HorBlock take their (B, C, H, W) forms.
    """
    model = deepcopy(model).float().eval()
    if hasattr(model, "fuse"):
        model = model.fuse(verbose=False)
    for p in model.parameters():
        p.requires_grad = False
    for m in model.modules():
        if isinstance(m, (AnchorDetect, Detect)):
            m.export = True  # instance attribute: other models in this process keep returning (y, raw)
            m.format = "onnx"
    sizes = {}
    gfs = [m for m in model.modules() if isinstance(m, GlobalLocalFilter)]
    if gfs and dynamic:
        replace = {m: DynamicGlobalFilter(m) for m in gfs}
    elif gfs:  # learn each Global Filter's input size at this export size
        hooks = [m.register_forward_pre_hook(lambda m, x: sizes.__setitem__(m, tuple(x[0].shape[-2:]))) for m in gfs]
        with torch.no_grad():
            model(im)
        for h in hooks:
            h.remove()
        replace = {m: MatmulGlobalFilter(m, *sizes[m]) for m in gfs}
    if gfs:
        for parent in list(model.modules()):
            for name, child in parent.named_children():
                if child in replace:
                    setattr(parent, name, replace[child])
    for m in model.modules():  # the copy's own modules take the export forms' forward: same parameters, same state
        if type(m) is LayerNorm2d:
            m.__class__ = ChannelNorm
        elif type(m) is HorBlock:
            m.__class__ = ExportHorBlock
    return model
