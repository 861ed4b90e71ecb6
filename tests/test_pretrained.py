"""Weights users already have: YOLOv5's, YOLOAir's and the ultralytics package's checkpoints read as data (never
run), transferred into every style with rows aligned, and used whole with YOLOv5's own outputs reproduced.

The peer files in ../shared/fixtures/peer_checkpoints/ were written by YOLOv5's and YOLOAir's own code; tests that
need them skip, naming the folder, when ../shared is not beside the project. The ultralytics checkpoints are made
here with the pinned package.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import ROOT, fixture_file, shapes_data_yaml
from models.checkpoints import read_weights
from models.yolo import Model, load_model, save_checkpoint, transfer_weights

N_STYLES = ["yolov5n", "yolov5n-gnconv", "yolov5n-horblock", "yolov5n-hornet", "yolov5n-hornet-gf", "yolov5n-horfpn"]
HORNET_ONLY = {"gnConv", "HorBlock", "HorDown"}  # row kinds no YOLOv5 checkpoint has


def peer(name: str) -> Path:
    return fixture_file(f"peer_checkpoints/{name}")


def peer_images() -> Path:
    return peer("README.md").parent / "images"


@pytest.fixture(scope="module")
def ultralytics_checkpoints(tmp_path_factory) -> dict:
    """yolo11n.pt and yolov5nu.pt as the pinned package writes them (untrained: no file is downloaded)."""
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("ultralytics")
    files = {}
    for name in ("yolo11n", "yolov5nu"):
        torch.manual_seed(0)
        YOLO(f"{name}.yaml").save(folder / f"{name}.pt")
        files[name] = folder / f"{name}.pt"
    return files


# --- reading -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, source", [("yolov5n_raccoon.pt", "YOLOv5"), ("yoloair_yolov5n_C3HB.pt", "YOLOAir"),
                                          ("yoloair_yolov5_gnconv.pt", "YOLOAir"), ("yoloair_yolo_hornet_n_backbone.pt", "YOLOAir")])
def test_peer_checkpoints_are_read_as_data(name, source):
    """Pickles of models.yolo.Model / models.common.*: read without importing their classes or resolving them to ours;
    float16 weights become float32; the model YAML and class names come along."""
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(peer(name))
    assert "models.yolo.Detect" in needed and "models.common.Conv" in needed
    w = read_weights(peer(name))
    assert w.source == source and w.names == {0: "raccoon"} and w.model_yaml["nc"] == 1
    assert all(v.dtype == torch.float32 for v in w.state.values() if v.is_floating_point())
    assert "models.common" not in sys.modules  # their module was never imported (ours has no models.common)
    assert w.state["model.0.conv.weight"].shape[0] == 64 * w.model_yaml["width_multiple"]  # row 0: Conv [64, 6, 2, 2]


def test_plain_data_beside_the_weights_reads_on_any_os(tmp_path):
    """Windows paths (as files saved on Windows hold them), argparse.Namespace and numpy scalars are plain data; an
    EMA, when present, is the model taken."""
    import argparse
    import pathlib

    class WindowsPathAsPickled:  # what a Windows checkpoint's pickle says: pathlib.WindowsPath('C:\\runs', 'exp')
        def __reduce__(self):
            return (pathlib.WindowsPath, ("C:\\runs", "exp"))

    model, ema = torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.Sequential(torch.nn.Linear(2, 2))
    torch.save({"model": model.half(), "ema": ema.half(), "opt": {"save_dir": WindowsPathAsPickled(), "here": pathlib.Path("runs")},
                "args": argparse.Namespace(lr=0.01), "fitness": np.float64(0.5)}, tmp_path / "win.pt")
    w = read_weights(tmp_path / "win.pt")
    assert w.source == "torch" and w.model_yaml is None
    assert torch.equal(w.state["0.weight"], ema[0].weight.float()) and w.state["0.weight"].dtype == torch.float32


def test_a_bare_name_that_is_not_on_disk_says_nothing_is_downloaded(tmp_path, monkeypatch):
    import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"yolov5s\.pt: no such file, and nothing is downloaded here.*ultralytics/yolov5/releases"):
        train.model_of(train.parse_opt(["--weights", "yolov5s.pt"]))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_model("yolo11n.pt")


def test_a_checkpoint_in_upper_case_is_a_checkpoint(tmp_path):
    """best.PT (or .Pt, .PTH): told by its content, so train.py without --cfg trains its model, as with .pt."""
    import shutil

    import train
    from utils.hyp import model_family

    f = tmp_path / "yolov5n.PT"
    shutil.copy(peer("yolov5n_raccoon.pt"), f)
    assert train.model_of(train.parse_opt(["--weights", str(f)])) == (str(f), "yolov5")
    assert model_family(str(f)) == "yolov5" and load_model(f).weights_source == "YOLOv5"


# --- refusing what would run code ------------------------------------------------------------------------------------


class RunsCode:
    """A pickle that calls os.system when it is loaded (what a malicious checkpoint does)."""

    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(folder: Path, marker: Path) -> list[Path]:
    """The same code-running checkpoint under every suffix (case) a user may give, in both torch formats."""
    RunsCode.marker = marker
    files = []
    for name in ("code.pt", "code.PT", "code.Pt", "code.pth", "code.bin", "code.onnx", "code.torchscript"):
        torch.save({"model": RunsCode(), "epoch": 3}, folder / name)
        files.append(folder / name)
    torch.save({"model": RunsCode()}, folder / "old.pt", _use_new_zipfile_serialization=False)
    return files + [folder / "old.pt"]


def test_files_that_would_run_code_are_refused_by_every_entry_point(tmp_path):
    """Every suffix, both formats, every entry point (the scripts' run functions, --resume, the Python API, and the
    engine's own loaders and torch.load, which models switches to safe loading): refused, the marker never appears."""
    import detect
    import export
    import train
    import val
    from ultralytics.nn.autobackend import AutoBackend

    marker = tmp_path / "MARKER"
    data = shapes_data_yaml(tmp_path / "set", n_train=2, n_val=2, imgsz=64, seed=0)
    image = next((tmp_path / "set" / "images" / "val").glob("*.jpg"))
    for f in crafted(tmp_path, marker):
        calls = {
            "read_weights": lambda: read_weights(f),
            "load_model": lambda: load_model(f),
            "train --weights": lambda: train.model_of(train.parse_opt(["--weights", str(f)])),
            "train --weights --cfg": lambda: train.model_of(train.parse_opt(["--weights", str(f), "--cfg", "cfg/yolov5n.yaml"])),
            "train --resume": lambda: train.run(resume=str(f), project=str(tmp_path / "runs")),
            "val": lambda: val.run(weights=str(f), data=str(data), project=str(tmp_path / "val")),
            "detect": lambda: detect.run(weights=str(f), source=str(image), project=tmp_path / "detect"),
            "export": lambda: export.run(weights=str(f), include=["onnx"]),
        }
        for where, call in calls.items():
            with pytest.raises(ValueError, match="refused, nothing in it was run") as e:
                call()
            assert "system" in str(e.value), f"{where} {f.name}: {e.value}"
        with pytest.raises(Exception):  # the engine's loader, as AutoBackend would use it on a .pt
            AutoBackend(str(f), device=torch.device("cpu"), verbose=False)
        with pytest.raises(Exception):
            torch.load(f, weights_only=False)  # forced to weights_only by models (TORCH_FORCE_WEIGHTS_ONLY_LOAD)
    assert not marker.exists()


# --- used whole: YOLOv5's own outputs --------------------------------------------------------------------------------


def test_a_yolov5_checkpoint_rebuilt_reproduces_yolov5s_raw_output():
    """yolov5n_raccoon.pt rebuilt by our parser gives YOLOv5's own head output (its DetectMultiBackend, float32) on
    YOLOv5's own letterboxed inputs: boxes, and objectness x class score (what our head returns), within 1e-3 of
    each output's scale."""
    model = load_model(peer("yolov5n_raccoon.pt"))
    assert model.weights_source == "YOLOv5" and model.names == {0: "raccoon"}
    raw = torch.load(peer("yolov5n_raccoon_raw.pt"), weights_only=True)
    for name, case in raw.items():
        want = case["output"][0]  # (2268, 6): x, y, w, h, objectness, class score
        want = torch.cat([want[:, :4], want[:, 4:5] * want[:, 5:]], 1)
        with torch.no_grad():
            got = model(case["input"])[0][0].T  # (2268, 5)
        scale = want.abs().amax(0)
        assert ((got - want).abs().amax(0) <= 1e-3 * scale).all(), name
        assert (got - want)[:, 4].abs().max() < 1e-4, name


def _yolov5_letterbox_shape(h0: int, w0: int, size: int = 192, stride: int = 32) -> tuple[int, int]:
    """The input shape YOLOv5's detect.py letterboxes an image to (auto: minimal padding to the stride)."""
    r = min(size / h0, size / w0)
    h, w = round(h0 * r), round(w0 * r)
    return h + (size - h) % stride, w + (size - w) % stride


def test_detect_reproduces_yolov5s_detect_rows(tmp_path):
    """Our detect.py on yolov5n_raccoon.pt gives YOLOv5's detect.py rows (--img 192 --conf-thres 0.05 --iou-thres 0.45):
    the same detections, confidences within 0.01, boxes within 1 pixel.

    One difference is YOLOv5's and on purpose not ours: YOLOv5 maps boxes back to the photo with one gain for both
    axes and an unrounded padding, while the letterbox it inverts rounded each side (a 600x304 photo becomes 192x97,
    a y gain of 0.3191, not 0.32). The engine inverts the letterbox exactly, which moves boxes by up to 2.5 px on
    these photos. So YOLOv5's rows are first taken back to letterbox pixels the way YOLOv5 made them, then to the
    photo exactly; the raw rows are also compared, within 3 px."""
    import detect
    from ultralytics.utils.ops import scale_boxes

    expected = json.loads(peer("yolov5n_raccoon_detections.json").read_text())
    run = detect.run(weights=peer("yolov5n_raccoon.pt"), source=peer_images(), imgsz=(192,), conf_thres=0.05,
                     iou_thres=0.45, save_txt=True, save_conf=True, nosave=True, project=tmp_path)
    for name, rows in expected.items():
        h0, w0 = cv2.imread(str(peer_images() / name)).shape[:2]
        label = run.save_dir / "labels" / f"{Path(name).stem}.txt"
        ours = np.array([[float(v) for v in line.split()] for line in label.read_text().splitlines()] if label.exists() else [])
        theirs = np.array(rows)
        assert len(ours) == len(theirs), name
        if not len(ours):
            continue
        ours, theirs = ours[np.argsort(-ours[:, 5])], theirs[np.argsort(-theirs[:, 5])]
        assert np.abs(ours[:, 5] - theirs[:, 5]).max() < 0.01, name

        def xyxy(r):
            return np.stack([(r[:, 1] - r[:, 3] / 2) * w0, (r[:, 2] - r[:, 4] / 2) * h0, (r[:, 1] + r[:, 3] / 2) * w0,
                             (r[:, 2] + r[:, 4] / 2) * h0], 1)

        h1, w1 = _yolov5_letterbox_shape(h0, w0)
        gain = min(h1 / h0, w1 / w0)
        pad = np.array([(w1 - w0 * gain) / 2, (h1 - h0 * gain) / 2] * 2)
        letterboxed = torch.tensor(xyxy(theirs) * gain + pad)  # YOLOv5's boxes in its letterbox pixels
        exact = scale_boxes((h1, w1), letterboxed, (h0, w0)).numpy()
        border = np.isin(xyxy(theirs).round(3), [0, w0, h0])  # sides YOLOv5 clipped to the photo: ours are clipped too
        assert np.abs(xyxy(ours) - np.where(border, xyxy(theirs), exact)).max() <= 1.0, name
        assert np.abs(xyxy(ours) - xyxy(theirs)).max() <= 3.0, name


@pytest.mark.parametrize("name", ["yolov5n_raccoon.pt", "yoloair_yolov5n_C3HB.pt", "yoloair_yolov5_gnconv.pt"])
def test_peer_checkpoints_load_whole(name, said):
    """Without a YAML, the file's own model: every tensor fits (YOLOAir's C3HB and gnconv rows build as YOLOAir built them)."""
    w = read_weights(peer(name))
    model = load_model(peer(name))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in w.state.items() if not k.endswith("num_batches_tracked")), name
    assert not [line for line in said if "starts untrained" in line]


