"""HorNet layers (Rao et al., NeurIPS 2022) as YOLOv5 YAML modules, in plain PyTorch.

gnConv, its Global Filter, the HorBlock, the CSP form C3HB, the stem and downsampling layers, and the
YOLOAir-compatible `HorNet` row that builds one stage. Parameter names and shapes are the official
ones (`proj_in`, `dwconv`, `pws.i`, `proj_out`, `norm1`, `gnconv`, `norm2`, `pwconv1`, `pwconv2`,
`gamma1`, `gamma2`, ...) so that official state_dicts load as they are.

Every constructor takes the input width `c1` first and the output width `c2` second, as YOLOv5's
modules do; the parser fills `c1` in from the row's input. gnConv and HorBlock write their formulas once and
run their steps (`PlainOps`) from models/cpu_kernels.py instead on CPUs in float32: the same arithmetic, faster.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from ultralytics.nn.modules import C3, Conv

from models import cpu_kernels
from models.registry import register, row_norm, row_width, row_width_repeats_inside
from models.safe_yaml import short

__all__ = ("LayerNorm2d", "GlobalLocalFilter", "gnConv", "HorBlock", "C3HB", "HorStem", "ConvStem", "HorDown", "HorNet")


@register("LayerNorm2d", row=row_norm)
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor: the paper's 'channels_first' LayerNorm.

    Runs the fused layer_norm kernel on a channels-last view instead of computing mean and variance by
    hand; `weight` and `bias` have shape (C,) as in the official checkpoints. Its output is channels-last
    memory, which the layers after it keep. Measured on 8x128x40x40, 2 threads (bench_layers --ablation):
    forward / forward+backward 4.7 / 13.4 ms by hand (var_mean + rsqrt: 8.4 / 16.4), 1.4 / 6.3 ms with
    the kernel from an NCHW input (one permute copy), 0.6 / 2.5 ms from a channels-last input (free view).
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


def scaled_call(module: nn.Module, x: torch.Tensor, scale) -> torch.Tensor:
    """`module(x)` with its output channels multiplied by `scale` (a number or one value per channel).

    In training the scale goes onto the module's weight and bias (a few thousand numbers) instead of the
    output (millions at batch 8): the same result up to rounding, one full-tensor multiply and its backward
    fewer, gradients still reach the scale. functional_call runs the module itself, so its hooks (thop's
    FLOP count, feature taps) fire. When the output is the smaller tensor (batch-1 inference: a 14x14x256
    map against pwconv2's 256x1024 weight), scaling the output is less work, so that is done instead.
    """
    channels_last_dim = isinstance(module, nn.Linear)  # Linear: (..., C); convs and LayerNorm2d: (B, C, H, W)
    c_in = x.shape[-1] if channels_last_dim else x.shape[1]
    if module.weight.numel() >= x.numel() // c_in * module.weight.shape[0]:
        if isinstance(scale, torch.Tensor) and not channels_last_dim:
            scale = scale.view(-1, 1, 1)
        return module(x) * scale
    if isinstance(scale, torch.Tensor):
        w_scale = scale.view(-1, *(1,) * (module.weight.ndim - 1))
    else:
        w_scale = scale
    return functional_call(module, {"weight": module.weight * w_scale, "bias": module.bias * scale}, (x,))


def resize_filter(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A Global Filter weight (C, h, w, 2) resized to (C, *size, 2): bilinear, align_corners=True, in float32."""
    w = F.interpolate(weight.float().permute(3, 0, 1, 2), size=size, mode="bilinear", align_corners=True)
    return w.permute(1, 2, 3, 0).contiguous()


class GlobalLocalFilter(nn.Module):
    """The Global Filter (GF): (B, C, H, W) -> (B, C, H, W), any H and W.

    After a LayerNorm, half of the channels go through a 3x3 depth-wise conv and the other half are
    multiplied in the 2-D Fourier domain by a learnable complex filter of size h x w (the rfft2 size,
    so h x w = 14 x 8 fits a 14 x 14 input); for other input sizes the filter is bilinearly resized.
    The two halves are interleaved channel by channel (local, global, local, ...), then LayerNorm again.
    The FFT runs in float32 even under autocast: half-precision FFTs only take power-of-two sizes.

    Speed (see benchmarks/bench_layers.py): the two halves are interleaved by one copy straight into a
    channels-last (B, H, W, C) buffer, which is what the fused layer_norm kernel of `post_norm` reads, so
    no permute copy follows; gnConv's scale `s` rides on post_norm's affine (`forward(x, scale)`) instead
    of a separate full-tensor multiply; in inference the resized complex filter is cached per input size.
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
        self._filter_cache: dict = {}  # (height, width, version, data_ptr) -> resized filter, inference only

    def train(self, mode: bool = True):
        self._filter_cache = {}  # weights are about to change (or were loaded): never serve a stale filter
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._filter_cache = {}  # .to(device/dtype), .half(), ...: the cached copy would be on the old device
        return super()._apply(fn, *args, **kwargs)

    def spectral_filter(self, height: int, width: int) -> torch.Tensor:
        """The complex filter resized to an rfft2 of a height x width input: (C/2, height, width//2 + 1)."""
        weight = self.complex_weight
        size = (height, width // 2 + 1)
        if weight.shape[1:3] == size:
            return torch.view_as_complex(weight.float().contiguous())  # a view: nothing to cache
        # Inference on a fixed image size resizes the same filter every call: cache it, keyed by the size and
        # the parameter's version counter (bumped by any in-place update: optimizer step, load_state_dict).
        cacheable = not self.training and not (torch.is_grad_enabled() and weight.requires_grad)
        key = (height, width, weight._version, weight.data_ptr())
        if cacheable and key in self._filter_cache:
            return self._filter_cache[key]
        w = torch.view_as_complex(resize_filter(weight, size))
        if cacheable:
            if len(self._filter_cache) >= 8:  # a few image sizes at most (rect inference): drop the oldest
                self._filter_cache.pop(next(iter(self._filter_cache)))
            self._filter_cache[key] = w
        return w

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The filtered (B, C, H, W) tensor times `scale` (gnConv's s, folded into post_norm's affine)."""
        x = self.pre_norm(x)  # channels-last memory: the slices below are cheap views
        local, glob = x.chunk(2, dim=1)
        local = self.dw(local)
        y = self.interleave(local, self.global_filter(glob).to(local.dtype))
        return self.post_norm(y) if scale == 1.0 else scaled_call(self.post_norm, y, scale)

    @staticmethod
    def interleave(local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        """Two (B, C, H, W) halves as one (B, 2C, H, W) tensor, channel 2c + j from half j: local, global, local, ...

        One copy straight into channels-last memory, where post_norm reads it as a free view.
        """
        B, C, H, W = glob.shape
        y = torch.stack((local.permute(0, 2, 3, 1), glob.permute(0, 2, 3, 1)), dim=4)
        return y.reshape(B, H, W, 2 * C).permute(0, 3, 1, 2)

    def global_filter(self, x: torch.Tensor) -> torch.Tensor:
        """irfft2(rfft2(x) * filter) over H and W, in float32 (half-precision FFTs only take power-of-two sizes)."""
        H, W = x.shape[-2:]
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(x.float(), dim=(2, 3), norm="ortho")
            return torch.fft.irfft2(spectrum * self.spectral_filter(H, W), s=(H, W), dim=(2, 3), norm="ortho")


def gate(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """gnConv's gating p * q; in place when no gradient is recorded (inference: one full-size tensor fewer)."""
    return p.mul_(q) if not torch.is_grad_enabled() and p.dtype == q.dtype else p * q


class PlainOps:
    """The steps of gnConv and HorBlock in plain PyTorch, for channels-last (B, C, H, W) tensors.

    models/cpu_kernels.py defines the same five functions, faster on CPUs in float32; each layer picks one set per
    call (`cpu_kernels.applies`). The formulas around them (the recursion, the residuals) are written once, in
    gnConv.forward and HorBlock.forward.
    """

    @staticmethod
    def project_in(g: "gnConv", x: torch.Tensor):
        """proj_in(x) split into p0 (C_0 channels) and q (C_0 + ... + C_{n-1})."""
        return g.proj_in(x).split((g.dims[0], sum(g.dims)), dim=1)

    @staticmethod
    def filter(g: "gnConv", q: torch.Tensor) -> torch.Tensor:
        """The depth-wise filter times s, s applied to the (small) weights rather than to the output."""
        f, s = g.dwconv, g.scale
        if isinstance(f, GlobalLocalFilter):  # the export forms too: they are GlobalLocalFilters
            return f(q, s)
        return f(q) if s == 1.0 else scaled_call(f, q, s)

    @staticmethod
    def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """One of the 1x1 convs pws between the gating steps."""
        return conv(x)

    @staticmethod
    def project_out(g: "gnConv", p: torch.Tensor, gamma=None, residual=None) -> torch.Tensor:
        """proj_out(p), times gamma (folded into its weights), plus residual."""
        out = g.proj_out(p) if gamma is None else scaled_call(g.proj_out, p, gamma)
        return out if residual is None else residual + out

    @staticmethod
    def mlp(block: "HorBlock", x: torch.Tensor, gamma=None, residual=None) -> torch.Tensor:
        """HorBlock's MLP on the free channels-last view of x, times gamma (folded into pwconv2), plus residual."""
        y = block.act(block.pwconv1(block.norm2(x.permute(0, 2, 3, 1))))
        y = (block.pwconv2(y) if gamma is None else scaled_call(block.pwconv2, y, gamma)).permute(0, 3, 1, 2)
        return y if residual is None else residual + y


MAX_STAGE_DEPTH = 1000  # HorBlocks in one HorNet stage row


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {short(value)}")
    return value


@register("gnConv", row=row_width)
class gnConv(nn.Module):
    """Recursive gated convolution: (B, c1, H, W) -> (B, c2, H, W), order-n spatial interactions.

    proj_in (1x1, c1 -> 2*c2) splits into p0 (C_0 channels) and q (C_0 + ... + C_{n-1} channels) with
    C_k = c2 / 2^(n-1-k); one depth-wise filter (k x k conv, or 'gf' for the Global Filter) runs over q,
    scaled by s and split into q_0..q_{n-1}; then p = p0 * q_0 and p = pws[k-1](p) * q_k; proj_out last.

    Speed (see benchmarks/bench_layers.py): everything runs in channels-last memory, where CPU depth-wise
    convolutions are several times faster than in NCHW (above all their weight gradient); s is folded
    into the filter's weight and bias (or GF's post_norm affine) instead of multiplying the output;
    `forward(x, gamma)` folds a HorBlock's layer scale into proj_out the same way. `fuse()` makes the
    folding of s permanent for inference. Its steps run as `PlainOps` or, on CPUs in float32, models/cpu_kernels.py.
    """

    def __init__(self, c1: int, c2: int, order: int = 5, filter=7, s: float = 1.0, h: int = 14, w: int = 8):
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

    def forward(self, x: torch.Tensor, gamma: torch.Tensor | None = None, residual: torch.Tensor | None = None):
        """gnConv(x), times the per-channel `gamma` and plus `residual` when given (a HorBlock's layer scale and skip)."""
        x = x.contiguous(memory_format=torch.channels_last)  # a no-op when it already is
        ops = cpu_kernels if cpu_kernels.applies(x, self) else PlainOps
        p, q = ops.project_in(self, x)
        q = ops.filter(self, q).split(self.dims, dim=1)
        p = gate(p, q[0])
        for pw, qk in zip(self.pws, q[1:]):
            p = gate(ops.pointwise(pw, p), qk)
        return ops.project_out(self, p, gamma, residual)

    @torch.no_grad()
    def fuse(self) -> "gnConv":
        """Fold s into the filter's weights for inference (then `scale` is 1); outputs unchanged."""
        if self.scale != 1.0:
            f = self.dwconv.post_norm if isinstance(self.dwconv, GlobalLocalFilter) else self.dwconv
            f.weight.mul_(self.scale)
            f.bias.mul_(self.scale)
            self.scale = 1.0
        return self


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


def row_yoloair_gnconv(cls, args, n, c_in, ctx):
    """YOLOAir's `gnconv` row `[dim, order=5, gflayer=None, h=14, w=8, s=1.0]`, as YOLOAir builds it.

    The layer keeps its input width (YOLOAir passes `dim` unscaled and its YAMLs set it to the input width;
    the input width is what works at any width_multiple). A `gflayer` name means the Global Filter.
    """
    order, gflayer, h, w, s = (list(args[1:]) + [5, None, 14, 8, 1.0][len(args[1:]):])[:5]
    filter = 7 if gflayer is None else "gf"
    layers = [cls(c_in, c_in, order, filter, s, h, w) for _ in range(n)]
    return (layers[0] if n == 1 else nn.Sequential(*layers)), c_in


register("gnconv", row=row_yoloair_gnconv)(gnConv)


@register("HorBlock", row=row_width)
class HorBlock(nn.Module):
    """HorNet block: (B, c1, H, W) -> (B, c2, H, W).

    x + gamma1 * gnConv(LN(x)), then x + gamma2 * MLP(LN(x)) with a 4x GELU MLP; layer-scale gammas
    start at 1e-6. When c1 != c2 a 1x1 conv (`proj`) first maps the input to c2 channels.

    Speed (see benchmarks/bench_layers.py): the block keeps its tensors in channels-last memory, so the
    MLP's channels-last view is free (no permute copies) and both LayerNorms are the fused kernel; the
    gammas are folded into proj_out and pwconv2 (weights, not activations), in training too. `fuse()`
    makes that folding permanent for inference. The MLP runs as `PlainOps.mlp` or, on CPUs in float32, cpu_kernels.mlp.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        order: int = 5,
        filter=7,
        s: float = 1.0,
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
        self.fused = False  # True once fuse() has moved the gammas into proj_out and pwconv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).contiguous(memory_format=torch.channels_last)
        gamma1, gamma2 = (None, None) if self.fused else (self.gamma1, self.gamma2)
        if self.training and self.drop_path.p:  # the skip waits for the branch's random mask
            x = x + self.drop_path(self.gnconv(self.norm1(x), gamma1))
            return x + self.drop_path(self.mlp(x, gamma2))
        x = self.gnconv(self.norm1(x), gamma1, residual=x)
        return self.mlp(x, gamma2, residual=x)

    def mlp(self, x: torch.Tensor, gamma: torch.Tensor | None = None, residual: torch.Tensor | None = None):
        """gamma * pwconv2(GELU(pwconv1(norm2(x)))) (+ residual) for a channels-last (B, C, H, W) x."""
        fast = cpu_kernels.applies(x, self, (self.pwconv1, self.act, self.pwconv2))  # norm2 runs as a module either way
        return (cpu_kernels if fast else PlainOps).mlp(self, x, gamma, residual)

    @torch.no_grad()
    def fuse(self) -> "HorBlock":
        """Fold s and the layer-scale gammas into neighbouring weights for inference; outputs unchanged."""
        self.gnconv.fuse()
        if not self.fused:
            out, mlp = self.gnconv.proj_out, self.pwconv2
            out.weight.mul_(self.gamma1[:, None, None, None])
            out.bias.mul_(self.gamma1)
            mlp.weight.mul_(self.gamma2[:, None])
            mlp.bias.mul_(self.gamma2)
            self.gamma1.fill_(1.0)
            self.gamma2.fill_(1.0)
            self.fused = True
        return self


@register("C3HB", row=row_width_repeats_inside)
class C3HB(C3):
    """CSP bottleneck with HorBlocks inside: (B, c1, H, W) -> (B, c2, H, W), YOLOv5's C3 arguments.

    `shortcut` is accepted for C3 compatibility; HorBlocks are residual either way.
    """

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, order=5, filter=7, s=1.0):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(HorBlock(c_, c_, order, filter, s) for _ in range(n)))


@register("HorStem", row=row_width)
class HorStem(nn.Sequential):
    """HorNet stem: (B, c1, H, W) -> (B, c2, H/4, W/4), a 4x4 stride-4 conv and a LayerNorm.

    Keys `0.*`/`1.*` match the official `downsample_layers.0`.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__(nn.Conv2d(c1, c2, kernel_size=4, stride=4), LayerNorm2d(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last in: the conv writes channels-last and the LayerNorm reads it as a free view. Measured on
        # 2 CPU threads, 1x3x640x640: 64 ms with this conversion against 98 ms from NCHW.
        return super().forward(x.contiguous(memory_format=torch.channels_last))


@register("ConvStem", row=row_width)
class ConvStem(nn.Sequential):
    """YOLOv5's stem in HorStem's place: (B, c1, H, W) -> (B, c2, H/4, W/4), Conv 6x6/2 to c2/2, then Conv 3x3/2.

    Not in the paper: trained from scratch on small sets, a HorNet backbone behind this stem learns far sooner
    than behind the 4x4 patchify one (docs/accuracy.md). `[-1, 1, HorStem, [c2]]` is the paper's, one word away.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__(Conv(c1, c2 // 2, 6, 2, 2), Conv(c2 // 2, c2, 3, 2))


@register("HorDown", row=row_width)
class HorDown(nn.Sequential):
    """HorNet downsampling: (B, c1, H, W) -> (B, c2, H/2, W/2), a LayerNorm and a 2x2 stride-2 conv.

    Keys `0.*`/`1.*` match the official `downsample_layers.1..3`.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__(LayerNorm2d(c1), nn.Conv2d(c1, c2, kernel_size=2, stride=2))


def row_hornet_stage(cls, args, n, c_in, ctx):
    """`[c2, index, in_chans, depths, dim_base]` -> HorNet(c1, c2, index, ...): one stage per row, c2 = dim_base * 2^index."""
    if n != 1:
        raise ValueError(f"a HorNet row builds one stage, its depth comes from `depths`: set number to 1, not {n}")
    c2, index, _, _, dim_base = (list(args) + [None, 0, 3, (2, 3, 18, 2), 64][len(args):])[:5]
    if isinstance(index, int) and isinstance(dim_base, int) and c2 != dim_base * 2**index:
        raise ValueError(f"stage {index} of a HorNet with dim_base {dim_base} is {dim_base * 2**index} wide, the row says {c2!r}")
    return cls(c_in, c2, *args[1:]), c2  # the official width, not scaled by width_multiple (as in YOLOAir)


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
            raise ValueError(f"HorNet depths must be a list of 4 integers, got {short(depths)}")
        self.index = index
        self.downsample = (HorStem if index == 0 else HorDown)(c1, c2)
        depth = _check_int("depth", depths[index])
        if depth > MAX_STAGE_DEPTH:
            raise ValueError(f"HorNet depths[{index}] is {depth}: a stage may have at most {MAX_STAGE_DEPTH} blocks (HorNet-L has 18)")
        self.blocks = nn.Sequential(*(HorBlock(c2, c2, order=index + 2, s=1 / 3) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


# The modules whose parameters hyp key hornet_lr_scale slows down; C3HB's own convs are YOLOv5's (BatchNorm): not in it
HORNET_LAYERS = (gnConv, HorBlock, HorStem, HorDown)


def set_layer_scale(model: nn.Module, value: float) -> int:
    """Start every HorBlock's layer scales (gamma1, gamma2) at `value`; returns how many blocks were set.

    The paper's 1e-6 makes each block an identity map at the start (made for deep ImageNet training); hyp key
    `layer_scale` calls this with other values (measured from scratch in docs/accuracy.md).
    """
    blocks = [m for m in model.modules() if isinstance(m, HorBlock)]
    with torch.no_grad():
        for block in blocks:
            block.gamma1.fill_(value)
            block.gamma2.fill_(value)
    return len(blocks)


def set_drop_path(model: nn.Module, rate: float) -> None:
    """Stochastic depth rising linearly from 0 to `rate` over the model's HorBlocks, in network order."""
    blocks = [m for m in model.modules() if isinstance(m, HorBlock)]
    for i, block in enumerate(blocks):
        block.drop_path.p = rate * i / max(len(blocks) - 1, 1)

