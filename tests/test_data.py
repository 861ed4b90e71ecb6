"""The embedded shapes dataset and the data checks (utils/shapes.py, utils/data.py, data/shapes.yaml).

Everything runs on tiny generated sets (96 px, a few dozen images), so the module takes seconds.
"""

import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from utils.data import build_yolo_dataset, load_data_config
from utils.shapes import CLASSES, MARKER, _image_rng, _n_objects, make_shapes_dataset, render_shapes_image

ROOT = Path(__file__).resolve().parents[1]
IMGSZ = 96


def _labels(root: Path) -> dict[str, bytes]:
    """Every label file of a generated set: relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "labels").rglob("*.txt"))}


def _rows(root: Path) -> np.ndarray:
    """All label rows of a set as an (n, 5) array."""
    rows = [line.split() for p in (root / "labels").rglob("*.txt") for line in p.read_text().splitlines()]
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny shapes set made once for the module (16 train + 8 val, 96 px)."""
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n_train=16, n_val=8, imgsz=IMGSZ)


@pytest.fixture
def log_lines():
    """Everything the ultralytics LOGGER says during a test, as (level name, text) pairs.

    The ultralytics logger does not propagate to the root logger, so pytest's caplog does not see it: attach a
    handler to it directly.
    """
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append((record.levelname, record.getMessage()))

    logger = logging.getLogger("ultralytics")
    handler = Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _data_yaml(tmp_path: Path, root: Path) -> Path:
    """A data YAML for a generated set."""
    file = tmp_path / "tiny.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    file.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return file


def _cfg():
    """The engine's default training args at the tiny image size."""
    from ultralytics.cfg import get_cfg

    cfg = get_cfg()
    cfg.imgsz = IMGSZ
    return cfg