def test_yoloair_horblock_rows_load_into_their_first_block(said):
    """YOLOAir builds one block per HorBlock row whatever its number says; we build the number (n x depth_multiple).
    Its trained block goes into the first block of each row; the added blocks start as the identity (layer scale 1e-6)."""
    model = load_model(peer("yoloair_yolo_hornet_n_backbone.pt"))
    w = read_weights(peer("yoloair_yolo_hornet_n_backbone.pt"))
    assert torch.equal(model.model[4][0].gnconv.proj_in.weight, w.state["model.4.gnconv.proj_in.weight"])
    assert float(model.model[4][1].gamma1.abs().max()) <= 1e-6
    warned = [line for line in said if "starts untrained" in line]
    assert len(warned) == 1 and "yoloair_yolo_hornet_n_backbone.pt (YOLOAir checkpoint)" in warned[0]


def test_ultralytics_checkpoints_rebuilt_give_the_engines_outputs(ultralytics_checkpoints):
    from ultralytics import YOLO

    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    for name, path in ultralytics_checkpoints.items():
        theirs = YOLO(path).model.float().eval()  # the engine's restricted loader (models switched it on)
        ours = load_model(path)
        assert ours.weights_source == "ultralytics" and len(ours.names) == 80
        with torch.no_grad():
            assert torch.equal(theirs(x)[0], ours(x)[0]), name


