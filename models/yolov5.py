"""YOLOv5's Bottleneck, BottleneckCSP and SPPF, which YOLOv5-format YAMLs (the ones with `anchors:`) mean.

ultralytics kept YOLOv5's names for layers that differ: its Bottleneck starts with a 3x3 conv and takes a
kernel pair as 4th argument, YOLOv5's starts with a 1x1 conv and takes the expansion there. Built with
ultralytics' classes, YOLOv5's yolov3.yaml has 97.1M parameters instead of its 61.9M. Anchor-free YAMLs
(ultralytics' own) keep ultralytics' classes under the same names. The engine's SPPF has no activation after
its first conv; YOLOv5's has one (its checkpoints give other outputs without it).
"""

from __future__ import annotations

import torch.nn as nn
from ultralytics.nn.modules import SPPF, Bottleneck, BottleneckCSP, Conv

from models.registry import register, row_width, row_width_repeats_inside


@register("Bottleneck", row=row_width, dialect="yolov5")
class YOLOv5Bottleneck(Bottleneck):
    """(B, c1, H, W) -> (B, c2, H, W): a 1x1 conv to c2*e, a 3x3 conv to c2, plus x when shortcut and c1 == c2."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, shortcut, g, k=(1, 3), e=e)


@register("BottleneckCSP", row=row_width_repeats_inside, dialect="yolov5")
class YOLOv5BottleneckCSP(BottleneckCSP):
    """(B, c1, H, W) -> (B, c2, H, W): ultralytics' CSP layout around n YOLOv5 Bottlenecks (1x1 then 3x3)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(YOLOv5Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))


@register("SPPF", row=row_width, dialect="yolov5")
class YOLOv5SPPF(SPPF):
    """(B, c1, H, W) -> (B, c2, H, W): the engine's SPPF with YOLOv5's SiLU after the first 1x1 conv."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__(c1, c2, k)
        self.cv1 = Conv(c1, c1 // 2, 1, 1)
