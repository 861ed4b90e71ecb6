"""The ultralytics Python idiom (`from hornet import YOLO`): build every style, train, validate, predict (images and
videos), track, export and predict from the export; the object and detect.py give the same boxes."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import ROOT, fixture_file, shapes_data_yaml
from hornet import YOLO
from models.yolo import Model

STYLES = sorted(p.name for p in (ROOT / "cfg").glob("*.yaml"))


@pytest.mark.parametrize("cfg", STYLES)
def test_every_yaml_builds_the_same_model_as_the_parser(cfg):
    model = YOLO(f"cfg/{cfg}")
    assert model.task == "detect" and isinstance(model.model, Model)
    assert sum(p.numel() for p in model.model.parameters()) == sum(p.numel() for p in Model(ROOT / "cfg" / cfg, verbose=False).parameters())


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.yaml.*model YAML not found"):
        YOLO("no_such.yaml")
    with pytest.raises(FileNotFoundError, match="yolov5x6.pt.*nothing is downloaded"):
        YOLO("yolov5x6.pt")
    model = YOLO("cfg/yolov5n.yaml")
    with pytest.raises(TypeError, match="train\\(\\): unknown argument 'epoch'"):
        model.train(epoch=3)
    with pytest.raises(ValueError, match="source not found: .*missing.jpg"):
        model.predict(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="export\\(\\): this model has no weights file yet"):
        model.export(format="onnx")


def moving_square_video(path: Path, frames: int = 24, size: int = 128) -> Path:
    """A video of one bright square crossing a dark, noisy background (the object a tracker must keep one id for)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
    rng = np.random.default_rng(0)
    for i in range(frames):
        frame = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        x = 8 + i * 3
        frame[40:72, x:x + 32] = 255
        writer.write(frame)
    writer.release()
    return path


class BrightBlobDetector(Model):
    """A stand-in detector for the tracking tests: the box of the image's bright pixels, one class, score 0.9.

    Tracking is the engine's; what is tested is that our predictor hands it boxes frame after frame and that ids
    survive. A trained detector would make the test slow and its boxes noisy."""

    blob = False  # False while the model is built (the parser measures strides through predict)

    def predict(self, x, *args, **kwargs):
        if not self.blob:
            return super().predict(x, *args, **kwargs)
        out = torch.zeros(x.shape[0], 5, 1)
        for b, mask in enumerate(x.mean(1) > 0.9):
            ys, xs = mask.nonzero(as_tuple=True)
            if len(xs):
                x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                out[b, :, 0] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.9])
        return out, None


def blob_model() -> Model:
    model = BrightBlobDetector(ROOT / "cfg" / "yolov5n.yaml", nc=1, verbose=False)
    model.names, model.blob = {0: "square"}, True
    return model.eval()


def test_track_keeps_one_id_for_an_object_crossing_the_video(tmp_path):
    video = moving_square_video(tmp_path / "square.avi")
    model = YOLO("cfg/yolov5n.yaml")
    model.model = blob_model()
    for tracker in ("bytetrack.yaml", "botsort.yaml"):
        results = list(model.track(str(video), tracker=tracker, persist=False, imgsz=128, stream=True, verbose=False))
        assert len(results) == 24
        ids = [r.boxes.id.tolist() if r.boxes.id is not None else [] for r in results]
        assert all(len(i) == 1 for i in ids[1:]), (tracker, ids)
        assert len({i[0] for i in ids[1:]}) == 1, (tracker, ids)  # one object, one id, all the way across
        xs = [float(r.boxes.xywh[0, 0]) for r in results[1:]]
        assert xs == sorted(xs) and xs[-1] - xs[0] > 50  # and the box follows it


