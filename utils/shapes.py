"""The embedded "shapes" detection dataset, generated on first use (no network).

`make_shapes_dataset(root)` draws images of coloured geometric shapes on textured backgrounds and writes them in
YOLO format:

    root/images/{train,val}/000000.jpg ...
    root/labels/{train,val}/000000.txt ...   one row per object: class x_center y_center width height (0..1)
    root/shapes_dataset.json                 what made the folder (generator, version, arguments)

Boxes are computed from the pixels each shape covers (a mask drawn with the same geometry), so they are tight and
clipped to the image. The same seed gives byte-identical label files and identical images.

This module depends only on numpy and OpenCV; data YAMLs name it with literal arguments (`generate:`, utils/data.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross", "hexagon")
GENERATOR = "hornet-yolov5 shapes"
VERSION = 2  # raised whenever the images change: a set marked with another version is made again
GENERATOR_ARGS = {"n_train", "n_val", "imgsz", "seed"}  # make_shapes_dataset's keyword arguments a data YAML may give
MARKER = "shapes_dataset.json"  # written last inside the temp folder: a folder holding it is complete and ours

# Each class has its own colour family, an OpenCV hue (0..180) drawn with random shade: hue +-12 degrees,
# saturation and brightness varied, so one class shows in many colours but classes differ in colour as well as
# in shape. Measured (yolov5n, --img 160, 15 epochs, see README): with colours independent of the class, the
# short benchmark budget learned no classes at all (mAP50 0.20, single-class mAP50 0.88).
CLASS_HUES = (0, 60, 120, 30, 150, 90)  # circle red, square green, triangle blue, star yellow, cross magenta, hexagon cyan
EMPTY_EVERY = 14  # image i has no objects when i % EMPTY_EVERY == 3: about 7 %, and present even in tiny sets
R_MIN, R_MAX = 8 / 320, 0.25  # circumradius range, fraction of the image side (log-uniform)
SUBPIXEL = 4  # OpenCV polygon fixed-point bits: vertices keep 1/16 px precision


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background: gradient, optional stripes or blotches, plus pixel noise.

    Args:
        rng: random generator (consumed).
        size: image side in pixels.

    Returns:
        (size, size, 3) uint8 BGR image.
    """
    # float32 throughout: backgrounds dominate the generation time.
    ramp = np.arange(size, dtype=np.float32) / size
    yy, xx = ramp[:, None], ramp[None, :]
    # Muted base colours keep the saturated shape palette visible on most backgrounds.
    c0, c1 = rng.uniform(40, 200, 3).astype(np.float32), rng.uniform(40, 200, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]

    kind = rng.integers(0, 3)
    if kind == 1:  # stripes at a random angle and period
        a, period = rng.uniform(0, np.pi), rng.uniform(6, 40) / size
        wave = np.sin(np.float32(2 * np.pi / period) * (np.float32(np.cos(a)) * xx + np.float32(np.sin(a)) * yy))
        img += wave[..., None] * (rng.uniform(15, 45) * rng.uniform(0.5, 1.0, 3)).astype(np.float32)
    elif kind == 2:  # blotches: coarse noise upsampled, like a blurry texture
        cells = int(rng.integers(3, 9))
        coarse = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        img += np.float32(rng.uniform(15, 40)) * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    sigma = np.float32(rng.uniform(2, 10))  # sensor-like noise on every background
    img += sigma * rng.standard_normal((size, size, 3), dtype=np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(cls: str, cx: float, cy: float, r: float, rot: float) -> np.ndarray | None:
    """Vertices (N, 2) of a shape with circumradius r centred at (cx, cy), rotated by rot; None for the circle."""
    if cls == "circle":
        return None
    if cls == "square":
        ang, rad = np.arange(4) * np.pi / 2 + np.pi / 4, np.full(4, r)
    elif cls == "triangle":
        ang, rad = np.arange(3) * 2 * np.pi / 3 - np.pi / 2, np.full(3, r)
    elif cls == "hexagon":
        ang, rad = np.arange(6) * np.pi / 3, np.full(6, r)
    elif cls == "star":  # five points, inner radius 0.45 r
        ang, rad = np.arange(10) * np.pi / 5 - np.pi / 2, np.tile([r, 0.45 * r], 5)
    elif cls == "cross":  # plus sign, arm half-width 0.3 r: 12 vertices walked round the outline
        a, b = 0.3 * r, r
        pts = np.array([(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b), (-a, -b), (-a, -a), (-b, -a), (-b, a),
                        (-a, a), (-a, b)])  # fmt: skip
        ang, rad = np.arctan2(pts[:, 1], pts[:, 0]), np.hypot(pts[:, 0], pts[:, 1])
    else:
        raise ValueError(f"unknown shape class {cls!r}")
    ang = ang + rot
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)