# --- transferred into every style -------------------------------------------------------------------------------------


def _expected_rows(model) -> tuple[set, set]:
    """(rows that must start new, C3HB rows that keep C3's cv1, cv2, cv3) for a YOLOv5 n-scale file into `model`."""
    new = {i for i, m in enumerate(model.model) if m.type in HORNET_ONLY}
    return new, {i for i, m in enumerate(model.model) if m.type == "C3HB"}


@pytest.mark.parametrize("style", N_STYLES)
def test_a_yolov5_checkpoint_comes_across_into_every_style(style, said):
    """yolov5n_raccoon.pt into each n-scale style with another class count: the rows that exist in YOLOv5 come across
    wherever the style moved them (the HorNet backbone's PAN head sits a row earlier), HorNet-only rows start new,
    C3HB keeps C3's cv1/cv2/cv3, and the head keeps its box and objectness outputs."""
    from utils.trainer import HorNetTrainer

    model = Model(ROOT / "cfg" / f"{style}.yaml", nc=3, verbose=False)
    report = HorNetTrainer.load_weights(model, peer("yolov5n_raccoon.pt"))
    new, csp = _expected_rows(model)
    assert {i for i, _ in report.rows_new} == new
    assert {i for i, *_ in report.rows_partial} == csp | {len(model.model) - 1}
    head = len(model.model) - 1
    assert (head, "Detect", "class outputs new") in report.rows_partial
    state = {k for k in model.state_dict() if not k.endswith(("num_batches_tracked", "stride", "anchors"))}
    full = {k for k in state if int(k.split(".")[1]) not in new | csp}
    assert report.transferred == len(full) + 15 * len(csp)  # a C3HB keeps 3 Convs of 5 tensors each
    assert report.summary() in said and report.summary().startswith("Transferred ")
    src = read_weights(peer("yolov5n_raccoon.pt")).state
    shift = 1 if style.startswith("yolov5n-hornet") else 0  # ConvStem is YOLOv5's rows 0 and 1 in one row
    last_conv = max(i for i, m in enumerate(model.model) if m.type == "Conv")  # the PAN's last downsampling Conv
    assert torch.equal(model.model[last_conv].conv.weight, src[f"model.{last_conv + shift}.conv.weight"])
    if shift:
        assert torch.equal(model.model[0][1].conv.weight, src["model.1.conv.weight"])


