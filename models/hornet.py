"""HorNet layers (Rao et al., NeurIPS 2022) as YOLOv5 YAML modules.

gnConv, its Global Filter, the HorBlock, the CSP form C3HB, the stem and downsampling layers, and the
YOLOAir-compatible `HorNet` row that builds one stage. Parameter names and shapes are the official
ones (`proj_in`, `dwconv`, `pws.i`, `proj_out`, `norm1`, `gnconv`, `norm2`, `pwconv1`, `pwconv2`,
`gamma1`, `gamma2`, ...) so that official state_dicts load as they are.

Every constructor takes the input width `c1` first and the output width `c2` second, as YOLOv5's
modules do; the parser fills `c1` in from the row's input.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import C3

from models.registry import register, row_width, row_width_repeats_inside

__all__ = ("LayerNorm2d", "GlobalLocalFilter", "gnConv", "HorBlock", "C3HB", "HorStem", "HorDown", "HorNet")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor: the paper's 'channels_first' LayerNorm.

    Runs the fused layer_norm kernel on a channels-last view instead of computing mean and variance by
    hand; `weight` and `bias` have shape (C,) as in the official checkpoints.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class GlobalLocalFilter(nn.Module):
    """The Global Filter (GF): (B, C, H, W) -> (B, C, H, W), any H and W.

    After a LayerNorm, half of the channels go through a 3x3 depth-wise conv and the other half are
    multiplied in the 2-D Fourier domain by a learnable complex filter of size h x w (the rfft2 size,
    so h x w = 14 x 8 fits a 14 x 14 input); for other input sizes the filter is bilinearly resized.
    The two halves are interleaved channel by channel (local, global, local, ...), then LayerNorm again.
    The FFT runs in float32 even under autocast: half-precision FFTs only take power-of-two sizes.
    """

    def __init__(self, dim: int, h: int = 14, w: int = 8):
        super().__init__()
        if dim % 2:
            raise ValueError(f"the Global Filter needs an even number of channels, got {dim}")
        self.dw = nn.Conv2d(dim // 2, dim // 2, kernel_size=3, padding=1, bias=False, groups=dim // 2)
        self.complex_weight = nn.Parameter(torch.empty(dim // 2, h, w, 2))
        nn.init.trunc_normal_(self.complex_weight, std=0.02)
        self.pre_norm = LayerNorm2d(dim)
        self.post_norm = LayerNorm2d(dim)

    def spectral_filter(self, height: int, width: int) -> torch.Tensor:
        """The complex filter resized to an rfft2 of a height x width input: (C/2, height, width//2 + 1)."""
        weight = self.complex_weight.float()
        size = (height, width // 2 + 1)
        if weight.shape[1:3] != size:
            weight = F.interpolate(weight.permute(3, 0, 1, 2), size=size, mode="bilinear", align_corners=True)
            weight = weight.permute(1, 2, 3, 0)
        return torch.view_as_complex(weight.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_norm(x)
        local, glob = x.chunk(2, dim=1)
        local = self.dw(local)
        B, C, H, W = glob.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(glob.float(), dim=(2, 3), norm="ortho")
            glob = torch.fft.irfft2(spectrum * self.spectral_filter(H, W), s=(H, W), dim=(2, 3), norm="ortho")
        x = torch.stack((local, glob.to(local.dtype)), dim=2).reshape(B, 2 * C, H, W)
        return self.post_norm(x)


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@register("gnConv", "gnconv", row=row_width)
class gnConv(nn.Module):
    """Recursive gated convolution: (B, c1, H, W) -> (B, c2, H, W), order-n spatial interactions.

    proj_in (1x1, c1 -> 2*c2) splits into p0 (C_0 channels) and q (C_0 + ... + C_{n-1} channels) with
    C_k = c2 / 2^(n-1-k); one depth-wise filter (k x k conv, or 'gf' for the Global Filter) runs over q,
    scaled by s and split into q_0..q_{n-1}; then p = p0 * q_0 and p = pws[k-1](p) * q_k; proj_out last.
    """

    def __init__(self, c1: int, c2: int, order: int = 3, filter=7, s: float = 1 / 3, h: int = 14, w: int = 8):
        super().__init__()
        _check_int("c1", c1)
        _check_int("c2", c2)
        self.order = _check_int("order", order)
        if c2 % 2 ** (order - 1):
            raise ValueError(f"gnConv width {c2} must be divisible by 2^(order-1) = {2 ** (order - 1)} for order {order}")
        if not isinstance(s, (int, float)) or isinstance(s, bool):
            raise ValueError(f"gnConv scale s must be a number, got {s!r}")
        self.dims = [c2 // 2**i for i in range(order)][::-1]  # coarse to fine: C_0 is the smallest
        self.scale = float(s)
        self.proj_in = nn.Conv2d(c1, 2 * c2, 1)
        if isinstance(filter, str) and filter.lower() == "gf":
            self.dwconv = GlobalLocalFilter(sum(self.dims), _check_int("h", h), _check_int("w", w))
        elif isinstance(filter, int) and not isinstance(filter, bool) and filter > 0 and filter % 2:
            self.dwconv = nn.Conv2d(sum(self.dims), sum(self.dims), filter, padding=filter // 2, groups=sum(self.dims))
        else:
            raise ValueError(f"gnConv filter must be an odd kernel size or 'gf', got {filter!r}")
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))
        self.proj_out = nn.Conv2d(c2, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = self.proj_in(x).split((self.dims[0], sum(self.dims)), dim=1)
        q = (self.dwconv(q) * self.scale).split(self.dims, dim=1)
        p = p * q[0]
        for pw, qk in zip(self.pws, q[1:]):
            p = pw(p) * qk
        return self.proj_out(p)


class DropPath(nn.Module):
    """Stochastic depth: zeroes a residual branch for whole samples with probability `p` in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


@register("HorBlock", row=row_width)
class HorBlock(nn.Module):
    """HorNet block: (B, c1, H, W) -> (B, c2, H, W).

    x + gamma1 * gnConv(LN(x)), then x + gamma2 * MLP(LN(x)) with a 4x GELU MLP; layer-scale gammas
    start at 1e-6. When c1 != c2 a 1x1 conv (`proj`) first maps the input to c2 channels.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        order: int = 3,
        filter=7,
        s: float = 1 / 3,
        h: int = 14,
        w: int = 8,
        drop_path: float = 0.0,
        layer_scale: float = 1e-6,
    ):
        super().__init__()
        self.proj = nn.Conv2d(_check_int("c1", c1), c2, 1) if c1 != c2 else nn.Identity()
        self.norm1 = LayerNorm2d(c2)
        self.gnconv = gnConv(c2, c2, order, filter, s, h, w)
        self.norm2 = nn.LayerNorm(c2, eps=1e-6)
        self.pwconv1 = nn.Linear(c2, 4 * c2)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * c2, c2)
        self.gamma1 = nn.Parameter(torch.full((c2,), float(layer_scale)))
        self.gamma2 = nn.Parameter(torch.full((c2,), float(layer_scale)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        x = x + self.drop_path(self.gamma1[:, None, None] * self.gnconv(self.norm1(x)))
        y = x.permute(0, 2, 3, 1)  # the MLP runs channels-last, as nn.Linear wants
        y = self.gamma2 * self.pwconv2(self.act(self.pwconv1(self.norm2(y))))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


@register("C3HB", row=row_width_repeats_inside)
class C3HB(C3):
    """CSP bottleneck with HorBlocks inside: (B, c1, H, W) -> (B, c2, H, W), YOLOv5's C3 arguments.

    `shortcut` is accepted for C3 compatibility; HorBlocks are residual either way.
    """

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, order=3, filter=7):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(HorBlock(c_, c_, order, filter) for _ in range(n)))


@register("HorStem", row=row_width)
class HorStem(nn.Sequential):
    """HorNet stem: (B, c1, H, W) -> (B, c2, H/4, W/4), a 4x4 stride-4 conv and a LayerNorm.

    Keys `0.*`/`1.*` match the official `downsample_layers.0`.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__(nn.Conv2d(c1, c2, kernel_size=4, stride=4), LayerNorm2d(c2))


@register("HorDown", row=row_width)
class HorDown(nn.Sequential):
    """HorNet downsampling: (B, c1, H, W) -> (B, c2, H/2, W/2), a LayerNorm and a 2x2 stride-2 conv.

    Keys `0.*`/`1.*` match the official `downsample_layers.1..3`.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__(LayerNorm2d(c1), nn.Conv2d(c1, c2, kernel_size=2, stride=2))


def row_hornet_stage(cls, args, n, c_in, ctx):
    """`[c2, index, in_chans, depths, dim_base]` -> HorNet(c1, c2, index, ...): one stage per row."""
    if n != 1:
        raise ValueError(f"a HorNet row builds one stage, its depth comes from `depths`: set number to 1, not {n}")
    c2 = ctx.width(args[0] if args else None)
    return cls(c_in, c2, *args[1:]), c2


@register("HorNet", row=row_hornet_stage)
class HorNet(nn.Module):
    """One HorNet stage as a YOLOAir-style row: (B, c1, H, W) -> (B, c2, H/s, W/s).

    Row args `[c2, index, in_chans, depths, dim_base]`: stage `index` (0..3) is its downsampling layer
    (the stem for index 0, stride 4; otherwise stride 2) followed by depths[index] HorBlocks of gnConv
    order index + 2. Only this stage is built: one row, one stage, no unused weights. `in_chans` and
    `dim_base` are accepted for compatibility; widths come from the row's input and `c2`.
    """

    def __init__(self, c1: int, c2: int, index: int = 0, in_chans: int = 3, depths=(2, 3, 18, 2), dim_base: int = 64):
        super().__init__()
        if isinstance(index, bool) or index not in (0, 1, 2, 3):
            raise ValueError(f"HorNet stage index must be 0, 1, 2 or 3, got {index!r}")
        if not isinstance(depths, (list, tuple)) or len(depths) != 4:
            raise ValueError(f"HorNet depths must be a list of 4 integers, got {depths!r}")
        self.index = index
        self.downsample = (HorStem if index == 0 else HorDown)(c1, c2)
        self.blocks = nn.Sequential(*(HorBlock(c2, c2, order=index + 2) for _ in range(_check_int("depth", depths[index]))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def set_drop_path(model: nn.Module, rate: float) -> None:
    """Stochastic depth rising linearly from 0 to `rate` over the model's HorBlocks, in network order."""
    blocks = [m for m in model.modules() if isinstance(m, HorBlock)]
    for i, block in enumerate(blocks):
        block.drop_path.p = rate * i / max(len(blocks) - 1, 1)

from models.hornet_weights import load_hornet_weights  # noqa: E402,F401  (re-exported)
