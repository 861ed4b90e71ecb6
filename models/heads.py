"""Detection heads: YOLOv5's anchor-based head, and the ultralytics anchor-free head.

A YAML row `[from, 1, Detect, [nc, anchors]]` builds `AnchorDetect`; `[from, 1, Detect, [nc]]` (no
anchors) builds the anchor-free `ultralytics.nn.modules.Detect`. In eval mode both return what the
ultralytics validator and predictor take: `(predictions, raw)` with predictions of shape
(B, 4 + nc, N), boxes as centre-x, centre-y, width, height in input pixels, then class scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from ultralytics.nn.modules import Detect
from ultralytics.utils import LOGGER

from models.registry import register


class AnchorDetect(nn.Module):
    """YOLOv5's anchor-based head: a 1x1 conv per level predicting, per anchor, box, objectness and classes.

    In: a list of nl feature maps (B, ch[i], H_i, W_i). Out in training: a list of nl raw tensors
    (B, na, H_i, W_i, 5 + nc). Out in eval: `(y, raw)` with y (B, 4 + nc, na * sum(H_i * W_i)), where
    the class scores are objectness times class probability (what YOLOv5's NMS ranks by).

    `anchors` is a buffer in stride units (YOLOv5's convention, so it travels with the state_dict and
    autoanchor can rewrite it); `stride` is a buffer filled in when the model is built.
    """

    export = False  # True: return only y (ONNX/TorchScript export)

    def __init__(self, nc: int = 80, anchors=(), ch=()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.register_buffer("stride", torch.zeros(self.nl))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self._grids: dict = {}

    def forward(self, x: list[torch.Tensor]):
        raw = []
        for i, conv in enumerate(self.m):
            b, _, ny, nx = x[i].shape
            raw.append(conv(x[i]).view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        y = torch.cat([self.decode(i, r) for i, r in enumerate(raw)], 1).transpose(1, 2)
        return y if self.export else (y, raw)

    def decode(self, i: int, raw: torch.Tensor) -> torch.Tensor:
        """Raw level-i output (B, na, ny, nx, 5 + nc) -> (B, na * ny * nx, 4 + nc) boxes in pixels and scores."""
        b, _, ny, nx, _ = raw.shape
        anchor_wh = (self.anchors[i] * self.stride[i]).to(raw.dtype).view(1, self.na, 1, 1, 2)
        xy, wh, obj, cls = raw.sigmoid().split((2, 2, 1, self.nc), -1)
        xy = (xy * 2 + self.grid(nx, ny, raw)) * self.stride[i]
        wh = (wh * 2) ** 2 * anchor_wh
        return torch.cat((xy, wh, obj * cls), -1).view(b, -1, 4 + self.nc)

    def grid(self, nx: int, ny: int, like: torch.Tensor) -> torch.Tensor:
        """Cell offsets (1, 1, ny, nx, 2), minus 0.5: YOLOv5's box centres range over [-0.5, 1.5] of a cell."""
        key = (nx, ny, like.device, like.dtype)
        if key not in self._grids or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            y, x = torch.meshgrid(
                torch.arange(ny, device=like.device, dtype=like.dtype),
                torch.arange(nx, device=like.device, dtype=like.dtype),
                indexing="ij",
            )
            self._grids[key] = torch.stack((x, y), 2).view(1, 1, ny, nx, 2) - 0.5
        return self._grids[key]

    def bias_init(self):
        """YOLOv5's priors: about 8 objects per 640 image at each level, class probability 0.6 / nc."""
        for conv, s in zip(self.m, self.stride):
            b = conv.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / float(s)) ** 2)
            b.data[:, 5 : 5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))

    def check_anchor_order(self):
        """Anchors must grow with stride (small anchors on the fine P3 grid); flip them if they do not."""
        area = self.anchors.prod(-1).mean(-1).view(-1)
        da, ds = area[-1] - area[0], self.stride[-1] - self.stride[0]
        if da and da.sign() != ds.sign():
            LOGGER.info("AnchorDetect: anchor order is reversed with respect to the strides, flipping it")
            self.anchors[:] = self.anchors.flip(0)


def anchor_free_detect(nc: int, ch: tuple, legacy: bool, reg_max: int = 16, end2end: bool = False) -> Detect:
    """ultralytics' Detect with its head layout fixed by `legacy`, whatever was built before in this process.

    Detect reads the class attribute `legacy` in __init__, and ultralytics' own parser sets that attribute for
    every model it builds: without this, the same YAML would build another head after an ultralytics model.
    """
    saved = Detect.legacy
    Detect.legacy = legacy
    try:
        head = Detect(nc, reg_max, bool(end2end), ch=ch)
    finally:
        Detect.legacy = saved
    head.legacy = legacy  # the instance records the layout it was built with
    return head


def row_detect(cls, args, n, c_in, ctx):
    """`[nc, anchors]` -> AnchorDetect; `[nc]` (or anchors None) -> ultralytics' anchor-free Detect."""
    c_in = c_in if isinstance(c_in, list) else [c_in]
    if not args or isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 1:
        raise ValueError(f"Detect needs the number of classes first, got {args[0] if args else None!r}")
    nc, anchors = args[0], (args[1] if len(args) > 1 else None)
    if anchors is None:
        return anchor_free_detect(nc, tuple(c_in), ctx.legacy_head, ctx.reg_max, ctx.end2end), 0
    if isinstance(anchors, int) and not isinstance(anchors, bool):
        anchors = [list(range(anchors * 2))] * len(c_in)  # placeholders, autoanchor computes real ones
    if not isinstance(anchors, (list, tuple)) or len(anchors) != len(c_in):
        raise ValueError(f"Detect has {len(c_in)} inputs but anchors has {len(anchors) if isinstance(anchors, (list, tuple)) else anchors!r} levels")
    if any(not isinstance(a, (list, tuple)) or len(a) % 2 or len(a) != len(anchors[0]) or not a for a in anchors):
        raise ValueError("anchors must be one list of w,h pairs per level, the same number on every level")
    return cls(nc, anchors, c_in), 0


register("Detect", row=row_detect)(AnchorDetect)
