"""The module registry behind the YAML parser.

Each YAML module name maps to a class and a *row function* that says, once, how a row of that module
becomes a built module: `row(cls, args, n, c_in, ctx) -> (module, c2)`, where `args` are the row's
arguments with symbols resolved, `n` the repeat count after `depth_multiple`, `c_in` the input width
(a list of widths for multi-input rows) and `ctx` the model-wide scaling. Adding a module is one
decorator, `@register("Name", row=row_width)`; the parser never changes.

The standard YOLOv5 layers come from the ultralytics package and are registered at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn
from ultralytics.nn.modules import (
    C2PSA,
    A2C2f,
    C2f,
    C2fCIB,
    C3,
    C3TR,
    SPP,
    SPPF,
    Bottleneck,
    BottleneckCSP,
    C3Ghost,
    C3k2,
    C3x,
    Concat,
    Conv,
    ConvTranspose,
    DWConv,
    Focus,
    GhostConv,
)
from ultralytics.utils.ops import make_divisible

from models.safe_yaml import short


MAX_WIDTH = 8192  # channels of one row (YOLOv5x's widest is 1280): the stride probe's activations stay under 1 GB


@dataclass
class Scaling:
    """What a row function may need from the model as a whole."""

    width_multiple: float = 1.0
    max_channels: int = 1 << 30
    nc: int = 80
    no: int | None = None  # the outputs of an old-style head conv row (na * (nc + 5)): never width-scaled
    scale: str | None = None  # the scale letter of a YAML with `scales:` (some ultralytics blocks grow at m/l/x)
    legacy_head: bool = True  # ultralytics' Detect layout for v3/v5/v6/v8 YAMLs (False with C3k2/A2C2f/C2fCIB rows)
    reg_max: int = 16  # DFL bins of the anchor-free head (a YAML's `reg_max:`)
    end2end: bool = False  # NMS-free one-to-one head branch (a YAML's `end2end:`)

    def width(self, c2) -> int:
        """Scale an output width the way YOLOv5 does: times width_multiple, rounded up to a multiple of 8."""
        if isinstance(c2, bool) or not isinstance(c2, int) or c2 < 1:
            raise ValueError(f"the first argument must be the output width (a positive integer), got {short(c2)}")
        if c2 == self.no:
            return c2
        c2 = make_divisible(min(c2, self.max_channels) * self.width_multiple, 8)
        if c2 > MAX_WIDTH:
            raise ValueError(f"width {c2} (after width_multiple) is more than the {MAX_WIDTH} channels a row may have")
        return c2


RowFunction = Callable[[type, list, int, "int | list[int]", Scaling], "tuple[nn.Module, int]"]


@dataclass(frozen=True)
class Entry:
    cls: type
    row: RowFunction


REGISTRY: dict[str, Entry] = {}
# Names that mean another layer in one YAML dialect ('yolov5': YAMLs with anchors) than in ultralytics' YAMLs
DIALECTS: dict[str, dict[str, Entry]] = {"yolov5": {}}


def register(*names: str, row: RowFunction, dialect: str | None = None):
    """Class decorator: make `cls` available to YAML rows under `names`, built by `row` (in `dialect` only, if given)."""
    table = DIALECTS[dialect] if dialect else REGISTRY

    def decorate(cls):
        for name in names or (cls.__name__,):
            table[name] = Entry(cls, row)
        return cls

    return decorate


def repeat(make: Callable[[int], nn.Module], n: int) -> nn.Module:
    """One module, or an nn.Sequential of `n` (make(0), make(1), ...) for a row with number > 1."""
    return make(0) if n == 1 else nn.Sequential(*(make(i) for i in range(n)))


# --- row functions -------------------------------------------------------------------------------


def row_width(cls, args, n, c_in, ctx):
    """`[c2, *rest]` -> cls(c1, c2, *rest); repeats chain, so only the first sees c1."""
    c2 = ctx.width(args[0] if args else None)
    return repeat(lambda i: cls(c_in if i == 0 else c2, c2, *args[1:]), n), c2


def row_width_repeats_inside(cls, args, n, c_in, ctx):
    """`[c2, *rest]` -> cls(c1, c2, n, *rest): CSP blocks repeat their inner blocks themselves."""
    c2 = ctx.width(args[0] if args else None)
    return cls(c_in, c2, n, *args[1:]), c2


def row_c3k2(cls, args, n, c_in, ctx):
    """C3k2 `[c2, c3k, e, ...]`: at scales m, l and x its inner blocks are C3k whatever the row says, as in ultralytics."""
    if ctx.scale in {"m", "l", "x"}:
        args = [args[0], True, *args[2:]]
    return row_width_repeats_inside(cls, args, n, c_in, ctx)


def row_a2c2f(cls, args, n, c_in, ctx):
    """A2C2f `[c2, a2, area, ...]`: at scales l and x residual blocks with mlp ratio 1.2, as in ultralytics."""
    if ctx.scale in {"l", "x"}:
        args = [*args, True, 1.2]
    return row_width_repeats_inside(cls, args, n, c_in, ctx)


def row_same_width(cls, args, n, c_in, ctx):
    """Layers that keep the width (nn.Upsample, nn.Identity, ...): cls(*args)."""
    return repeat(lambda i: cls(*args), n), c_in


def row_concat(cls, args, n, c_in, ctx):
    """Concat: the output width is the sum of the inputs'."""
    if not isinstance(c_in, list):
        raise ValueError("Concat needs a list of inputs in 'from', e.g. [-1, 6]")
    return cls(*args), sum(c_in)


def row_norm(cls, args, n, c_in, ctx):
    """Norm layers (nn.BatchNorm2d, LayerNorm2d): cls(c1), the width of the row's input; args must be []."""
    if args:
        raise ValueError(f"a norm row takes its width from its input: its args must be [], got {short(args)}")
    return repeat(lambda i: cls(c_in), n), c_in


# --- YOLOv5's standard layers, from the ultralytics package ---------------------------------------

for _cls in (Conv, DWConv, GhostConv, ConvTranspose, Bottleneck, SPP, SPPF, Focus):
    register(_cls.__name__, row=row_width)(_cls)
for _cls in (C3, C3x, C3TR, C3Ghost, BottleneckCSP, C2f, C2PSA, C2fCIB):
    register(_cls.__name__, row=row_width_repeats_inside)(_cls)
register("C3k2", row=row_c3k2)(C3k2)
register("A2C2f", row=row_a2c2f)(A2C2f)
# Rows of these make ultralytics build the non-legacy Detect layout (its parse_model's rule)
MODERN_HEAD_ROWS = {"C3k2", "A2C2f", "C2fCIB"}
register("Concat", row=row_concat)(Concat)
register("nn.Conv2d", row=row_width)(nn.Conv2d)  # [c2, k, s, ...] like Conv
register("nn.ConvTranspose2d", row=row_width)(nn.ConvTranspose2d)
register("nn.BatchNorm2d", row=row_norm)(nn.BatchNorm2d)
