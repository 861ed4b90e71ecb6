"""load_albumentations (utils/augment.py): the shipped pipeline loads; a loaded flip keeps boxes on the object."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
A = pytest.importorskip("albumentations")
from ultralytics.data.augment import Albumentations  # noqa: E402
from ultralytics.utils.instance import Instances  # noqa: E402

from utils.augment import AlbumentationsFileError, load_albumentations  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H, W = 80, 100
RECT = (10, 20, 40, 50)  # x1, y1, x2, y2 of a white rectangle on black


def labels_with_rect():
    """An ultralytics labels dict (as the dataset hands it to the transforms): one white rectangle, class 1."""
    img = np.zeros((H, W, 3), np.uint8)
    x1, y1, x2, y2 = RECT
    img[y1:y2, x1:x2] = 255
    instances = Instances(
        np.array([RECT], np.float32), segments=np.zeros((0, 1000, 2), np.float32), bbox_format="xyxy", normalized=False
    )
    return {"img": img, "cls": np.array([[1.0]], np.float32), "instances": instances}


def white_box_xywhn(img):
    """Normalised xywh of the white pixels of an image."""
    ys, xs = np.nonzero(img[..., 0] > 127)
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return np.array([(x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H])


def test_shipped_pipeline_loads():
    transforms = load_albumentations(ROOT / "data/hyps/albumentations.yaml")
    assert len(transforms) >= 3
    assert all(isinstance(t, A.BasicTransform) and t.p <= 0.1 for t in transforms)  # mild
    aug = Albumentations(p=1.0, transforms=transforms)
    assert aug.transform is not None and not aug.contains_spatial  # pixel-level only: boxes untouched
    out = aug(labels_with_rect())
    assert out["img"].shape == (H, W, 3)


@pytest.mark.parametrize("via_checkpoint_dicts", [False, True])
def test_flip_keeps_boxes_aligned(tmp_path, via_checkpoint_dicts):
    path = tmp_path / "flip.yaml"
    A.save(A.Compose([A.HorizontalFlip(p=1.0)]), str(path), data_format="yaml")
    transforms = load_albumentations(path)
    if via_checkpoint_dicts:  # the trainer stores args.augmentations as A.to_dict() dicts
        transforms = [A.to_dict(t) for t in transforms]
    aug = Albumentations(p=1.0, transforms=transforms)
    assert aug.transform is not None and aug.contains_spatial

    out = aug(labels_with_rect())
    box = out["instances"].bboxes  # normalised xywh after the step
    x1, y1, x2, y2 = RECT
    flipped = np.array([(W - x2 + W - x1) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H])
    np.testing.assert_allclose(white_box_xywhn(out["img"]), flipped)  # the image was flipped...
    np.testing.assert_allclose(box, flipped[None], atol=1e-6)  # ...and the box went with it
    assert out["cls"].ravel().tolist() == [1.0]


def test_compose_probability_is_kept(tmp_path):
    path = tmp_path / "half.yaml"
    A.save(A.Compose([A.HorizontalFlip(p=1.0), A.Blur(p=1.0)], p=0.5), str(path), data_format="yaml")
    (t,) = load_albumentations(path)
    assert isinstance(t, A.Sequential) and t.p == 0.5 and len(t.transforms) == 2


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_albumentations(missing)
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("lr0: 0.01\nmomentum: 0.937\n")  # a hyp file, not a pipeline
    with pytest.raises(AlbumentationsFileError, match="hyp.yaml"):
        load_albumentations(hyp)
    bad = tmp_path / "bad.yaml"
    bad.write_text("transform:\n  __class_fullname__: NoSuchTransform\n  p: 1.0\n")
    with pytest.raises(AlbumentationsFileError, match="bad.yaml"):
        load_albumentations(bad)
