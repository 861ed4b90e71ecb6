"""YOLOv5's loss for the anchor-based head (`models.heads.AnchorDetect`), in the ultralytics criterion form.

`Model.init_criterion()` returns `AnchorLoss(model)` when the head is `AnchorDetect`; the anchor-free head
keeps the ultralytics loss. The ultralytics trainer calls the criterion as `loss, items = criterion(preds,
batch)`, backpropagates `loss.sum()` and names its loss columns after the keys of `items`, so the columns
are `box_loss, obj_loss, cls_loss` (YOLOv5's names) for this head and `box_loss, cls_loss, dfl_loss` for
the anchor-free one.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.ops import xywh2xyxy

from models.safe_yaml import load_yaml

# YOLOv5's hyp file of defaults (hyp.scratch-low.yaml, its values unchanged): train.py starts every hyp from it, and
# this loss takes from it the values of the keys it reads that a model's args lack. The ultralytics args namespace
# has `box` and `cls` (with values tuned for its own loss; the trainer passes YOLOv5's) but no `obj`, `anchor_t`,
# `obj_pw`, `fl_gamma` or `label_smoothing`.
# YOLOv5's `cls_pw` (BCE positive weight, 1.0 in every YOLOv5 hyp file) is NOT read: in this engine `cls_pw`
# is the power of inverse-frequency class weights, which the trainer turns into `model.class_weights`;
# those weights are applied to the class loss, as the engine's own loss does.
YOLOV5_HYP = Path(__file__).resolve().parents[1] / "data/hyps/hyp.scratch-low.yaml"
LOSS_KEYS = ("box", "obj", "cls", "anchor_t", "obj_pw", "fl_gamma")
LOSS_DEFAULTS = {
    **{k: float(v) for k, v in load_yaml(YOLOV5_HYP.read_text(), YOLOV5_HYP).items() if k in LOSS_KEYS},
    "label_smoothing": 0.0,  # class targets become 1 - eps/2 and eps/2 (a train.py flag in YOLOv5, not a hyp)
    "imgsz": 640,  # training image size: scales the objectness gain
}

# Objectness weight per level, fine (P3) to coarse: small grids have few cells, so each cell weighs less.
BALANCE = {3: [4.0, 1.0, 0.4]}
BALANCE_MANY = [4.0, 1.0, 0.25, 0.06, 0.02]

# The cell offsets tried for each target, in cell units: the cell itself, then its left, upper, right and
# lower neighbour. A centre can reach 0.5 cell beyond its own cell (xy = 2 * sigmoid - 0.5), so the
# neighbour on the side of the closer edge can also predict the target: YOLOv5 uses it as an extra positive.
NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


def hyp_value(args, key: str):
    """One hyperparameter from `args` (a namespace, a dict or None), or its YOLOv5 default when absent/None."""
    value = args.get(key) if isinstance(args, dict) else getattr(args, key, None)
    if value is None:
        return LOSS_DEFAULTS[key]
    if key == "imgsz" and isinstance(value, (list, tuple)):
        return max(value)  # (h, w) image sizes: the longer side, as the letterbox uses
    return float(value)


def bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0, gamma: float = 0.0, alpha: float = 0.25):
    """Element-wise BCE-with-logits; with gamma > 0 the focal loss (Lin et al., 2017): times alpha_t * (1 - p_t)^gamma."""
    pw = torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype) if pos_weight != 1.0 else None
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    if gamma > 0:
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)  # probability given to the true label
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        loss = loss * alpha_t * (1 - p_t) ** gamma
    return loss


class AnchorLoss:
    """YOLOv5's detection loss: CIoU box loss, objectness BCE with IoU targets, class BCE with label smoothing.

    Matching: a target goes to every anchor (of every level) whose width and height ratios to it are both
    below `anchor_t`, in the target's cell and in the two neighbouring cells on the sides of its centre's
    nearer edges (offset 0.5 cell). Each level's objectness loss is weighted by `BALANCE`; the gains are
    scaled YOLOv5's way for the number of levels nl, classes nc and image size:
    box * 3/nl, cls * nc/80 * 3/nl, obj * (imgsz/640)^2 * 3/nl.

    In: `model` (a `models.yolo.Model` whose last row is `AnchorDetect`; hyperparameters come from
    `model.args`, a namespace or dict, with `LOSS_DEFAULTS` for what it lacks; `model.class_weights`, when
    the engine has set it, weighs the class loss per class).
    Call: `(preds, batch)` -> `(loss, items)`, the structure of ultralytics' `v8DetectionLoss`:
    - `preds`: the head's training output (a list of nl tensors (B, na, ny, nx, 5 + nc)), or its eval
      output `(y, raw)` (the validator computes the loss on eval outputs);
    - `batch`: the ultralytics batch dict, with `batch_idx` (n,), `cls` (n, 1) and `bboxes` (n, 4)
      normalised xywh;
    - `loss`: tensor (3,) = (box, obj, cls) * batch size; `loss.sum()` is YOLOv5's total loss;
    - `items`: dict `{"box_loss", "obj_loss", "cls_loss"}` of detached scalars (not times batch size).
    """

    loss_names = ("box_loss", "obj_loss", "cls_loss")

    def __init__(self, model):
        model = getattr(model, "module", model)  # DDP wrapper -> the model
        self.head = model.model[-1]  # kept, not its anchors: autoanchor may rewrite them after this
        self.nl, self.na, self.nc = self.head.nl, self.head.na, self.head.nc
        args = getattr(model, "args", None)
        self.hyp = {k: hyp_value(args, k) for k in LOSS_DEFAULTS}
        # Per-class weights (nc,) the engine sets when its cls_pw > 0 (inverse class frequency, mean 1).
        weights = getattr(model, "class_weights", None)
        self.class_weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32).view(1, -1)

        eps = self.hyp["label_smoothing"]
        self.cp, self.cn = 1.0 - 0.5 * eps, 0.5 * eps  # positive and negative class targets
        self.balance = BALANCE.get(self.nl, BALANCE_MANY[: self.nl])
        if len(self.balance) < self.nl:  # more levels than YOLOv5 ever weighs: the coarsest weight repeats
            self.balance = self.balance + [self.balance[-1]] * (self.nl - len(self.balance))
        self.anchor_t = self.hyp["anchor_t"]

        levels = 3 / self.nl
        self.gain_box = self.hyp["box"] * levels
        self.gain_cls = self.hyp["cls"] * self.nc / 80 * levels
        self.gain_obj = self.hyp["obj"] * (self.hyp["imgsz"] / 640) ** 2 * levels

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of a batch; see the class docstring for what goes in and out."""
        raw = preds[1] if isinstance(preds, tuple) else preds
        device = raw[0].device
        targets = torch.cat(
            (
                batch["batch_idx"].view(-1, 1).float(),
                batch["cls"].view(-1, 1).float(),
                batch["bboxes"].view(-1, 4).float(),
            ),
            1,
        ).to(device)
        bs = raw[0].shape[0]
        lbox, lobj, lcls = (torch.zeros((), device=device) for _ in range(3))

        for i, pi in enumerate(raw):
            pi = pi.float()  # the loss in float32 also under AMP
            b, a, gj, gi, tbox, tcls = self.build_targets(i, pi.shape, targets)
            tobj = torch.zeros(pi.shape[:4], device=device)
            if len(b):
                ps = pi[b, a, gj, gi]  # (n, 5 + nc) predictions of the positive cells/anchors
                anchors = self.head.anchors[i].to(device)[a]  # (n, 2) in cell units
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors
                # xyxy in: bbox_iou then keeps heights >= eps, as YOLOv5 does. Its xywh path does not, and a width
                # and height that underflow to 0 (wh logits below about -100) made CIoU's w/h 0/0 = NaN.
                pbox = torch.cat((pxy, pwh), 1)
                iou = bbox_iou(xywh2xyxy(pbox), xywh2xyxy(tbox), xywh=False, CIoU=True).view(-1)
                lbox = lbox + (1.0 - iou).mean()

                # Objectness target: the (detached) IoU of the prediction. A cell/anchor matched by several
                # targets keeps the highest IoU (scatter with 'amax' is deterministic, unlike ordered writes).
                flat = ((b * self.na + a) * pi.shape[2] + gj) * pi.shape[3] + gi
                tobj.view(-1).scatter_reduce_(0, flat, iou.detach().clamp(0).to(tobj.dtype), reduce="amax")

                if self.nc > 1:  # one class: objectness already says it all (YOLOv5 skips the class loss)
                    t = torch.full_like(ps[:, 5:], self.cn)
                    t[torch.arange(len(b), device=device), tcls] = self.cp
                    loss_cls = bce(ps[:, 5:], t, gamma=self.hyp["fl_gamma"])
                    if self.class_weights is not None:
                        loss_cls = loss_cls * self.class_weights.to(device)
                    lcls = lcls + loss_cls.mean()
            loss_obj = bce(pi[..., 4], tobj, pos_weight=self.hyp["obj_pw"], gamma=self.hyp["fl_gamma"])
            lobj = lobj + loss_obj.mean() * self.balance[i]

        lbox, lobj, lcls = lbox * self.gain_box, lobj * self.gain_obj, lcls * self.gain_cls
        loss = torch.stack((lbox, lobj, lcls))
        return loss * bs, dict(zip(self.loss_names, loss.detach()))

    def build_targets(self, i: int, shape, targets: torch.Tensor):
        """Positive samples of level i: which image, anchor and cell predicts which target box.

        In: level index, that level's prediction shape (B, na, ny, nx, no), targets (n, 6) as
        (image, class, x, y, w, h) normalised. Out: `b, a, gj, gi` (m,) long indices into the prediction,
        `tbox` (m, 4) the target as (x, y) relative to its cell's corner and (w, h), in cell units, and
        `tcls` (m,) long class indices.
        """
        device = targets.device
        ny, nx = shape[2], shape[3]
        anchors = self.head.anchors[i].to(device)  # (na, 2), cell units of this level
        t = targets * torch.tensor([1, 1, nx, ny, nx, ny], device=device, dtype=targets.dtype)

        # Every (anchor, target) pair whose shape ratio is within anchor_t on both sides.
        ratio = t[None, :, 4:6] / anchors[:, None]  # (na, n, 2)
        keep = torch.max(ratio, 1 / ratio).amax(2) < self.anchor_t
        a, j = keep.nonzero(as_tuple=True)
        t = t[j]

        # The target's own cell, plus the neighbour cells across the nearer horizontal and vertical edge,
        # when such a neighbour exists inside the grid (the 'gxy > 1' and 'inverse > 1' tests keep them in).
        gxy = t[:, 2:4]
        inv = torch.tensor([nx, ny], device=device, dtype=gxy.dtype) - gxy
        left, up = ((gxy % 1 < 0.5) & (gxy > 1)).T
        right, down = ((inv % 1 < 0.5) & (inv > 1)).T
        use = torch.stack((torch.ones_like(left), left, up, right, down))  # (5, m), rows as NEIGHBOURS
        offsets = NEIGHBOURS.to(device, gxy.dtype)[:, None].expand(-1, len(t), -1)[use]
        t, a = t.repeat(5, 1, 1)[use], a.repeat(5, 1)[use]

        gxy, gwh = t[:, 2:4], t[:, 4:6]
        gij = (gxy - offsets).long()
        gi = gij[:, 0].clamp_(0, nx - 1)
        gj = gij[:, 1].clamp_(0, ny - 1)
        tbox = torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1)
        return t[:, 0].long(), a, gj, gi, tbox, t[:, 1].long()

