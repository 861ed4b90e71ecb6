"""Autoanchor (utils/autoanchor.py): bad anchors are detected and replaced, good ones are kept."""

import types

import numpy as np
import pytest
import torch

from models.yolo import Model
from utils.autoanchor import anchor_metrics, check_anchors, kmean_anchors, label_wh

BACKBONE = [[-1, 1, "Conv", [8, 3, 2]] for _ in range(5)]  # strides 2 ... 32
TINY_ANCHORS = [[1, 1, 2, 2, 1, 2], [2, 1, 2, 3, 1, 1], [3, 2, 2, 1, 1, 3]]  # pixels: useless for real boxes


def model_with(anchors):
    head = [[[2, 3, 4], 1, "Detect", ["nc", "anchors"] if anchors else ["nc"]]]
    return Model({"nc": 2, "anchors": anchors, "backbone": BACKBONE, "head": head}, verbose=False)


@pytest.fixture(scope="module")
def dataset():
    """An ultralytics-like dataset: 150 images of 640x480 with 1-4 boxes of 3% to 60% of the image side."""
    rng = np.random.default_rng(1)
    labels = []
    for i in range(150):
        n = int(rng.integers(1, 5))
        xy, wh = rng.uniform(0.3, 0.7, (n, 2)), rng.uniform(0.03, 0.6, (n, 2))
        labels.append({"bboxes": np.c_[xy, wh].astype(np.float32), "shape": (480, 640)})
    labels.append({"bboxes": np.zeros((0, 4), np.float32), "shape": (480, 640)})  # a background image
    return types.SimpleNamespace(labels=labels)


def pixel_anchors(model):
    head = model.model[-1]
    return (head.anchors * head.stride.view(-1, 1, 1)).view(-1, 2)


def test_label_wh_scales_to_imgsz(dataset):
    wh = label_wh(dataset, imgsz=320, augment=False)
    assert wh.shape == (sum(len(x["bboxes"]) for x in dataset.labels), 2)
    first = dataset.labels[0]["bboxes"][0]
    np.testing.assert_allclose(wh[0], [first[2] * 320, first[3] * 240], rtol=1e-5)  # 640x480 -> 320x240


def test_label_wh_reads_the_image_when_rect_training_dropped_the_shape(tmp_path):
    """--rect: the engine pops each label's "shape"; the sizes come from the image files instead."""
    from PIL import Image

    f = tmp_path / "a.jpg"
    Image.new("RGB", (640, 480)).save(f)
    box = np.array([[0.5, 0.5, 0.25, 0.5]], np.float32)
    with_shape = types.SimpleNamespace(labels=[{"bboxes": box, "shape": (480, 640)}])
    rect = types.SimpleNamespace(labels=[{"bboxes": box, "im_file": str(f)}])
    np.testing.assert_allclose(label_wh(rect, imgsz=320, augment=False), label_wh(with_shape, imgsz=320, augment=False))
    np.testing.assert_allclose(label_wh(rect, imgsz=320, augment=False), [[80, 120]])


def test_bad_anchors_are_replaced(dataset):
    model = model_with(TINY_ANCHORS)
    before = pixel_anchors(model).clone()
    wh = label_wh(dataset, imgsz=128)
    assert anchor_metrics(wh, before.numpy())[0] < 0.98

    bpr = check_anchors(dataset, model, thr=4.0, imgsz=128)
    assert bpr > 0.98
    after = pixel_anchors(model)
    assert not torch.allclose(after, before)
    assert anchor_metrics(wh, after.numpy())[0] == pytest.approx(bpr)  # what is reported is what the model has
    area = after.prod(1)
    assert (area[1:] >= area[:-1]).all()  # small to large across levels: small anchors on the fine grid

    # Good anchors now: a second check keeps them.
    assert check_anchors(dataset, model, thr=4.0, imgsz=128) > 0.98
    torch.testing.assert_close(pixel_anchors(model), after)
    # They travel with the state_dict (and so with the checkpoint).
    torch.testing.assert_close(model.state_dict()["model.5.anchors"] * model.model[-1].stride.view(-1, 1, 1), after.view(3, 3, 2))


def test_kmean_anchors_on_array():
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.normal(m, m / 10, (100, 2)) for m in (8, 30, 120)])  # three size clusters
    k = kmean_anchors(wh, n=3, gen=200, verbose=False)
    assert k.shape == (3, 2)
    assert (np.diff(k.prod(1)) > 0).all()
    np.testing.assert_allclose(np.sort(k.mean(1)), [8, 30, 120], rtol=0.25)
    assert anchor_metrics(wh, k)[0] == 1.0


def test_anchor_free_head_is_skipped(dataset):
    assert check_anchors(dataset, model_with(None)) is None


def test_anchor_count_only_gets_computed_anchors(dataset):
    """`anchors: 3` in a model YAML means placeholders that autoanchor replaces."""
    model = model_with(3)
    assert check_anchors(dataset, model, imgsz=128) > 0.98
    assert (model.model[-1].anchors > 0).all()