def _draw(canvas: np.ndarray, cls: str, cx: float, cy: float, r: float, rot: float, color) -> None:
    """Fill one shape into canvas (image or mask) in place, without anti-aliasing so mask and image agree exactly."""
    poly = _polygon(cls, cx, cy, r, rot)
    s = 1 << SUBPIXEL
    if poly is None:
        cv2.circle(canvas, (round(cx * s), round(cy * s)), round(r * s), color, -1, cv2.LINE_8, SUBPIXEL)
    else:
        cv2.fillPoly(canvas, [np.round(poly * s).astype(np.int32)], color, cv2.LINE_8, SUBPIXEL)


def _class_color(rng: np.random.Generator, c: int) -> tuple[float, float, float]:
    """A BGR colour from class c's family: its hue +-6 (OpenCV units), saturation 150..255, brightness 120..255."""
    hue = (CLASS_HUES[c] + rng.uniform(-6, 6)) % 180
    hsv = np.array([[[hue, rng.uniform(150, 255), rng.uniform(120, 255)]]], np.float32)
    hsv[..., 0] *= 2  # float HSV in OpenCV takes hue in degrees
    bgr = cv2.cvtColor(hsv / np.array([1, 255, 255], np.float32), cv2.COLOR_HSV2BGR)[0, 0] * 255
    return tuple(float(v) for v in bgr)