def test_detect_track_writes_the_id_column(tmp_path, monkeypatch):
    """detect.py --track on a video: every frame's label row ends with the same track id."""
    import detect

    video = moving_square_video(tmp_path / "square.avi")
    monkeypatch.setattr(detect, "load_weights", lambda weights: blob_model())
    run = detect.run(weights="blob.pt", source=str(video), imgsz=(128,), save_txt=True, track="bytetrack.yaml", project=tmp_path)
    rows = [f.read_text().split() for f in sorted((run.save_dir / "labels").glob("square_*.txt"))]
    assert len(rows) >= 20 and all(len(r) == 6 for r in rows)  # class x y w h id
    assert len({r[5] for r in rows}) == 1
    with pytest.raises(ValueError, match="--track nosuch.yaml: no such tracker"):
        detect.run(weights="blob.pt", source=str(video), track="nosuch.yaml", project=tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of yolov5n through the object, on a tiny generated set."""
    folder = tmp_path_factory.mktemp("api")
    data = shapes_data_yaml(folder / "set", n_train=8, n_val=4, imgsz=64, seed=3)
    model = YOLO("cfg/yolov5n.yaml")
    epochs_seen = []
    model.add_callback("on_train_epoch_end", lambda trainer: epochs_seen.append(trainer.epoch))
    metrics = model.train(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, plots=False, project=str(folder / "runs"),
                          noautoanchor=True, lr0=0.002)
    assert epochs_seen == [0]  # the object's callbacks reach train.py's trainer
    return model, metrics, data, folder


def test_train_runs_train_py_and_the_object_holds_best(trained):
    model, metrics, data, folder = trained
    assert Path(model.ckpt_path) == folder / "runs" / "exp" / "weights" / "best.pt"
    assert (folder / "runs" / "exp" / "results.csv").is_file()
    assert "metrics/mAP50-95(B)" in metrics.results_dict
    assert model.trainer.args.lr0 == 0.002 and model.trainer.args.optimizer == "AdamW"  # the YOLOv5 recipe + lr0
    val = model.val(data=str(data), imgsz=64, batch=4, project=str(folder / "val"))
    assert 0.0 <= val.box.map <= 1.0 and (folder / "val" / "exp").is_dir()


def test_predict_images_and_video_stream(trained, tmp_path):
    model, _, data, folder = trained
    image = next((folder / "set" / "images" / "val").glob("*.jpg"))
    results = model(str(image), imgsz=64, conf=0.001)
    assert len(results) == 1 and results[0].boxes.data.shape[1] == 6
    video = moving_square_video(tmp_path / "v.avi", frames=5, size=64)
    stream = model.predict(str(video), stream=True, imgsz=64, verbose=False)
    assert not isinstance(stream, list) and sum(1 for _ in stream) == 5


def test_the_object_and_detect_py_give_the_same_boxes(tmp_path):
    import detect

    weights = fixture_file("peer_checkpoints/yolov5n_raccoon.pt")
    image = weights.parent / "images" / "raccoon-104.jpg"
    ours = YOLO(weights)(str(image), imgsz=192, conf=0.05, iou=0.45, verbose=False)[0].boxes.data
    run = detect.run(weights=weights, source=str(image), imgsz=(192,), conf_thres=0.05, iou_thres=0.45, nosave=True, project=tmp_path)
    assert torch.equal(ours, run.results[0].boxes.data)


def test_export_openvino_then_predict_from_it(tmp_path):
    weights = tmp_path / "yolov5n_raccoon.pt"
    shutil.copy(fixture_file("peer_checkpoints/yolov5n_raccoon.pt"), weights)
    image = weights.parent / "photo.jpg"
    shutil.copy(fixture_file("peer_checkpoints/images/raccoon-114.jpg"), image)
    model = YOLO(weights)
    folder = model.export(format="openvino", imgsz=192)
    assert folder == str(tmp_path / "yolov5n_raccoon_openvino_model")
    want = model(str(image), imgsz=192, conf=0.1, rect=False, verbose=False)[0].boxes  # the export's square input
    got = YOLO(folder)(str(image), imgsz=192, conf=0.1, verbose=False)[0].boxes
    assert len(got) == len(want) > 0
    assert torch.allclose(got.conf, want.conf, atol=2e-3) and torch.allclose(got.xyxy, want.xyxy, atol=1.0)


def test_export_int8_in_the_engine_idiom(tmp_path):
    """model.export(format="openvino", int8=True, data=..., fraction=...) as in ultralytics: the INT8 folder next to
    the weights, and its best box on a raccoon photo where the float model's is (a YOLOv5 raccoon checkpoint)."""
    from ultralytics.utils.metrics import box_iou

    weights = tmp_path / "yolov5n_raccoon.pt"
    shutil.copy(fixture_file("peer_checkpoints/yolov5n_raccoon.pt"), weights)
    image = tmp_path / "photo.jpg"
    shutil.copy(fixture_file("peer_checkpoints/images/raccoon-114.jpg"), image)
    photos = tmp_path / "photos" / "images"  # calibrated on photos of the kind the model was trained on
    photos.mkdir(parents=True)
    for f in fixture_file("peer_checkpoints/images/raccoon-114.jpg").parent.glob("*.jpg"):
        shutil.copy(f, photos / f.name)
    data = tmp_path / "photos.yaml"
    data.write_text(f"path: {photos.parent}\ntrain: images\nval: images\nnames: {{0: raccoon}}\n")
    model = YOLO(weights)
    folder = model.export(format="openvino", imgsz=192, int8=True, data=str(data), fraction=1.0)
    assert folder == str(tmp_path / "yolov5n_raccoon_int8_openvino_model")
    want = model(str(image), imgsz=192, conf=0.1, rect=False, verbose=False)[0].boxes
    got = YOLO(folder)(str(image), imgsz=192, conf=0.1, verbose=False)[0].boxes
    assert len(got) > 0 and len(want) > 0
    assert box_iou(got.xyxy[:1], want.xyxy[:1]).item() > 0.8 and abs(got.conf[0] - want.conf[0]) < 0.1, (got, want)
    with pytest.raises(ValueError, match="--max-drop 0.01: is for --int8 exports"):
        model.export(format="openvino", imgsz=192, max_drop=0.01)