def test_yoloair_checkpoints_come_across_into_our_styles():
    """YOLOAir's yolov5n_C3HB (a C3HB of order-5 HorBlocks in row 8, C3 in rows 2-6) into our HorBlock-in-C3 style
    (C3HB rows of order 3): every Conv row and the head whole; each C3HB keeps the CSP convs cv1, cv2, cv3."""
    model = Model(ROOT / "cfg" / "yolov5n-horblock.yaml", nc=1, verbose=False)
    report = transfer_weights(model, read_weights(peer("yoloair_yolov5n_C3HB.pt")), exclude=("anchors",))
    assert {i for i, *_ in report.rows_partial} == {2, 4, 6, 8} and not report.rows_new
    assert all(note == "15/35 tensors" or i != 2 for i, _, note in report.rows_partial)
    assert set(report.rows_full) == {i for i, m in enumerate(model.model) if any(True for _ in m.parameters())} - {2, 4, 6, 8}


def test_ultralytics_checkpoints_come_across(ultralytics_checkpoints):
    """yolo11n.pt into YOLO11 + HorFPN: all but the HorBlocks and the class branch; yolov5nu.pt into the YOLOv5 anchor
    styles: backbone and neck (its anchor-free head has no counterpart)."""
    model = Model(ROOT / "cfg" / "yolo11n-horfpn.yaml", nc=3, verbose=False)
    report = transfer_weights(model, read_weights(ultralytics_checkpoints["yolo11n"]))
    assert {i for i, _ in report.rows_new} == {i for i, m in enumerate(model.model) if m.type == "HorBlock"}
    assert [i for i, *_ in report.rows_partial] == [len(model.model) - 1]
    for style in ("yolov5n", "yolov5n-hornet"):
        model = Model(ROOT / "cfg" / f"{style}.yaml", nc=3, verbose=False)
        report = transfer_weights(model, read_weights(ultralytics_checkpoints["yolov5nu"]), exclude=("anchors",))
        new, csp = _expected_rows(model)
        assert {i for i, _ in report.rows_new} == new | {len(model.model) - 1}


