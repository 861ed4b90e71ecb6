"""Autoanchor: YOLOv5's check of the anchors against the training labels, and their re-computation.

`check_anchors(dataset, model)` measures the best possible recall (BPR): the fraction of training boxes
that at least one anchor can match (width and height ratios both within `thr`, the loss's `anchor_t`).
Below 0.98 it computes new anchors with k-means plus a genetic evolution (`kmean_anchors`) and writes them
into the head (a buffer, so they travel with the state_dict and the checkpoint) if they recall more.

Call it before the EMA copy of the model is made: the EMA averages buffers too, so it would only drift
towards anchors written after it was created.
"""

from __future__ import annotations

import numpy as np
import torch
from ultralytics.utils import LOGGER, colorstr

from models.heads import AnchorDetect

PREFIX = colorstr("AutoAnchor: ")
BPR_OK = 0.98  # YOLOv5's threshold: above it the anchors are left alone


def image_hw(path) -> tuple[int, int]:
    """(height, width) of an image file from its header, EXIF rotation applied, as the engine measures it."""
    from PIL import Image
    from ultralytics.data.utils import exif_size

    with Image.open(path) as im:
        w, h = exif_size(im)
    return h, w


def label_wh(dataset, imgsz: int = 640, rng: np.random.Generator | None = None, augment: bool = True) -> np.ndarray:
    """Widths and heights (N, 2) in pixels of all boxes of an ultralytics YOLODataset, at training size.

    Each image is letterboxed so its longer side is `imgsz`, so a box of normalised width bw in an image of
    width w is bw * w * imgsz / max(h, w) pixels wide. With `augment`, each image's boxes are also scaled by
    a random factor in [0.9, 1.1], a stand-in for the scale augmentation the boxes will see in training.
    `dataset` is anything with `.labels`: dicts with "bboxes" (n, 4) normalised xywh and "shape" (h, w), or
    "im_file" when there is no "shape" (rectangular training: the engine's `set_rectangle` pops it).
    """
    rng = rng or np.random.default_rng(0)
    imgsz = max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz  # (h, w) sizes: the letterbox's longer side
    out = []
    for label in dataset.labels:
        boxes = np.asarray(label.get("bboxes", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            continue
        h, w = label["shape"][:2] if "shape" in label else image_hw(label["im_file"])
        size = np.array([w, h], dtype=np.float64) * imgsz / max(h, w)  # letterboxed image (w, h)
        scale = rng.uniform(0.9, 1.1) if augment else 1.0
        out.append(boxes[:, 2:4] * size * scale)
    return np.concatenate(out, 0) if out else np.zeros((0, 2))


def anchor_metrics(wh: np.ndarray, anchors: np.ndarray, thr: float = 4.0) -> tuple[float, float, np.ndarray]:
    """How well anchors fit boxes. In: wh (N, 2) and anchors (K, 2), both pixels; thr the ratio limit.

    Out: (bpr, aat, best): bpr the fraction of boxes some anchor matches, aat the mean number of anchors
    matching a box, best (N,) each box's best match score, min over w and h of min(r, 1/r), r = box/anchor
    (1 is a perfect fit, below 1/thr no match).
    """
    wh = torch.as_tensor(wh, dtype=torch.float32)
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    r = wh[:, None] / anchors[None]  # (N, K, 2)
    score = torch.min(r, 1 / r).amin(2)  # (N, K): the worse of the two sides
    best = score.amax(1)
    bpr = (best > 1 / thr).float().mean().item()
    aat = (score > 1 / thr).float().sum(1).mean().item()
    return bpr, aat, best.numpy()


def anchor_fitness(wh: np.ndarray, anchors: np.ndarray, thr: float = 4.0) -> float:
    """YOLOv5's anchor fitness: the mean best-match score, counting 0 for boxes no anchor matches."""
    best = anchor_metrics(wh, anchors, thr)[2]
    return float((best * (best > 1 / thr)).mean())


def kmean_anchors(
    labels,
    n: int = 9,
    imgsz: int = 640,
    thr: float = 4.0,
    gen: int = 1000,
    seed: int = 0,
    verbose: bool = True,
) -> np.ndarray:
    """Anchors evolved for a set of boxes: k-means on whitened (w, h), then a genetic evolution.

    In: `labels`, an ultralytics YOLODataset (its boxes are scaled to `imgsz` by `label_wh`) or an
    array (N, 2) of box widths and heights in pixels; `n` anchors; `thr` the loss's anchor_t; `gen`
    generations of mutation; `seed` for reproducible results.
    Out: float array (n, 2) of anchor (w, h) in pixels, sorted by area, smallest first.
    """
    from scipy.cluster.vq import kmeans

    rng = np.random.default_rng(seed)
    wh0 = label_wh(labels, imgsz, rng) if hasattr(labels, "labels") else np.asarray(labels, dtype=np.float64)
    tiny = (wh0 < 3.0).any(1).sum()
    if tiny and verbose:
        LOGGER.info(f"{PREFIX}{tiny} of {len(wh0)} boxes are smaller than 3 pixels: they are left out of the fit")
    wh = wh0[(wh0 >= 2.0).all(1)]  # boxes of 2 pixels or more: smaller ones are noise for the fit
    if len(wh) < n:
        raise ValueError(f"kmean_anchors: {len(wh)} usable boxes, fewer than the {n} anchors asked for")

    # k-means in whitened space (each axis divided by its spread), then back to pixels.
    sigma = wh.std(0)
    sigma[sigma == 0] = 1.0
    k, _ = kmeans(wh / sigma, n, iter=30, rng=rng)
    if len(k) != n:  # k-means can merge clusters (few distinct boxes): start from random boxes instead
        LOGGER.info(f"{PREFIX}k-means found {len(k)} of {n} clusters, starting from random boxes")
        k = np.sort(rng.uniform(size=(n, 2)), 0) * (wh.max(0) / sigma)
    k = k * sigma

    # Genetic evolution: mutate the anchors multiplicatively, keep a mutation when fitness improves.
    best_fit = anchor_fitness(wh, k, thr)
    mutation_p, sigma_m = 0.9, 0.1  # chance that a coordinate mutates, and the size of the step
    for _ in range(gen):
        v = np.ones_like(k)
        while (v == 1).all():  # mutate at least one coordinate
            change = rng.random(k.shape) < mutation_p
            v = (change * rng.random() * rng.standard_normal(k.shape) * sigma_m + 1).clip(0.3, 3.0)
        candidate = (k * v).clip(min=2.0)
        fit = anchor_fitness(wh, candidate, thr)
        if fit > best_fit:
            best_fit, k = fit, candidate

    k = k[np.argsort(k.prod(1))]  # smallest area first: small anchors go to the fine P3 grid
    if verbose:
        bpr, aat, _ = anchor_metrics(wh0, k, thr)
        LOGGER.info(
            f"{PREFIX}{n} anchors from {len(wh)} boxes at imgsz={imgsz}: fitness {best_fit:.4f}, "
            f"best possible recall {bpr:.4f}, {aat:.2f} anchors per box; "
            f"anchors (w,h) {', '.join(f'{w:.0f},{h:.0f}' for w, h in k)}"
        )
    return k


def check_anchors(dataset, model, thr: float = 4.0, imgsz: int = 640, gen: int = 1000) -> float | None:
    """Check the model's anchors on a dataset's boxes and re-compute them if they fit badly.

    In: an ultralytics YOLODataset (or anything with `.labels`, see `label_wh`), a `models.yolo.Model`
    (or its DDP wrapper), `thr` the loss's anchor_t, `imgsz` the training image size, `gen` generations.
    Out: the best possible recall of the anchors the model has afterwards, or None when the head is not
    anchor-based (nothing to check). Side effect: when the BPR was below 0.98 and new anchors recall more,
    they are written into `model.model[-1].anchors` (stride units, sorted small to large across levels).
    """
    model = getattr(model, "module", model)
    head = model.model[-1]
    if not isinstance(head, AnchorDetect):
        LOGGER.info(f"{PREFIX}the head is anchor-free, nothing to check")
        return None

    stride = head.stride.detach().cpu().view(-1, 1, 1)
    anchors = (head.anchors.detach().cpu() * stride).view(-1, 2).numpy()  # pixels
    wh = label_wh(dataset, imgsz, np.random.default_rng(0))
    if not len(wh):
        LOGGER.info(f"{PREFIX}the dataset has no boxes, anchors left as they are")
        return None
    bpr, aat, _ = anchor_metrics(wh, anchors, thr)
    msg = f"{PREFIX}{aat:.2f} anchors per box, best possible recall (BPR) {bpr:.4f}"
    if bpr > BPR_OK:
        LOGGER.info(f"{msg}: the anchors fit the dataset")
        return bpr

    LOGGER.info(f"{msg}: below {BPR_OK}, computing new anchors")
    try:
        new = kmean_anchors(wh, n=head.na * head.nl, imgsz=imgsz, thr=thr, gen=gen, verbose=True)
    except ValueError as e:
        LOGGER.warning(f"{PREFIX}{e}; anchors left as they are")
        return bpr
    new_bpr = anchor_metrics(wh, new, thr)[0]
    if new_bpr > bpr:
        # Sorted by area, so the smallest na anchors go to the finest level; stored in stride units.
        units = torch.tensor(new, dtype=head.anchors.dtype).view(head.nl, head.na, 2) / stride.to(head.anchors.dtype)
        head.anchors[:] = units.to(head.anchors.device)
        LOGGER.info(f"{PREFIX}BPR {bpr:.4f} -> {new_bpr:.4f}: new anchors written into the model")
        return new_bpr
    LOGGER.info(f"{PREFIX}the new anchors recall no more (BPR {new_bpr:.4f}), the original ones are kept")
    return bpr
