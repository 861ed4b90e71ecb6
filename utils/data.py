"""Dataset glue on the ultralytics engine: data YAML loading with clear errors, and row-level label checks.

- `load_data_config(path)`: ultralytics' `check_det_dataset` with its `download:` step switched off, plus errors that
  name the YAML and the missing path. A dataset YAML is data: its `download:` step (a URL, a bash line or Python code)
  is never run. The embedded shapes set is made by calling its generator with the literal arguments its YAML gives.
- `build_yolo_dataset(...)`: ultralytics' `build_yolo_dataset`, but its detection dataset is `CheckedYOLODataset`,
  which drops bad label rows one by one instead of dropping the whole image.

Why row-level: ultralytics' `verify_image_label` asserts on the whole label file, so one malformed row (wrong column
count, coordinate out of range, unknown class) silently costs every good box of that image. Here the bad rows are
skipped and reported (file and row numbers), the rest of the file is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pickle
import random
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np
import torch
from ultralytics.data import build as ul_build
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import check_det_dataset, verify_image_label
from ultralytics.utils import LOGGER

from models.safe_yaml import short
from utils import shapes

ROOT = Path(__file__).resolve().parents[1]  # repository root
DATA_DIR = ROOT / "data"
ROW_CHECK_VERSION = "rows-2"  # part of the label cache hash: caches written without row checks are rebuilt
_SKIPPED_ROWS = "skipped bad label rows"  # text our messages carry (see _WarnScanMessages)
_CORRUPT = "ignoring corrupt image/label"  # text of ultralytics' message for files it drops


# ---------------------------------------------------------------------------------------------------- data YAMLs
class DataConfigError(ValueError):
    """A dataset YAML whose content cannot be used (not a mapping, no train:, names that do not make classes)."""


def check_data_dict(file, raw) -> None:
    """Raise DataConfigError naming `file` and the key at fault when a parsed data YAML cannot describe a dataset.

    The engine asserts or raises KeyError/SyntaxError on these (names with a gap, nc against names, ...).
    """
    if not isinstance(raw, dict):
        raise DataConfigError(f"data YAML {file}: must be a mapping with train:, val: and names:, got {type(raw).__name__} {short(raw)}")
    for key in ("train", "val"):
        if key not in raw and not (key == "val" and "validation" in raw):
            raise DataConfigError(f"data YAML {file}: no '{key}:' key (the {key} images: a folder, a .txt list or a list of those)")
    nc, names = raw.get("nc"), raw.get("names")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise DataConfigError(f"data YAML {file}: 'nc' must be a positive integer, got {short(nc)}")
    if names is None:
        if nc is None:
            raise DataConfigError(f"data YAML {file}: no 'names:' (the class names, a list or {{0: name, 1: name, ...}})")
        return
    if isinstance(names, list):
        keys = list(range(len(names)))
        values = names
    elif isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names if not isinstance(k, bool))
        except (TypeError, ValueError):
            keys = None
        if keys is None or len(keys) != len(names):
            raise DataConfigError(f"data YAML {file}: 'names' keys must be class indices 0, 1, 2, ..., got {short(list(names))}")
        values = list(names.values())
    else:
        raise DataConfigError(f"data YAML {file}: 'names' must be a list of class names or {{0: name, 1: name, ...}}, got {short(names)}")
    if not values:
        raise DataConfigError(f"data YAML {file}: 'names' is empty: give at least one class name")
    if keys != list(range(len(values))):
        gaps = sorted(set(range(len(values))) - set(keys))
        raise DataConfigError(f"data YAML {file}: 'names' keys must be 0..{len(values) - 1} with no gap, got {keys[:8]} "
                              f"(no class {gaps[0] if gaps else keys[0]})")
    bad = next((v for v in values if isinstance(v, (list, dict)) or v is None), "ok")
    if bad != "ok":
        raise DataConfigError(f"data YAML {file}: each class name must be a single word or string, got {short(bad)}")
    if nc is not None and nc != len(values):
        raise DataConfigError(f"data YAML {file}: nc: {nc} disagrees with its {len(values)} names")


def read_data_yaml(path) -> tuple[Path, dict]:
    """The file a --data path means (from the working directory, else the repository root) and its checked content.

    Raises FileNotFoundError for a missing file or one that is not YAML, DataConfigError for one that is not a dataset.
    """
    given = Path(path).expanduser()
    file = given
    if not file.is_file() and not given.is_absolute() and (ROOT / given).is_file():
        file = ROOT / given
    if not file.is_file() and len(given.parts) == 1:  # a bare name: the ultralytics package's dataset YAMLs (coco128.yaml)
        import ultralytics

        file = next((f for f in sorted((Path(ultralytics.__file__).parent / "cfg" / "datasets").glob(given.name))), file)
    if not file.is_file():
        raise FileNotFoundError(
            f"data YAML not found: '{path}' (looked in {Path.cwd()} and {ROOT}). "
            f"Dataset YAMLs in {DATA_DIR}: {list_data_yamls()}"
        )
    from models.safe_yaml import read_yaml

    raw = read_yaml(file, DataConfigError, f"data YAML {file}", invalid=FileNotFoundError) or {}
    check_data_dict(file, raw)
    return file, raw


def list_data_yamls() -> str:
    """The dataset YAMLs shipped in data/, for error messages."""
    found = sorted(p.name for p in DATA_DIR.glob("*.y*ml")) if DATA_DIR.is_dir() else []
    return ", ".join(f"data/{n}" for n in found) or "none"


def load_data_config(path, autodownload: bool = True) -> dict:
    """Read and check a dataset YAML; generate the embedded set when the YAML names its generator and the data is missing.

    Args:
        path (str | Path): dataset YAML. A relative path is looked up from the working directory first, then from
            the repository root (so `--data data/shapes.yaml` works from anywhere); a bare name also among the
            ultralytics package's dataset YAMLs (`coco128.yaml`: its images need a download, which is not made here).
        autodownload: make the embedded set when its YAML's val images are missing (a `download:` step of any other
            kind is never run: its images must be fetched by hand, and the error says what the step would have done).

    Returns:
        (dict): ultralytics' dataset dict: `train`, `val` (absolute paths), `names` ({index: name}), `nc`,
        `path`, `yaml_file`, `channels`, ...

    Raises:
        FileNotFoundError: the YAML does not exist (message names it and lists data/*.yaml), or its train/val images
            do not exist (message names the YAML, the key and the resolved path).
        DataConfigError: the YAML is not a dataset's (no train:, names that are no list of classes, nc against names).
    """
    file, raw = read_data_yaml(path)
    if autodownload and isinstance(raw, dict):
        _build_embedded_set(file, raw)
    try:
        data = check_det_dataset(str(file), autodownload=False)  # the engine's checks; its download step never runs
    except FileNotFoundError as e:  # ultralytics names the dataset by the string it got; say which YAML and why
        step = raw.get("download") if isinstance(raw, dict) else None
        if step:
            raise FileNotFoundError(f"data YAML {file}: {_missing(e)}; its download: step is not run here (a dataset "
                                    f"YAML is data, never code: {_describe(step)}): fetch the data by hand") from None
        raise FileNotFoundError(f"data YAML {file}: {e}") from e

    _refresh_shapes_set(data)

    # check_det_dataset only checks `val` (and only to decide on downloading): check every split that is given.
    for key in ("train", "val", "test"):
        value = data.get(key)
        if not value:
            if key != "test":
                raise FileNotFoundError(f"data YAML {file}: '{key}:' is empty")
            continue
        for p in value if isinstance(value, (list, tuple)) else [value]:
            if not Path(p).exists():
                msg = f"data YAML {file}: {key} images not found: {p}"
                if key == "test":  # only val.py --task test needs it
                    LOGGER.warning(msg)
                    break
                raise FileNotFoundError(msg)
    return data


def _missing(e: Exception) -> str:
    """The engine's 'images not found' message in one short clause."""
    text = " ".join(str(e).split())
    return (text[:200] + "...") if len(text) > 200 else text


def _describe(step) -> str:
    """What a `download:` step would have done, in a few words (never run)."""
    text = str(step).strip()
    if text.startswith(("http://", "https://")) or (isinstance(step, list) and step):
        return f"it would download {text.split()[0][:120]}"
    if text.startswith("bash "):
        return f"it would run the shell command {text[5:].splitlines()[0][:120]!r}"
    return f"it would run Python code starting {text.splitlines()[0][:80]!r}"


def shapes_generator_args(raw: dict) -> dict | None:
    """The literal arguments of the embedded set's generator that a data YAML names, or None.

    The YAML says `generate: {n_train: 600, n_val: 150, imgsz: 320, seed: 0}`; a YAML whose
    `download:` snippet calls `make_shapes_dataset(..., n_train=600, ...)` is read too, by parsing the call's keyword
    arguments as literals (the snippet itself is never run).
    """
    import ast

    args = raw.get("generate")
    if args is None and isinstance(raw.get("download"), str) and "make_shapes_dataset" in raw["download"]:
        try:
            tree = ast.parse(raw["download"])
        except SyntaxError:
            return None
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "attr", getattr(n.func, "id", None)) == "make_shapes_dataset"]
        if len(calls) != 1:
            return None
        try:
            args = {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords}
        except ValueError:
            return None
    if not isinstance(args, dict) or set(args) - shapes.GENERATOR_ARGS:
        return None
    limits = {"n_train": (1, 100_000), "n_val": (1, 100_000), "imgsz": (32, 4096), "seed": (0, 2**32 - 1)}
    if not all(isinstance(v, int) and not isinstance(v, bool) and limits[k][0] <= v <= limits[k][1] for k, v in args.items()):
        return None
    return args


def _build_embedded_set(file: Path, raw: dict) -> None:
    """Make the embedded set where a YAML that names its generator points, when its val images are missing."""
    args, val = shapes_generator_args(raw), raw.get("val")
    if args is None or not isinstance(val, str) or raw.get("path"):
        return
    folder = (file.parent / val).resolve()
    if not folder.exists():
        shapes.make_shapes_dataset(folder.parent.parent, **args)  # <root>/images/val


def _refresh_shapes_set(data: dict) -> None:
    """Rebuild an embedded shapes set that an older version of utils/shapes.py made (same arguments, new images).

    The YAML's `download:` step only runs when the val images are missing, so a set generated before the
    generator changed would otherwise be trained on silently. Only folders the generator marked as its own are
    touched (make_shapes_dataset replaces them whole).
    """
    val = data.get("val")
    if not isinstance(val, str):
        return
    root = Path(val).parent.parent  # <root>/images/val
    meta = shapes.read_marker(root)
    if meta is None or meta.get("version") == shapes.VERSION or not isinstance(meta.get("args"), dict):
        return
    LOGGER.info(f"{root}: shapes set made by generator version {meta.get('version')}, rebuilding it with version {shapes.VERSION}")
    shapes.make_shapes_dataset(root, **meta["args"])


# ---------------------------------------------------------------------------------------------------- label rows
def _row_problem(fields: list[str], num_cls: int, single_cls: bool, nkpt: int, ndim: int) -> str:
    """Why one label row is unusable for detection, or '' when it is fine.

    Accepted rows: `class x y w h`, a polygon `class x1 y1 x2 y2 x3 y3 ...` (ultralytics turns it into its box), or a
    pose row of the data's kpt_shape (the box is kept). Every coordinate must lie in [0, 1] and the class must be an
    integer in 0..num_cls-1 (any non-negative integer with single_cls).
    """
    n = len(fields)
    is_pose = nkpt > 0 and n == 5 + nkpt * ndim
    if not (n == 5 or is_pose or (n >= 7 and n % 2 == 1)):
        return f"{n} columns, expected 5"
    try:
        values = [float(f) for f in fields]
    except ValueError:
        return "not a number"
    if not all(math.isfinite(v) for v in values):
        return "not a finite number"
    cls = values[0]
    if cls != int(cls) or cls < 0 or (not single_cls and cls >= num_cls):
        return f"class {fields[0]} not in 0..{num_cls - 1}"
    coords = values[1:5] if is_pose else values[1:]  # keypoints may legitimately be negative (invisible) markers
    eps = 1e-6  # tolerate float printing noise such as 1.0000001, nothing more
    if any(v < -eps or v > 1 + eps for v in coords):
        return "coordinates outside [0, 1]"
    return ""


def verify_image_label_rows(args: tuple):
    """ultralytics' `verify_image_label`, with the label file checked row by row first.

    Args:
        args: the tuple `verify_image_label` takes: (im_file, lb_file, prefix, keypoint, num_cls, nkpt, ndim,
            single_cls).

    Returns:
        What `verify_image_label` returns (a 10-item tuple, or a list of 10 with None labels for a dropped file),
        computed on the good rows only. Its message (last item) gains one line naming the label file and each
        skipped row (1-based line number and reason); a dropped image that cannot be decoded is said to be so.
    """
    im_file, lb_file, prefix, keypoint, num_cls, nkpt, ndim, single_cls = args
    good, bad = _split_rows(lb_file, num_cls, single_cls, nkpt, ndim) if not keypoint else ([], [])
    mixed = bool(good) and nkpt == 0 and {len(r.split()) == 5 for r in good} == {True, False}
    if mixed:  # the engine reads a file with any polygon as all polygons, and a box row is no polygon
        good = [_box_as_polygon(r) if len(r.split()) == 5 else r for r in good]
    if not bad and not mixed:  # nothing to change (or pose labels, or a missing/unreadable label file): ultralytics as it is
        return _explain_drop(list(verify_image_label(args)), im_file, prefix)

    # Hand ultralytics a copy with the good rows only, so all its other checks (duplicates, segments) still apply.
    with tempfile.TemporaryDirectory(prefix="hornet-labels-") as tmp:
        clean = Path(tmp) / Path(lb_file).name
        clean.write_text("".join(f"{line}\n" for line in good), encoding="utf-8")
        result = list(verify_image_label((im_file, str(clean), prefix, keypoint, num_cls, nkpt, ndim, single_cls)))
    result[-1] = result[-1].replace(str(clean), str(lb_file))
    result = _explain_drop(result, im_file, prefix)
    note = f"{prefix}{lb_file}: {_SKIPPED_ROWS} ({len(bad)} of {len(bad) + len(good)}, rest kept): " + "; ".join(bad) if bad else ""
    result[-1] = "\n".join(m for m in (result[-1], note) if m)
    return result if result[0] is None else tuple(result)


def _box_as_polygon(row: str) -> str:
    """`c x y w h` as the 4-corner polygon of the same box."""
    c, x, y, w, h = row.split()
    x, y, w, h = map(float, (x, y, w, h))
    x1, y1, x2, y2 = x - w / 2, y - h / 2, x + w / 2, y + h / 2
    return f"{c} {x1:.6g} {y1:.6g} {x2:.6g} {y1:.6g} {x2:.6g} {y2:.6g} {x1:.6g} {y2:.6g}"


def _split_rows(lb_file: str, num_cls: int, single_cls: bool, nkpt: int, ndim: int) -> tuple[list[str], list[str]]:
    """Good rows (text) and descriptions of bad rows ('row N: why') of a label file; ([], []) when it is unreadable."""
    try:
        with open(lb_file, encoding="utf-8-sig") as f:  # utf-8-sig: the encoding ultralytics reads labels with
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return [], []  # missing or unreadable: ultralytics counts or drops it and names it
    good, bad = [], []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue  # blank lines are not rows
        problem = _row_problem(fields, num_cls, single_cls, nkpt, ndim)
        if problem:
            bad.append(f"row {number}: {problem}")
        else:
            good.append(line)
    return good, bad


def _explain_drop(result: list, im_file: str, prefix: str) -> list:
    """When ultralytics dropped the image because it cannot be decoded, say so plainly.

    ultralytics' reason is then often a side effect (e.g. "No module named 'pi_heif'": it tries a HEIF plugin on
    files PIL cannot identify); the file is dropped either way, this only makes the message say why.
    """
    if result[0] is None and _CORRUPT in result[-1] and cv2.imread(str(im_file)) is None:
        result[-1] = f"{prefix}{im_file}: {_CORRUPT}: the image cannot be decoded (damaged or not an image)"
    return result


class _WarnScanMessages(logging.Filter):
    """Raise ultralytics' dataset-scan report to WARNING when it mentions skipped rows or dropped files.

    ultralytics logs its per-file scan messages (and replays them from the label cache) at INFO; problems in the
    user's data deserve a warning. The filter only changes the level of those records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and any(s in str(record.msg) for s in (_SKIPPED_ROWS, _CORRUPT)):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# What an ultralytics label cache (np.save of a dict of lists, strings and numpy arrays) may name: numpy's own rebuilders
CACHE_GLOBALS = {f"numpy.{m}.multiarray.{f}" for m in ("core", "_core") for f in ("_reconstruct", "scalar")} | {
    "numpy.ndarray", "numpy.dtype", "builtins.set", "collections.OrderedDict"}


class _DataOnly(pickle.Unpickler):
    """An unpickler that resolves only the globals of CACHE_GLOBALS (every class lookup comes through find_class)."""

    def find_class(self, module, name):
        if f"{module}.{name}" not in CACHE_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def cache_is_data(path: Path) -> tuple[bool, str]:
    """(True, '') when a .npy label cache holds only data; else (False, the global it names). The payload is
    unpickled with numpy's rebuilders as the only globals, so nothing in it can run."""
    if not path.is_file():
        return True, ""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(f)
            if not dtype.hasobject:
                return True, ""
            _DataOnly(f).load()
    except pickle.UnpicklingError as e:
        return False, str(e)
    except Exception:
        return True, ""  # not a .npy file, or a broken one: the engine finds it unreadable and scans anew
    return True, ""


class CheckedYOLODataset(YOLODataset):
    """ultralytics' YOLODataset whose label scan skips bad rows instead of whole files.

    Bad rows (wrong column count, coordinates outside [0, 1], unknown class, not a number) are dropped with one
    warning per label file that names the file and the row numbers; unreadable or corrupt images are dropped by
    ultralytics with a message naming the image (raised to a warning here). The label cache keeps working: its hash
    includes ROW_CHECK_VERSION, so caches made without row checks are rebuilt, and the messages are replayed (as
    warnings) whenever the cache is read.
    """

    sample_seed = None  # set by the trainer: augmentation seeded per (seed, epoch, image) for EpochIndex indices

    def __getitem__(self, index):
        """The engine's sample; for an EpochIndex, with Python's, numpy's and torch's random state seeded by (seed, epoch,
        image), so that an epoch's augmentation does not depend on what ran before it (a resumed run matches)."""
        epoch = getattr(index, "epoch", None)
        if epoch is not None and self.sample_seed is not None:
            s = sample_seed(self.sample_seed, epoch, int(index))
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)  # the engine's Albumentations step seeds albumentations' own RNG from torch's seed
        return super().__getitem__(int(index))

    def verify_args(self) -> tuple:
        """ultralytics' per-image verification, with `verify_image_label` replaced by the row-checking version."""
        func, iterable = super().verify_args()
        return (verify_image_label_rows if func is verify_image_label else func), iterable

    def _load_or_scan_cache(self, cache_path: Path, cache_hash: str):
        """The engine's cache load (np.load with allow_pickle), only for a cache that holds data: a cache file in a
        data set's folder that names code is moved aside, with a line saying so, and the labels are scanned anew."""
        ok, what = cache_is_data(Path(cache_path))
        if not ok:
            aside = Path(cache_path).with_name(Path(cache_path).name + ".refused")
            os.replace(cache_path, aside)
            LOGGER.warning(f"{cache_path}: a label cache that would run code when loaded ({what}): not read, moved to {aside}; "
                           "the labels are scanned anew")
        return super()._load_or_scan_cache(cache_path, cache_hash)

    def get_img_files(self, img_path):
        """The engine's image list, each file once: a symlink loop (or a link to a folder listed already) reaches the
        same files again under ever longer paths, and the engine would take every path for another image."""
        files = super().get_img_files(img_path)
        shortest: dict[str, str] = {}
        for f in files:
            real = os.path.realpath(f)
            if real not in shortest or len(f) < len(shortest[real]):
                shortest[real] = f
        if len(shortest) < len(files):
            LOGGER.warning(f"{self.prefix}{img_path}: {len(files) - len(shortest)} image paths lead to files listed already "
                           f"(a symlink loop or a link to another listed folder): each of the {len(shortest)} images is used once")
            keep = set(shortest.values())
            files = [f for f in files if f in keep]
        return files

    def get_labels(self) -> list[dict]:
        """ultralytics' get_labels; first one line per label file that two images (a.jpg, a.png) would share."""
        from ultralytics.data.utils import img2label_paths

        by_label: dict[str, list[str]] = {}
        for im, lb in zip(self.im_files, img2label_paths(self.im_files)):
            by_label.setdefault(lb, []).append(im)
        shared = {lb: ims for lb, ims in by_label.items() if len(ims) > 1}
        for lb, ims in list(shared.items())[:5]:
            LOGGER.warning(f"{self.prefix}{lb} is the label file of {len(ims)} images ({', '.join(Path(i).name for i in ims)}): "
                           f"each of them takes its boxes; rename all but one image if they are different pictures")
        if len(shared) > 5:
            LOGGER.warning(f"{self.prefix}{len(shared) - 5} more label files are shared by several images")
        return self._get_labels_warned()

    def get_cache_hash(self) -> str:
        """ultralytics' cache hash, salted so that a cache written by plain ultralytics is not reused."""
        return hashlib.sha256(f"{super().get_cache_hash()}|{ROW_CHECK_VERSION}".encode()).hexdigest()

    def _get_labels_warned(self) -> list[dict]:
        """ultralytics' get_labels, with the scan report about skipped rows and dropped files logged as warnings."""
        warn = _WarnScanMessages()
        LOGGER.addFilter(warn)
        try:
            return super().get_labels()
        finally:
            LOGGER.removeFilter(warn)


class EpochIndex(int):
    """A dataset index that carries the epoch it is drawn for (to the loader's worker processes too)."""

    def __new__(cls, value: int, epoch: int):
        self = super().__new__(cls, value)
        self.epoch = epoch
        return self

    def __reduce__(self):
        return EpochIndex, (int(self), self.epoch)


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled training order that is a function of (seed, epoch) alone: each pass over it is the next epoch.

    The engine's loader draws its order from one generator that runs on from epoch 0, so a resumed run would draw
    epoch 1's order again. The loader asks for an epoch's order before that epoch starts (its workers prefetch), so
    passes are counted here; `epoch` is set where the loader's iterator is made anew (resume, close_mosaic).
    """

    def __init__(self, n: int, seed: int, epoch: int = 0):
        self.n, self.seed, self.epoch = n, int(seed), epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter([EpochIndex(i, epoch) for i in torch.randperm(self.n, generator=g).tolist()])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The random seed of one training sample's augmentation."""
    return ((int(seed) * 1_000_003 + epoch) * 1_000_003 + index) % 2**32


_BUILD_LOCK = threading.Lock()


@contextlib.contextmanager
def _detection_dataset_class(cls):
    """Make ultralytics' build_yolo_dataset construct cls where it would construct YOLODataset (restored after)."""
    with _BUILD_LOCK:
        original = ul_build.YOLODataset
        ul_build.YOLODataset = cls
        try:
            yield
        finally:
            ul_build.YOLODataset = original


def build_yolo_dataset(cfg, img_path, batch, data, mode="train", rect=False, stride=32, multi_modal=False, fraction=None):
    """ultralytics.data.build_yolo_dataset with CheckedYOLODataset as the detection dataset.

    Same arguments and return as the ultralytics function (cfg: the trainer's args namespace; img_path: image folder,
    list file or list of them; batch; data: the dict of `load_data_config`; mode 'train' augments; rect, stride,
    multi_modal, fraction as there). Calling it rather than repeating it keeps the engine's choices (padding,
    rectangular batches, dataset fraction, other tasks' dataset classes) in one place.
    """
    with _detection_dataset_class(CheckedYOLODataset):
        return ul_build.build_yolo_dataset(cfg, img_path, batch, data, mode, rect, stride, multi_modal, fraction)