def _overlap_ok(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    """Allow partial overlap between boxes (xyxy px) but not one shape mostly hiding another."""
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        a1, a2 = (box[2] - box[0]) * (box[3] - box[1]), (b[2] - b[0]) * (b[3] - b[1])
        if inter / (a1 + a2 - inter) > 0.3 or inter / min(a1, a2) > 0.5:
            return False
    return True


def render_shapes_image(rng: np.random.Generator, imgsz: int, n_objects: int):
    """Draw one image.

    Args:
        rng: random generator (consumed).
        imgsz: image side in pixels.
        n_objects: how many shapes to try to place (fewer when no free spot is found; 0 gives a background image).

    Returns:
        (image, background, labels): image and background are (imgsz, imgsz, 3) uint8 BGR arrays (the image is the
        background with the shapes drawn on it, before JPEG compression); labels is a float64 array (n, 5) of
        class, x_center, y_center, width, height, normalized to 0..1, in drawing order.
    """
    bg = _background(rng, imgsz)
    img = bg.copy()
    boxes, labels = [], []
    r_min, r_max = R_MIN * imgsz, R_MAX * imgsz
    mask = np.zeros((imgsz, imgsz), np.uint8)
    for _ in range(n_objects):
        for _try in range(20):  # rejection sampling for a spot that does not bury an earlier shape
            c = int(rng.integers(len(CLASSES)))
            r = float(np.exp(rng.uniform(np.log(r_min), np.log(r_max))))
            # Centres may sit near the border, so some shapes are cut by the image edge (boxes get clipped).
            cx, cy = rng.uniform(-0.2 * r, imgsz + 0.2 * r, 2)
            rot = float(rng.uniform(0, 2 * np.pi))
            mask[:] = 0
            _draw(mask, CLASSES[c], cx, cy, r, rot, 255)
            ys, xs = np.nonzero(mask)
            if len(xs) < 12:  # too little of it visible (off the edge) to be a fair target
                continue
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)  # pixel edges: tight
            if min(box[2] - box[0], box[3] - box[1]) < 4 or not _overlap_ok(box, boxes):
                continue
            color = _class_color(rng, c)
            _draw(img, CLASSES[c], cx, cy, r, rot, color)
            boxes.append(box)
            x1, y1, x2, y2 = box / imgsz
            labels.append((c, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
            break
    return img, bg, np.array(labels, np.float64).reshape(-1, 5)


def _label_text(labels: np.ndarray) -> str:
    """YOLO label file text: fixed 6-decimal formatting, so the bytes depend only on the values."""
    return "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent generator per image: any image can be re-rendered alone (the tests do)."""
    return np.random.default_rng([seed, 0 if split == "train" else 1, index])


def _n_objects(rng: np.random.Generator, index: int, imgsz: int) -> int:
    """Number of shapes to place in image `index`: 0 for the designated empty images, else 1..8 (fewer if small)."""
    if index % EMPTY_EVERY == 3:
        return 0
    return int(rng.integers(1, 9 if imgsz >= 192 else 5))


def _write_split(folder: Path, split: str, n: int, imgsz: int, seed: int) -> None:
    """Render and write n images and labels of one split under folder/images/split and folder/labels/split."""
    img_dir, lbl_dir = folder / "images" / split, folder / "labels" / split
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    for i in range(n):
        rng = _image_rng(seed, split, i)
        img, _, labels = render_shapes_image(rng, imgsz, _n_objects(rng, i, imgsz))
        if not cv2.imwrite(str(img_dir / f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise OSError(f"could not write {img_dir / f'{i:06d}.jpg'}")
        (lbl_dir / f"{i:06d}.txt").write_text(_label_text(labels), encoding="utf-8")


def read_marker(root: Path) -> dict | None:
    """The generator marker of a folder, or None when the folder is not one this generator completed."""
    try:
        meta = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR else None


def make_shapes_dataset(root, n_train: int = 600, n_val: int = 150, imgsz: int = 320, seed: int = 0) -> Path:
    """Generate the shapes detection dataset at root, once.

    Args:
        root (str | Path): dataset folder to create (its parent is created if needed).
        n_train, n_val: numbers of training and validation images.
        imgsz: image side in pixels (square images).
        seed: random seed; the same arguments give byte-identical label files and identical images.

    Returns:
        (Path): root, resolved, holding images/{train,val}, labels/{train,val} and the marker file.

    Behaviour:
        - root already holds a complete set made with the same arguments: nothing is done.
        - root holds a set this generator made with other arguments: it is replaced.
        - root exists and is not empty but lacks the marker: FileExistsError, nothing is touched (never overwrite a
          folder this generator did not make).
        - The set is written into a temporary sibling folder, marked complete, then renamed into place, so an
          interrupted run leaves no half-written root (leftover temporary folders are removed on a later call).
        - Processes that ask for the same root at once (scripts started side by side, DDP ranks) take turns on a lock
          file beside it: one generates, the others find its set complete and use it.
    """
    root = Path(root).expanduser().resolve()
    args = {"n_train": int(n_train), "n_val": int(n_val), "imgsz": int(imgsz), "seed": int(seed)}
    if n_train < 1 or n_val < 1 or imgsz < 32:
        raise ValueError(f"make_shapes_dataset needs n_train, n_val >= 1 and imgsz >= 32, got {args}")
    if _complete(root, args):
        return root  # already made with these arguments
    root.parent.mkdir(parents=True, exist_ok=True)
    with _generation_lock(root):  # scripts started side by side on a fresh machine: one generates, the others wait
        if _complete(root, args):
            return root  # made while this process waited
        return _generate(root, args)


def _complete(root: Path, args: dict) -> bool:
    """Whether root holds a complete set of this generator version made with `args`."""
    meta = read_marker(root)
    return meta is not None and meta.get("version") == VERSION and meta.get("args") == args


@contextmanager
def _generation_lock(root: Path):
    """Hold an exclusive lock on a file beside root while generating (a no-op where file locks do not exist)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(root.parent / f".{root.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        yield


def _generate(root: Path, args: dict) -> Path:
    """Write the set into a temporary sibling, mark it complete, rename it into place (see make_shapes_dataset)."""
    n_train, n_val, imgsz, seed = args["n_train"], args["n_val"], args["imgsz"], args["seed"]
    meta = read_marker(root)
    if root.exists() and meta is None and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and was not made by the shapes generator (no {MARKER}); not touching it")
    _remove_stale_partials(root)
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it owner-only; the dataset should get normal folder permissions
    try:
        _write_split(tmp, "train", n_train, imgsz, seed)
        _write_split(tmp, "val", n_val, imgsz, seed)
        info = {"generator": GENERATOR, "version": VERSION, "args": args, "names": list(CLASSES)}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if root.exists():  # ours but stale (other arguments) or an empty folder: move it aside, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / "set")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    print(f"Shapes dataset: {n_train} train + {n_val} val images ({imgsz}px) written to {root} in {time.time() - t0:.1f}s")
    return root


def _remove_stale_partials(root: Path, max_age_s: float = 600) -> None:
    """Delete temporary folders that an interrupted generation of root left behind (older than max_age_s)."""
    now = time.time()
    for pattern in (f".{root.name}.partial-*", f".{root.name}.old-*"):
        for p in root.parent.glob(pattern):
            try:
                if p.is_dir() and now - p.stat().st_mtime > max_age_s:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass  # raced with its owner: leave it
