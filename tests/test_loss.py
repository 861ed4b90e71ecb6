"""AnchorLoss (models/loss.py): output structure, YOLOv5's matching, exact box fit, label smoothing, gains, learning."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.yolo import Model
from models.loss import AnchorLoss

IMG = 64
# Two levels (strides 8 and 16) on a few plain convs: builds in milliseconds.
TINY = {
    "nc": 3,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],  # 2: P3/8
        [-1, 1, "Conv", [32, 3, 2]],  # 3: P4/16
    ],
    "head": [[[2, 3], 1, "Detect", ["nc", "anchors"]]],
}


def tiny_model(**hyp):
    torch.manual_seed(0)
    model = Model(TINY, verbose=False)
    # What the trainer sets (a namespace there). The engine's cls_pw (class-weight power, default 0) must not
    # be taken for YOLOv5's BCE positive weight: with that weight at 0 the class loss would ignore positives.
    model.args = {"box": 0.05, "cls": 0.5, "imgsz": IMG, "cls_pw": 0.0, **hyp}
    return model


def make_batch(boxes, classes, images=None, bs=2):
    """An ultralytics batch dict from normalised xywh boxes."""
    n = len(boxes)
    return {
        "img": torch.rand(bs, 3, IMG, IMG, generator=torch.Generator().manual_seed(0)),
        "batch_idx": torch.tensor(images if images is not None else [0] * n, dtype=torch.float32),
        "cls": torch.tensor(classes, dtype=torch.float32).view(-1, 1),
        "bboxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
    }


def blank_preds(model, bs=1, obj=-10.0):
    """Raw head outputs (B, na, ny, nx, 5 + nc) of zeros, objectness logits `obj`."""
    head = model.model[-1]
    preds = []
    for s in head.stride.tolist():
        p = torch.zeros(bs, head.na, IMG // int(s), IMG // int(s), head.no)
        p[..., 4] = obj
        preds.append(p)
    return preds


def logit(p):
    return math.log(p / (1 - p))


def test_structure_like_ultralytics_criterion():
    model = tiny_model()
    batch = make_batch([[0.5, 0.5, 0.3, 0.4], [0.2, 0.3, 0.1, 0.1], [0.7, 0.6, 0.5, 0.3]], [0, 1, 2], [0, 0, 1])
    loss, items = model.loss(batch)  # the path the ultralytics trainer takes
    assert isinstance(model.criterion, AnchorLoss)
    assert loss.shape == (3,) and loss.requires_grad
    assert list(items) == ["box_loss", "obj_loss", "cls_loss"]
    assert all(not v.requires_grad and v.ndim == 0 for v in items.values())
    torch.testing.assert_close(loss.detach(), torch.stack(list(items.values())) * 2)  # times batch size 2
    assert (loss > 0).all()

    # The validator passes eval outputs (y, raw): the loss is computed on raw, identically.
    model.eval()
    with torch.no_grad():
        y, raw = model(batch["img"])
        a = model.loss(batch, (y, raw))[0]
        b = model.loss(batch, raw)[0]
    torch.testing.assert_close(a, b)


def test_matching_by_ratio_and_neighbour_cells():
    model = tiny_model()
    crit = AnchorLoss(model)
    shape = (1, 3, 8, 8, 8)  # level 0: 8x8 cells of 8 pixels
    # A 10x13-pixel box centred at cell coordinates (3.2, 4.7): nearer the left and the lower edge.
    t = torch.tensor([[0, 1, 3.2 / 8, 4.7 / 8, 10 / IMG, 13 / IMG]])
    b, a, gj, gi, tbox, tcls = crit.build_targets(0, shape, t)
    # Anchors (10,13), (16,30), (33,23) all lie within a ratio of 4 of (10,13); the cells are its own,
    # the left neighbour and the lower one.
    assert set(zip(a.tolist(), gi.tolist(), gj.tolist())) == {(k, x, y) for k in range(3) for x, y in [(3, 4), (2, 4), (3, 5)]}
    assert (tcls == 1).all() and (b == 0).all()
    assert ((tbox[:, :2] > -0.5) & (tbox[:, :2] < 1.5)).all()  # centres reachable by 2 * sigmoid - 0.5
    # On level 1 the anchors are 30x61, 62x45, 59x119 pixels: none is within 4x of a 10x13 box (61 / 13 > 4).
    assert len(crit.build_targets(1, (1, 3, 4, 4, 8), t)[0]) == 0

    # A centre in the middle of a cell at the image border has no neighbour to add.
    t = torch.tensor([[0, 0, 0.5 / 8, 0.5 / 8, 10 / IMG, 13 / IMG]])
    _, a, gj, gi, _, _ = crit.build_targets(0, shape, t)
    assert set(zip(gi.tolist(), gj.tolist())) == {(0, 0)} and len(a) == 3


def test_exact_prediction_gives_zero_box_loss():
    model = tiny_model()
    head = model.model[-1]
    # A box centred in cell (3, 4) of level 0, 10x13 pixels: the three level-0 anchors (10x13, 16x30,
    # 33x23) match it, no level-1 anchor does (61 / 13 > 4). Each predicts it exactly:
    # xy = 2 * sigmoid(0) - 0.5 = 0.5, wh = (2 * sigmoid)^2 * anchor.
    box_wh = torch.tensor([10.0, 13.0])
    batch = make_batch([[3.5 / 8, 4.5 / 8, 10 / IMG, 13 / IMG]], [2], bs=1)
    preds = blank_preds(model)
    for a in range(3):
        anchor = head.anchors[0, a] * head.stride[0]
        sig = torch.sqrt(box_wh / anchor) / 2
        preds[0][0, a, 4, 3, 2:4] = torch.log(sig / (1 - sig))
    _, items = AnchorLoss(model)(preds, batch)
    assert items["box_loss"] < 1e-6

    # Any error in the predicted size shows up.
    preds[0][0, 1, 4, 3, 2] += 0.5
    _, items = AnchorLoss(model)(preds, batch)
    assert items["box_loss"] > 1e-3


def test_label_smoothing_targets():
    nc = 3
    batch = make_batch([[3.5 / 8, 4.5 / 8, 10 / IMG, 13 / IMG]], [2], bs=1)  # matched on level 0 only
    logits = torch.tensor([-2.0, 0.5, 3.0])  # class scores of every positive anchor

    def cls_item(eps):
        model = tiny_model(label_smoothing=eps)
        preds = blank_preds(model)
        preds[0][..., 5:] = logits
        return AnchorLoss(model)(preds, batch)[1]["cls_loss"]

    gain = 0.5 * nc / 80 * 3 / 2  # cls * nc/80 * 3/nl
    for eps in (0.0, 0.2):
        target = torch.tensor([eps / 2, eps / 2, 1 - eps / 2])
        expected = gain * F.binary_cross_entropy_with_logits(logits, target)
        torch.testing.assert_close(cls_item(eps), expected)
    assert cls_item(0.2) > cls_item(0.0)  # a confident correct class is penalised under smoothing


def test_engine_class_weights():
    batch = make_batch([[3.5 / 8, 4.5 / 8, 10 / IMG, 13 / IMG]], [2], bs=1)
    logits = torch.tensor([-2.0, 0.5, 3.0])
    model = tiny_model()
    model.class_weights = torch.tensor([0.5, 0.5, 2.0])  # what the trainer sets when its cls_pw > 0
    preds = blank_preds(model)
    preds[0][..., 5:] = logits
    got = AnchorLoss(model)(preds, batch)[1]["cls_loss"]
    per_class = F.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 0.0, 1.0]), reduction="none")
    torch.testing.assert_close(got, 0.5 * 3 / 80 * 3 / 2 * (per_class * model.class_weights).mean())


def test_gains_and_hyp_defaults():
    model = tiny_model()
    model.args = None  # nothing given: YOLOv5's defaults at 640
    c = AnchorLoss(model)
    assert c.anchor_t == 4.0 and c.balance == [4.0, 1.0]
    assert c.gain_box == pytest.approx(0.05 * 3 / 2)
    assert c.gain_obj == pytest.approx(1.0 * 3 / 2)
    assert c.gain_cls == pytest.approx(0.5 * 3 / 80 * 3 / 2)
    model.args = {"imgsz": 320, "obj": 0.7, "anchor_t": 3.0}
    c = AnchorLoss(model)
    assert c.gain_obj == pytest.approx(0.7 * 0.25 * 3 / 2) and c.anchor_t == 3.0


def test_loss_decreases_with_training():
    model = tiny_model()
    batch = make_batch(
        [[0.5, 0.5, 0.3, 0.4], [0.2, 0.3, 0.1, 0.1], [0.7, 0.6, 0.5, 0.3], [0.3, 0.7, 0.2, 0.25]],
        [0, 1, 2, 1],
        [0, 0, 1, 1],
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        loss, items = model.loss(batch)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(loss.sum().item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.6 * losses[0]


def test_batch_without_labels():
    """Background-only batches (the embedded set has images with nothing in them): only objectness is learnt."""
    model = tiny_model()
    loss, items = model.loss(make_batch([], []))
    assert items["box_loss"] == 0 and items["cls_loss"] == 0 and items["obj_loss"] > 0
    loss.sum().backward()  # still a graph: the objectness of every cell is pushed down


def test_finite_when_predicted_boxes_collapse():
    """Width/height logits so negative that the box is 0 x 0 in float32: loss and gradients stay finite.

    (Seen in a real run: a wh logit of -400 made CIoU's aspect term 0/0 and the loss NaN.)
    """
    model = tiny_model()
    batch = make_batch([[0.5, 0.5, 0.3, 0.2]], [1])
    preds = blank_preds(model, bs=2)
    for p in preds:
        p[..., 2:4] = -400.0
        p.requires_grad_(True)
    loss, items = AnchorLoss(model)(preds, batch)
    assert all(math.isfinite(float(v)) for v in items.values()) and items["box_loss"] > 0
    loss.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in preds)