def test_our_checkpoint_into_its_own_yaml_moves_everything(tmp_path):
    src = Model(ROOT / "cfg" / "yolov5n-hornet-gf.yaml", nc=2, verbose=False)
    dst = Model(ROOT / "cfg" / "yolov5n-hornet-gf.yaml", nc=2, verbose=False)
    report = transfer_weights(dst, read_weights(save_checkpoint(tmp_path / "ours.pt", src)))
    assert report.transferred == report.total and report.anchors == "from the file"
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


# --- training from them ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return shapes_data_yaml(tmp_path_factory.mktemp("tiny"), n_train=8, n_val=4, imgsz=64, seed=2)


FAST = ["--epochs", "1", "--img", "64", "--batch-size", "4", "--workers", "0", "--noplots", "--noautoanchor"]


def test_train_from_a_yolov5_checkpoint_into_a_style_and_whole(tiny, tmp_path, said):
    """The user's first commands: `--weights yolov5n.pt --cfg <style>` and `--weights yolov5n.pt` (its own model),
    on data with another class count (6); then our own result fine-tuned with --single-cls."""
    import train

    weights = str(peer("yolov5n_raccoon.pt"))
    trainer = train.main(train.parse_opt(["--weights", weights, "--cfg", "cfg/yolov5n-gnconv.yaml", "--data", str(tiny),
                                          "--project", str(tmp_path), *FAST]))
    assert trainer.best.is_file()
    line = next(s for s in said if s.startswith("Transferred "))
    assert "from yolov5n_raccoon.pt (YOLOv5 checkpoint): rows 0-9, 13, 17-18, 20-21, 23" in line and "new: row 10 (gnConv), row 14 (gnConv)" in line
    said.clear()
    trainer = train.main(train.parse_opt(["--weights", weights, "--data", str(tiny), "--project", str(tmp_path), *FAST]))
    assert load_model(trainer.best).yaml["nc"] == 6
    assert any(s.startswith("Transferred 291/291 tensors") and "anchors: from the file" in s for s in said)
    said.clear()
    trainer = train.main(train.parse_opt(["--weights", str(trainer.best), "--single-cls", "--data", str(tiny),
                                          "--project", str(tmp_path), *FAST]))
    assert load_model(trainer.best).yaml["nc"] == 1
    assert any("HorNet-YOLOv5 checkpoint" in s and "class outputs new" in s for s in said)