# ------------------------------------------------------------------------------------------------- the generator
def test_generator_layout_classes_and_empty_images(tiny):
    assert (tiny / MARKER).is_file()
    for split, n in (("train", 16), ("val", 8)):
        images = sorted((tiny / "images" / split).glob("*.jpg"))
        labels = sorted((tiny / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]
        assert cv2.imread(str(images[0])).shape == (IMGSZ, IMGSZ, 3)
    rows = _rows(tiny)
    assert len(CLASSES) >= 5
    assert set(rows[:, 0].astype(int)) <= set(range(len(CLASSES)))
    assert (rows[:, 1:] >= 0).all() and (rows[:, 1:] <= 1).all()
    x, y, w, h = rows[:, 1:].T
    assert (x - w / 2 >= -1e-6).all() and (x + w / 2 <= 1 + 1e-6).all()  # whole boxes inside the image
    assert (y - h / 2 >= -1e-6).all() and (y + h / 2 <= 1 + 1e-6).all()
    empty = [p for p in (tiny / "labels").rglob("*.txt") if p.read_text() == ""]
    assert empty, "some images must have no objects"


def test_generator_classes_sizes_on_default_size():
    """Across a few hundred rendered 320 px images: all classes appear, from ~16 px objects to large ones."""
    rows = []
    for i in range(60):
        rng = _image_rng(0, "train", i)
        rows.append(render_shapes_image(rng, 320, _n_objects(rng, i, 320))[2])
    rows = np.concatenate(rows)
    assert set(rows[:, 0].astype(int)) == set(range(len(CLASSES)))
    sides = rows[:, 3:5].max(1) * 320
    assert sides.min() <= 20 and sides.max() >= 100


def test_generator_is_deterministic(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", n_train=6, n_val=4, imgsz=IMGSZ, seed=0)
    b = make_shapes_dataset(tmp_path / "b", n_train=6, n_val=4, imgsz=IMGSZ, seed=0)
    c = make_shapes_dataset(tmp_path / "c", n_train=6, n_val=4, imgsz=IMGSZ, seed=1)
    assert _labels(a) == _labels(b)
    assert _labels(a) != _labels(c)
    for p in (a / "images").rglob("*.jpg"):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()


def test_boxes_are_tight_on_the_drawn_pixels():
    """Each box is where the shape's pixels are: its border rows/columns hold shape pixels, and for shapes with no
    neighbour the ring just outside the box is background."""
    checked = 0
    for i in range(12):
        rng = _image_rng(0, "train", i)
        img, bg, labels = render_shapes_image(rng, IMGSZ, _n_objects(rng, i, IMGSZ))
        changed = (img != bg).any(2)  # shape pixels (a flat colour against a noisy background)
        boxes = np.stack([labels[:, 1] - labels[:, 3] / 2, labels[:, 2] - labels[:, 4] / 2,
                          labels[:, 1] + labels[:, 3] / 2, labels[:, 2] + labels[:, 4] / 2], 1)  # fmt: skip
        boxes = np.round(boxes * IMGSZ).astype(int)
        for j, (x1, y1, x2, y2) in enumerate(boxes):
            inside = changed[y1:y2, x1:x2]
            assert inside.mean() > 0.3, f"image {i} box {j}: few shape pixels inside"
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            others = np.delete(boxes, j, 0)
            alone = not any(min(x2, b[2]) > max(x1, b[0]) - 2 and min(y2, b[3]) > max(y1, b[1]) - 2 for b in others)
            if alone:
                grown = changed[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1]  # the box and a 1 px ring
                assert grown.sum() == inside.sum(), f"image {i} box {j}: shape pixels outside its box"
                checked += 1
    assert checked >= 5


def test_saved_labels_match_rendering(tiny):
    """The label files are the renderer's boxes (so the pixel test above covers the saved set)."""
    for i in (0, 1, 5):
        rng = _image_rng(0, "train", i)
        _, _, labels = render_shapes_image(rng, IMGSZ, _n_objects(rng, i, IMGSZ))
        saved = np.loadtxt(tiny / "labels" / "train" / f"{i:06d}.txt", ndmin=2).reshape(-1, 5)
        np.testing.assert_allclose(saved, labels, atol=1e-6)


def test_generator_reuses_and_refuses(tmp_path, tiny):
    stamp = (tiny / MARKER).stat().st_mtime_ns
    assert make_shapes_dataset(tiny, n_train=16, n_val=8, imgsz=IMGSZ) == tiny  # complete: nothing redone
    assert (tiny / MARKER).stat().st_mtime_ns == stamp
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not made by the shapes generator"):
        make_shapes_dataset(foreign, n_train=2, n_val=2, imgsz=IMGSZ)
    assert (foreign / "keep.txt").read_text() == "user data"
    # An interrupted generation leaves only a temporary sibling folder, never a root: the next call generates the
    # set and removes the leftover once it is old enough not to belong to a generation still running.
    leftover = tmp_path / ".fresh.partial-dead"
    (leftover / "images" / "train").mkdir(parents=True)
    os.utime(leftover, (0, 0))
    fresh = make_shapes_dataset(tmp_path / "fresh", n_train=2, n_val=2, imgsz=IMGSZ)
    assert (fresh / MARKER).is_file() and not leftover.exists()
    # ... while a set of ours with other arguments is replaced.
    other = make_shapes_dataset(tmp_path / "other", n_train=2, n_val=2, imgsz=IMGSZ)
    make_shapes_dataset(other, n_train=3, n_val=2, imgsz=IMGSZ)
    assert len(list((other / "images" / "train").glob("*.jpg"))) == 3
    assert not list(tmp_path.glob(".*partial-*"))  # no temporary folders left behind


# ------------------------------------------------------------------------------------------------- data YAMLs
def test_check_det_dataset_on_generated_set(tmp_path, tiny):
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(_data_yaml(tmp_path, tiny)))
    assert data["nc"] == len(CLASSES) and Path(data["train"]).is_dir() and Path(data["val"]).is_dir()


def small_repo(tmp_path) -> Path:
    """A temp 'repo' with a copy of data/shapes.yaml (generating 4 + 3 images at 64 px) and of utils/shapes.py."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "utils").mkdir()
    yaml_text = (ROOT / "data" / "shapes.yaml").read_text().replace("n_train: 600, n_val: 150, imgsz: 320", "n_train: 4, n_val: 3, imgsz: 64")
    assert "n_train: 4" in yaml_text
    (repo / "data" / "shapes.yaml").write_text(yaml_text)
    shutil.copy(ROOT / "utils" / "shapes.py", repo / "utils" / "shapes.py")
    return repo


def test_embedded_set_builds_into_datasets_beside_repo(tmp_path, monkeypatch):
    """data/shapes.yaml's `generate:` arguments, on a copy in a temp 'repo': the set lands beside it from any folder."""
    repo = small_repo(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the set must land beside the repo whatever the working directory
    for _ in range(2):  # generated once, then found
        data = load_data_config(repo / "data" / "shapes.yaml")
        expected = (tmp_path / "datasets" / "shapes" / "images").resolve()
        assert Path(data["train"]) == expected / "train" and Path(data["val"]) == expected / "val"
        assert len(list(Path(data["val"]).glob("*.jpg"))) == 3 and data["nc"] == len(CLASSES)
    assert not (repo / "datasets").exists()


def test_a_download_step_is_never_run_even_when_it_names_the_generator(tmp_path, monkeypatch):
    """A `download:` snippet that mentions make_shapes_dataset but runs a command: nothing runs, the error says so."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    f = tmp_path / "evil.yaml"
    f.write_text(f"train: images/train\nval: images/val\nnames: {{0: a}}\n"
                 f"download: \"make_shapes_dataset = 1; __import__('os').system('touch {marker}')\"\n")
    with pytest.raises(FileNotFoundError, match="download: step is not run here") as e:
        load_data_config(f)
    assert "evil.yaml" in str(e.value) and "Python code" in str(e.value)
    assert not marker.exists()


def test_an_older_download_snippet_is_read_for_its_literal_arguments(tmp_path):
    """A shapes.yaml of an earlier version (its download: snippet calls the generator): the keyword arguments are
    parsed as literals and the generator called with them; the snippet itself is never run."""
    from utils.data import shapes_generator_args

    snippet = ("import importlib.util\nrepo = 1\n"
               "root = shapes.make_shapes_dataset(repo.parent / 'datasets' / 'shapes', n_train=5, n_val=2, imgsz=64, seed=3)\n")
    assert shapes_generator_args({"download": snippet}) == {"n_train": 5, "n_val": 2, "imgsz": 64, "seed": 3}
    assert shapes_generator_args({"download": snippet.replace("seed=3", "seed=__import__('os').getpid()")}) is None
    assert shapes_generator_args({"generate": {"n_train": 10**9}}) is None  # bounded
    assert shapes_generator_args({"generate": {"n_train": 4, "root": "/"}}) is None  # only the generator's own keys
    f = tmp_path / "data" / "old.yaml"
    f.parent.mkdir()
    f.write_text(yaml.safe_dump({"train": "../sets/s/images/train", "val": "../sets/s/images/val",
                                 "names": dict(enumerate(CLASSES)), "download": snippet}))
    data = load_data_config(f)
    assert len(list(Path(data["train"]).glob("*.jpg"))) == 5 and len(list(Path(data["val"]).glob("*.jpg"))) == 2


def test_load_data_config_builds_the_embedded_set_without_naming_wrong_folders(tmp_path, monkeypatch, log_lines):
    """The engine's download path logs a 'missing path' inside the repo and 'saved to' its datasets dir: neither
    is where the set goes. load_data_config builds it first and names only the right folder."""
    repo = small_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    data = load_data_config(repo / "data" / "shapes.yaml")
    expected = (tmp_path / "datasets" / "shapes" / "images" / "val").resolve()
    assert Path(data["val"]) == expected and len(list(expected.glob("*.jpg"))) == 3
    said = " ".join(text for _, text in log_lines)
    assert "missing path" not in said and "saved to" not in said


def test_load_data_config_rebuilds_a_set_from_an_older_generator(tmp_path):
    """A shapes set made by an older utils/shapes.py is regenerated (same arguments) instead of trained on."""
    import json

    from utils import shapes

    root = make_shapes_dataset(tmp_path / "old", n_train=3, n_val=2, imgsz=64, seed=5)
    current = _labels(root)
    meta = json.loads((root / MARKER).read_text())
    (root / MARKER).write_text(json.dumps({**meta, "version": shapes.VERSION - 1}))
    (root / "labels" / "train" / "000000.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # what the old generator drew
    load_data_config(_data_yaml(tmp_path, root))
    assert json.loads((root / MARKER).read_text())["version"] == shapes.VERSION
    assert _labels(root) == current


def test_load_data_config_missing_yaml_names_it():
    with pytest.raises(FileNotFoundError, match="no_such_data.yaml") as e:
        load_data_config("no_such_data.yaml")
    assert "data/shapes.yaml" in str(e.value)  # lists the YAMLs that exist


def test_load_data_config_missing_images_names_yaml_and_path(tmp_path, tiny):
    file = tmp_path / "broken.yaml"
    file.write_text(f"path: {tiny}\ntrain: images/nowhere\nval: images/val\nnames: [a, b]\n")
    with pytest.raises(FileNotFoundError, match="broken.yaml") as e:
        load_data_config(file)
    assert "nowhere" in str(e.value) and "train" in str(e.value)
    file.write_text(f"path: {tiny}\ntrain: images/train\nval: images/gone\nnames: [a, b]\n")
    with pytest.raises(FileNotFoundError, match="broken.yaml") as e:
        load_data_config(file)
    assert "gone" in str(e.value)


# ------------------------------------------------------------------------------------------------- bad labels/images
@pytest.fixture
def damaged(tmp_path, tiny) -> Path:
    """A copy of the tiny set with one label file holding bad rows and one image that is not an image."""
    root = Path(shutil.copytree(tiny, tmp_path / "damaged"))
    label = root / "labels" / "train" / "000001.txt"
    good = label.read_text().splitlines()
    assert len(good) >= 2
    rows = ["0 0.5 0.5 0.2", good[0], "1 1.5 0.5 0.1 0.1", *good[1:], "2 0.5 0.5 0.1 0.1 0.3", "99 0.5 0.5 0.1 0.1"]
    label.write_text("\n".join(rows) + "\n")
    (root / "images" / "train" / "000002.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    return root


def test_bad_rows_skipped_good_rows_kept_and_corrupt_image_named(tmp_path, damaged, log_lines):
    data = load_data_config(_data_yaml(tmp_path, damaged))
    label = damaged / "labels" / "train" / "000001.txt"
    n_good = len(label.read_text().splitlines()) - 4
    for attempt in ("scan", "cache"):  # the label cache must give the same labels and repeat the warnings
        log_lines.clear()
        dataset = build_yolo_dataset(_cfg(), data["train"], 4, data, mode="train")
        by_file = {Path(lb["im_file"]).name: lb for lb in dataset.labels}
        assert len(by_file["000001.jpg"]["cls"]) == n_good, attempt
        assert "000002.jpg" not in by_file and len(dataset) == 15
        warnings = "\n".join(text for level, text in log_lines if level == "WARNING")
        assert str(label) in warnings, attempt
        for row in ("row 1: 4 columns", "row 3: coordinates outside [0, 1]", f"row {n_good + 3}: 6 columns",
                    f"row {n_good + 4}: class 99"):  # fmt: skip
            assert row in warnings, (attempt, row)
        assert str(damaged / "images" / "train" / "000002.jpg") in warnings
    assert (damaged / "labels" / "train.cache").is_file()


def test_clean_set_has_no_warnings(tmp_path, tiny, log_lines):
    data = load_data_config(_data_yaml(tmp_path, tiny))
    dataset = build_yolo_dataset(_cfg(), data["val"], 4, data, mode="val")
    assert len(dataset) == 8
    assert not [t for level, t in log_lines if level == "WARNING" and ("skipped" in t or "corrupt" in t)]


def test_a_label_cache_that_would_run_code_is_moved_aside(tmp_path, log_lines):
    """The engine loads `labels/<split>.cache` with np.load(allow_pickle=True): a cache in a data set's folder whose
    pickle calls os.system would run it. It is checked first (numpy's rebuilders are its only allowed globals), moved
    aside with a warning, and the labels are scanned anew; a cache the engine wrote is read as before."""
    root = make_shapes_dataset(tmp_path / "set", n_train=4, n_val=2, imgsz=IMGSZ, seed=4)
    data = load_data_config(_data_yaml(tmp_path, root))
    build_yolo_dataset(_cfg(), data["train"], 4, data, mode="train")  # writes the engine's own cache
    cache = root / "labels" / "train.cache"
    assert cache.is_file()
    log_lines.clear()
    build_yolo_dataset(_cfg(), data["train"], 4, data, mode="train")
    assert not (root / "labels" / "train.cache.refused").exists()

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'MARKER'}",))

    with open(cache, "wb") as f:
        np.save(f, {"labels": [RunsCode()], "version": "x", "hash": "x"}, allow_pickle=True)
    dataset = build_yolo_dataset(_cfg(), data["train"], 4, data, mode="train")
    assert len(dataset) == 4 and not (tmp_path / "MARKER").exists()
    assert (root / "labels" / "train.cache.refused").is_file()
    assert any("would run code" in t and "posix.system" in t for _, t in log_lines)


def test_a_symlink_loop_does_not_multiply_the_set(tmp_path, log_lines):
    """A link inside images/train back to its own folder: each image once, and one warning saying why."""
    root = make_shapes_dataset(tmp_path / "shapes", n_train=8, n_val=4, imgsz=64, seed=1)
    os.symlink(root / "images" / "train", root / "images" / "train" / "loop")
    data = load_data_config(_data_yaml(tmp_path, root))
    dataset = build_yolo_dataset(_cfg(), data["train"], 4, data, mode="train")
    assert len(dataset) == 8 and all("loop" not in Path(f).relative_to(root).parts for f in dataset.im_files)
    assert sum(len(label["bboxes"]) == 0 for label in dataset.labels) == sum(
        not (root / "labels" / "train" / f"{Path(f).stem}.txt").read_text().strip() for f in dataset.im_files)
    assert any("lead to files listed already (a symlink loop" in text for level, text in log_lines if level == "WARNING")


def test_two_images_sharing_one_label_file_are_named(tmp_path, log_lines):
    root = make_shapes_dataset(tmp_path / "shapes", n_train=8, n_val=4, imgsz=64, seed=2)
    first = sorted((root / "images" / "train").glob("*.jpg"))[0]
    cv2.imwrite(str(first.with_suffix(".png")), cv2.imread(str(first)))
    data = load_data_config(_data_yaml(tmp_path, root))
    build_yolo_dataset(_cfg(), data["train"], 4, data, mode="train")
    label = root / "labels" / "train" / f"{first.stem}.txt"
    said = [text for level, text in log_lines if level == "WARNING" and "is the label file of 2 images" in text]
    assert len(said) == 1 and str(label) in said[0] and first.name in said[0] and first.with_suffix(".png").name in said[0]


def test_a_label_file_mixing_boxes_and_polygons_keeps_every_row(tmp_path):
    """A box row beside a polygon row: both boxes kept, the box row's exactly (the engine reads the whole file as
    polygons, and loses the image)."""
    root = make_shapes_dataset(tmp_path / "shapes", n_train=8, n_val=4, imgsz=64, seed=4)
    image = sorted((root / "images" / "train").glob("*.jpg"))[0]
    (root / "labels" / "train" / f"{image.stem}.txt").write_text(
        "1 0.5 0.5 0.2 0.4\n2 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n")
    data = load_data_config(_data_yaml(tmp_path, root))
    dataset = build_yolo_dataset(_cfg(), data["train"], 4, data, mode="val")
    label = dataset.labels[dataset.im_files.index(str(image))]
    assert label["cls"].ravel().tolist() == [1, 2]
    np.testing.assert_allclose(label["bboxes"], [[0.5, 0.5, 0.2, 0.4], [0.2, 0.2, 0.2, 0.2]], atol=1e-5)


def test_processes_started_together_generate_the_set_once(tmp_path):
    """Scripts started side by side on a fresh machine: one generates the set, the others wait for it and use it
    (none sees a half-made or moved-aside folder)."""
    import subprocess
    import sys

    root = tmp_path / "shapes"
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
            "from utils.shapes import make_shapes_dataset\n"
            "root = make_shapes_dataset(sys.argv[2], n_train=120, n_val=4, imgsz=64)\n"
            "for _ in range(20):  # the set stays in place while the other processes finish\n"
            "    assert len(list((root / 'images' / 'train').glob('*.jpg'))) == 120\n"
            "    time.sleep(0.1)\n")
    repo = str(Path(__file__).resolve().parents[1])
    procs = [subprocess.Popen([sys.executable, "-c", code, repo, str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outs)
    assert sum("written to" in out for out in outs) == 1, outs
    assert not list(tmp_path.glob(".shapes.partial-*"))
