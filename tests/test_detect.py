"""detect.py on tiny untrained models: videos keep every frame at their fps, folders give annotated images and
YOLO-format labels, a video file stands in for a webcam, --classes/--conf-thres filter, bad input gives a
clear message naming the thing at fault, and a stopped run leaves a playable video.

Most runs are in-process (`detect.run`), so that cv2.VideoCapture can be monkeypatched and each run costs
well under a second; one test runs the script as a user would, for its exit status and message.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
from models.yolo import Model, save_checkpoint
from utils.predict import HorNetPredictor, SourceError

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NAMES = {0: "circle", 1: "square", 2: "triangle"}
SCORES = (0.9, 0.6, 0.3)  # the confident model's class score on each detection level (P3, P4, P5)
FPS, FRAMES, H, W = 7, 12, 64, 96


def write_video(path: Path, frames: int = FRAMES, fps: int = FPS) -> Path:
    """A small MJPG .avi of moving discs, (H, W) frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    for i in range(frames):
        im = np.full((H, W, 3), (40 + 10 * i) % 256, np.uint8)
        cv2.circle(im, ((10 + 6 * i) % W, H // 2), 9, (0, 0, 255), -1)
        writer.write(im)
    writer.release()
    return path


def count_frames(path: Path) -> tuple[int, float]:
    """(frames decodable, fps) of a video file, read back with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n, fps = 0, cap.get(cv2.CAP_PROP_FPS)
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, fps


def make_confident(model: Model) -> Model:
    """Head weights zeroed and biases set so every cell of level i predicts class i with score SCORES[i]."""
    head = model.model[-1]
    with torch.no_grad():
        for level, conv in enumerate(head.m):
            conv.weight.zero_()
            b = conv.bias.view(head.na, head.no)
            b.fill_(-10.0)  # other classes: score ~5e-5
            b[:, :4] = 0.0  # boxes: centred in the cell, anchor-sized
            b[:, 4] = 10.0  # objectness ~1
            p = SCORES[level]
            b[:, 5 + level] = math.log(p / (1 - p))
    return model


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Checkpoints (an untrained yolov5n-hornet and a confident one, nc=3), a video, a folder of 5 images."""
    d = tmp_path_factory.mktemp("detect")
    torch.manual_seed(0)
    model = Model(ROOT / "cfg/yolov5n-hornet.yaml", nc=3, verbose=False)
    model.names = dict(NAMES)
    save_checkpoint(d / "plain.pt", model)
    save_checkpoint(d / "confident.pt", make_confident(model))
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        cv2.imwrite(str(images / f"img{i}.jpg"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return {"dir": d, "plain": d / "plain.pt", "confident": d / "confident.pt", "video": write_video(d / "clip.avi"), "images": images}


def run(assets, tmp_path, **kw):
    """detect.run with small defaults and results under tmp_path/runs."""
    args = {"weights": assets["plain"], "imgsz": [96], "project": tmp_path / "runs", "device": "cpu"}
    return detect.run(**{**args, **kw})


def read_labels(folder: Path) -> dict[str, np.ndarray]:
    """{file stem: (n, 5 or 6) array} of the YOLO-format label files in folder."""
    return {p.stem: np.loadtxt(p, ndmin=2) for p in sorted(folder.glob("*.txt"))}


def test_video_keeps_every_frame_and_fps(assets, tmp_path):
    predictor = run(assets, tmp_path, source=assets["video"])
    out = predictor.save_dir / "clip.avi"
    assert out.is_file()
    n, fps = count_frames(out)
    assert n == FRAMES and fps == pytest.approx(FPS)
    assert predictor.save_dir == tmp_path / "runs" / "exp"


def test_vid_stride_halves_frames_keeps_duration(assets, tmp_path):
    predictor = run(assets, tmp_path, source=assets["video"], vid_stride=2)
    n, fps = count_frames(predictor.save_dir / "clip.avi")
    assert n == FRAMES // 2 and fps == pytest.approx(FPS / 2)


def test_folder_gives_annotated_images_and_yolo_labels(assets, tmp_path):
    predictor = run(assets, tmp_path, weights=assets["confident"], source=assets["images"], save_txt=True)
    saved = sorted(p.name for p in predictor.save_dir.glob("*.jpg"))
    assert saved == [f"img{i}.jpg" for i in range(5)]
    assert cv2.imread(str(predictor.save_dir / "img0.jpg")).shape == (H, W, 3)  # annotated at the input's size
    labels = read_labels(predictor.save_dir / "labels")
    assert sorted(labels) == [f"img{i}" for i in range(5)]
    for rows in labels.values():
        assert rows.shape[1] == 5  # class xc yc w h
        assert set(np.unique(rows[:, 0])) <= {0, 1, 2}
        assert (rows[:, 1:] >= 0).all() and (rows[:, 1:] <= 1).all()  # normalized to the image
    # a second run increments the run folder like YOLOv5: exp, exp2
    again = run(assets, tmp_path, source=assets["images"] / "img0.jpg", nosave=True)
    assert again.save_dir.name == "exp2" and not list(again.save_dir.glob("*.jpg"))


def test_classes_and_conf_thres_filter(assets, tmp_path):
    def labels(**kw):
        p = run(assets, tmp_path, weights=assets["confident"], source=assets["images"] / "img0.jpg", save_txt=True, save_conf=True, **kw)
        return read_labels(p.save_dir / "labels")["img0"]

    everything = labels(conf_thres=0.25)
    assert everything.shape[1] == 6  # class xc yc w h conf
    assert set(everything[:, 0]) == {0, 1, 2}
    only = labels(conf_thres=0.25, classes=[0, 2])
    assert set(only[:, 0]) == {0, 2}
    confident = labels(conf_thres=0.5)
    assert set(confident[:, 0]) == {0, 1} and (confident[:, 5] >= 0.5).all()
    assert set(labels(conf_thres=0.7)[:, 0]) == {0}
    assert len(labels(conf_thres=0.25, max_det=5)) == 5


def fake_camera(monkeypatch, video: Path, index: int = 0):
    """cv2.VideoCapture(index) opens `video` instead (a stand-in camera); other indices open nothing."""
    real = cv2.VideoCapture

    def capture(source, *args):
        if isinstance(source, int):
            return real(str(video)) if source == index else real()
        return real(source, *args)

    monkeypatch.setattr(cv2, "VideoCapture", capture)


def test_webcam_stand_in_writes_video_at_camera_fps(assets, tmp_path, monkeypatch):
    fake_camera(monkeypatch, assets["video"])
    predictor = run(assets, tmp_path, source="0", stream_buffer=True)
    out = predictor.save_dir / "0.avi"
    n, fps = count_frames(out)
    assert n == FRAMES and fps == pytest.approx(FPS)


def test_txt_list_and_glob_sources(assets, tmp_path, monkeypatch):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{assets['images'] / 'img0.jpg'}\n{assets['images'] / 'img3.jpg'}\n{assets['video']}\n")
    p = run(assets, tmp_path, source=listing)
    assert sorted(x.name for x in p.save_dir.iterdir() if x.is_file()) == ["clip.avi", "img0.jpg", "img3.jpg"]
    p = run(assets, tmp_path, source=str(assets["images"] / "img*.jpg"))
    assert len(list(p.save_dir.glob("*.jpg"))) == 5
    fake_camera(monkeypatch, assets["video"])
    cams = tmp_path / "cams.txt"
    cams.write_text("0\n")
    p = run(assets, tmp_path, source=cams, stream_buffer=True)
    assert count_frames(p.save_dir / "0.avi")[0] == FRAMES


def test_camera_that_does_not_open_fails_fast_naming_index(assets, tmp_path, monkeypatch):
    import time

    fake_camera(monkeypatch, assets["video"])
    t = time.time()
    with pytest.raises(SourceError, match="camera 7"):
        run(assets, tmp_path, source="7")
    assert time.time() - t < 10


def test_bad_inputs_name_the_culprit(assets, tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(SourceError, match="missing.mp4"):
        run(assets, tmp_path, source=missing)
    with pytest.raises(SourceError, match="matches no file"):
        run(assets, tmp_path, source=str(tmp_path / "*.png"))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        run(assets, tmp_path, weights=junk, source=assets["images"])
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        run(assets, tmp_path, weights=tmp_path / "nothere.pt", source=assets["images"])
    with pytest.raises(ValueError, match="^--device 99: "):  # the flag at fault, not the weights
        run(assets, tmp_path, device="99", source=assets["images"])
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(os.urandom(4000))
    with pytest.raises(SourceError, match="garbage.avi"):
        run(assets, tmp_path, source=garbage)


def test_truncated_video_keeps_frames_read(assets, tmp_path):
    full = write_video(tmp_path / "long.avi", frames=30)
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    readable, _ = count_frames(cut)
    assert 0 < readable < 30
    predictor = run(assets, tmp_path, source=cut)
    n, _ = count_frames(predictor.save_dir / "cut.avi")
    assert n == readable
    assert predictor.incomplete_videos() == {str(cut): (readable, 30)}


def test_ctrl_c_leaves_playable_video(assets, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = HorNetPredictor.inference

    def interrupt_at_fifth(self, im, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, im, *a, **k)

    monkeypatch.setattr(HorNetPredictor, "inference", interrupt_at_fifth)
    with pytest.raises(KeyboardInterrupt):
        run(assets, tmp_path, source=assets["video"])
    n, fps = count_frames(tmp_path / "runs" / "exp" / "clip.avi")
    assert n == 4 and fps == pytest.approx(FPS)


def test_q_key_stops_cleanly(assets, tmp_path, monkeypatch):
    """A display that says yes, and a user who presses q at the third frame: the 2 frames before it are in a playable file."""
    import ultralytics.engine.predictor as engine

    monkeypatch.setattr(detect, "check_imshow", lambda warn=False: True)
    monkeypatch.setattr(engine, "check_imshow", lambda warn=False: True)
    keys = iter([-1, -1, ord("q")])
    for name in ("namedWindow", "resizeWindow", "imshow", "destroyAllWindows"):
        monkeypatch.setattr(cv2, name, lambda *a, **k: None)
    monkeypatch.setattr(cv2, "waitKey", lambda *a: next(keys, ord("q")))
    predictor = run(assets, tmp_path, source=assets["video"], view_img=True)
    n, _ = count_frames(predictor.save_dir / "clip.avi")
    assert n == 2  # ultralytics shows a frame before saving it: the one on screen when q was pressed is not saved
    assert predictor.stopped_by_user and predictor.incomplete_videos() == {}


def test_augment_runs_three_scales_and_merges_them(assets, tmp_path, monkeypatch):
    """--augment runs the model at YOLOv5's scales 1, 0.83, 0.67 (the last flipped) and merges all candidates (the
    model's own test-time augmentation, which the predictor and the validator both call)."""
    import models.yolo

    scales, candidates = [], []
    scale_img = models.yolo.scale_img
    monkeypatch.setattr(models.yolo, "scale_img", lambda im, s, **kw: scales.append(s) or scale_img(im, s, **kw))
    augment = models.yolo.Model._predict_augment

    def counted(self, x):
        y = augment(self, x)
        candidates.append((y[0].shape[2], self._predict_once(x)[0].shape[2]))  # merged, and one scale's
        return y

    monkeypatch.setattr(models.yolo.Model, "_predict_augment", counted)
    predictor = run(assets, tmp_path, weights=assets["confident"], source=assets["images"] / "img1.jpg", augment=True, save_txt=True)
    assert scales[:3] == [1.0, 0.83, 0.67]
    single = run(assets, tmp_path, weights=assets["confident"], source=assets["images"] / "img1.jpg")
    merged, one_scale = candidates[0]
    assert one_scale < merged < 3 * one_scale  # three scales' candidates, the tails clipped
    assert read_labels(predictor.save_dir / "labels")["img1"].shape[1] == 5 and single.seen == 1


def test_save_csv_writes_yolov5s_columns_and_the_boxes(assets, tmp_path):
    import csv

    predictor = run(assets, tmp_path, weights=assets["confident"], source=assets["images"], save_csv=True, save_txt=True, save_conf=True)
    rows = list(csv.reader(open(predictor.save_dir / "predictions.csv")))
    assert rows[0] == ["Image Name", "Prediction", "Confidence", "x1", "y1", "x2", "y2"]
    labels = read_labels(predictor.save_dir / "labels")
    assert len(rows) - 1 == sum(len(v) for v in labels.values()) > 0  # one row per box, as in the label files
    assert {r[0] for r in rows[1:]} == {f"{stem}.jpg" for stem in labels} and {r[1] for r in rows[1:]} <= set(NAMES.values())


def test_cli_errors_exit_nonzero_with_message(assets, tmp_path):
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    cmd = [PY, str(ROOT / "detect.py"), "--weights", str(assets["plain"]), "--source", str(tmp_path / "nope.jpg"), "--project", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    assert "source not found" in r.stdout + r.stderr and "nope.jpg" in r.stdout + r.stderr
