"""Run a HorNet-YOLOv5 detector on images, videos, folders, globs, webcams, streams and the screen.

    python detect.py --weights runs/train/exp/weights/best.pt --source 0               # webcam
                                                                   img.jpg             # image
                                                                   vid.mp4             # video
                                                                   path/               # folder
                                                                   'path/*.jpg'        # glob
                                                                   list.txt            # list of sources
                                                                   list.streams        # list of streams
                                                                   'rtsp://host/live'  # RTSP, RTMP, HTTP stream
                                                                   screen              # screenshot
    python detect.py --weights best.onnx ...          # also best.torchscript (made by export.py)

Results go to runs/detect/exp, exp2, ... (--project, --name, --exist-ok). Prediction runs on the
ultralytics DetectionPredictor (see utils/predict.py); a .pt checkpoint is rebuilt with load_model and
handed over as a module (nothing is unpickled), exported files go to ultralytics' AutoBackend as they are.
With --view-img, press q in the window to stop; Ctrl-C stops too. Either way the video written so far
is closed properly and plays.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

from models.yolo import load_model  # noqa: E402
from ultralytics.utils import LOGGER, colorstr  # noqa: E402
from ultralytics.utils.checks import check_imshow  # noqa: E402
from utils.export import runnable, runtime_reason  # noqa: E402
from utils.predict import HorNetPredictor, SourceError, default_source, is_stream, newest_weights, resolve_source  # noqa: E402
from utils.runs import check_device, increment_run_dir, warn_overwrite  # noqa: E402

class _HoldSavedLine(logging.Filter):
    """Hold back the engine's 'Results saved to ...' line until it is known that the run folder stays (a run that
    read no frame removes it)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "Results saved to" in str(record.msg):
            self.records.append(record)
            return False
        return True


def load_weights(weights):
    """What the predictor's AutoBackend takes: the rebuilt nn.Module for a checkpoint, the path for an export.

    Raises FileNotFoundError naming a missing file, ValueError naming a file that is not a checkpoint.
    """
    fmt, path = runnable(weights)
    if fmt != "checkpoint":  # .onnx, .torchscript, *_openvino_model/
        return str(path)
    return load_model(path, device="cpu")  # AutoBackend moves it to --device


def check_tracker(track) -> str:
    """The tracker YAML `track` names (the engine's bytetrack.yaml, botsort.yaml, ... or a path); SourceError if none."""
    from ultralytics.utils.checks import check_yaml

    try:
        return check_yaml(str(track))
    except FileNotFoundError:
        raise SourceError(f"--track {track}: no such tracker configuration (use bytetrack.yaml, botsort.yaml or a YAML path)") from None


def run(
    weights=None,
    source=None,
    data=None,
    imgsz=(640,),
    conf_thres=0.25,
    iou_thres=0.45,
    max_det=1000,
    device="",
    view_img=False,
    save_txt=False,
    save_conf=False,
    save_crop=False,
    nosave=False,
    classes=None,
    agnostic_nms=False,
    augment=False,
    project=ROOT / "runs" / "detect",
    name="exp",
    exist_ok=False,
    line_thickness=3,
    hide_labels=False,
    hide_conf=False,
    half=False,
    vid_stride=1,
    stream_buffer=False,
    track=None,
    save_csv=False,
    stream_timeout=10.0,
):
    """Detect objects in `source` with `weights`; returns the predictor (its `save_dir`, `results`, `speed`...).

    Arguments are detect.py's flags (`track`: a tracker YAML such as 'bytetrack.yaml' or 'botsort.yaml': boxes get
    track ids, in the drawings and as the last column of --save-txt rows). Raises FileNotFoundError / ValueError (bad weights), SourceError
    (bad source), ConnectionError (a stream that does not open): each message names the thing at fault.
    """
    weights = Path(weights) if weights else newest_weights()
    if exist_ok:
        warn_overwrite(Path(project).resolve() / name)
    save_dir = increment_run_dir(Path(project).resolve(), name, exist_ok)  # exp, exp2, ...: made here, one per run
    try:
        if data:  # checked (and bounded) before the engine reads it with its own loader
            from utils.data import read_data_yaml

            data = read_data_yaml(data)[0]
        source = resolve_source(source if source is not None else default_source(data), save_dir, stream_timeout)
        if view_img and not check_imshow(warn=False):
            LOGGER.warning("--view-img: no display is available here (no DISPLAY, or OpenCV has no GUI); continuing without a window")
            view_img = False
        check_device(device)
        tracker = check_tracker(track) if track else None
        model = load_weights(weights)
        size = list(imgsz) if len(imgsz) == 2 else [imgsz[0], imgsz[0]]
        overrides = {
            "task": "detect",
            "mode": "predict",
            "data": str(data) if data else None,
            "imgsz": size,
            "conf": conf_thres,
            "iou": iou_thres,
            "max_det": max_det,
            "device": device or None,
            "show": view_img,
            "save": not nosave,
            "save_txt": save_txt,
            "save_conf": save_conf,
            "save_crop": save_crop,
            "classes": classes,
            "agnostic_nms": agnostic_nms,
            "augment": augment,
            "project": str(save_dir.parent),
            "name": save_dir.name,
            "exist_ok": True,  # save_dir is already incremented above
            "line_width": line_thickness,
            "show_labels": not hide_labels,
            "show_conf": not hide_conf,
            "quantize": 16 if half else None,
            "vid_stride": vid_stride,
            "stream_buffer": stream_buffer,
            "batch": 1,
            "rect": True,  # minimal letterbox padding (YOLOv5's auto=True) where the model takes any size
            "verbose": True,
            **({"mode": "track", "tracker": tracker} if tracker else {}),
        }
        predictor = HorNetPredictor(overrides=overrides)
        predictor.csv_path = save_dir / "predictions.csv" if save_csv else None
        if tracker:
            from ultralytics.trackers import register_tracker

            register_tracker(predictor, persist=False)  # the engine's trackers; a new video starts new tracks
        try:
            predictor.setup_model(model, verbose=False)
        except Exception as e:  # an exported model that its runtime cannot read
            raise ValueError(f"{weights} could not be loaded as a model: {runtime_reason(e)}") from e
        if half and predictor.model.device.type == "cpu" and predictor.model.format != "openvino":
            LOGGER.warning("--half needs a GPU (--device 0), or an OpenVINO export on a CPU with bfloat16: running float32")
        names = getattr(predictor.model, "names", None) or {}
        unknown = [c for c in classes or [] if not 0 <= c < len(names)] if names else []
        if unknown:
            raise ValueError(f"--classes {' '.join(map(str, unknown))}: {weights.name} has {len(names)} classes "
                             f"(0..{len(names) - 1}: {', '.join(f'{i} {n}' for i, n in list(names.items())[:8])}"
                             f"{', ...' if len(names) > 8 else ''})")
        fixed = getattr(predictor.model, "imgsz", None)
        if fixed and not getattr(predictor.model, "dynamic", False) and list(fixed) != size:
            LOGGER.info(f"{weights.name} was exported for --imgsz {fixed[0]} {fixed[1]}: using that size")
        LOGGER.info(f"{colorstr('detect:')} weights={weights} source={source} save_dir={save_dir}")
        held = _HoldSavedLine()
        LOGGER.addFilter(held)
        try:
            predictor.predict_cli(source=source)
        except FileNotFoundError as e:
            if str(e).startswith("Failed to open video"):  # a later file of a folder/list that OpenCV cannot decode
                raise SourceError(f"{e}: the file is corrupt or in a format OpenCV cannot read; outputs so far are saved") from e
            raise
        finally:
            LOGGER.removeFilter(held)
        if predictor.seen == 0 and not is_stream(source) and not source.lower().startswith("screen"):
            raise SourceError(f"--source {source}: no image or video frame could be read (empty or corrupt files?)")
        for record in held.records:  # the folder stays: now it may be said where the results are
            LOGGER.handle(record)
        for path, (got, total) in predictor.incomplete_videos().items():  # only after a run that reached the end
            LOGGER.warning(f"{path}: the video ended after {got} of {total} frames (truncated or corrupt); the {got} frames read were processed and saved")
    except BaseException:
        if not exist_ok and not any(save_dir.iterdir()):  # a run that wrote nothing leaves no folder behind
            save_dir.rmdir()
        raise
    return predictor


def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=str, default=None, help="checkpoint, .onnx, .torchscript or *_openvino_model folder (default: the newest runs/train/*/weights/best.pt)")
    parser.add_argument("--source", type=str, default=None, help="file/dir/glob/URL/.txt/.streams/screen, 0 for webcam (default: the dataset's val images)")
    parser.add_argument("--data", type=str, default=None, help="dataset YAML: default source and class names for exported models")
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="inference size: one value, or H W")
    parser.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--view-img", action="store_true", help="show results in a window (q stops)")
    parser.add_argument("--save-txt", action="store_true", help="save results to labels/*.txt (class xc yc w h, normalized)")
    parser.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    parser.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    parser.add_argument("--save-csv", action="store_true", help="save results to predictions.csv (YOLOv5's columns, then the box)")
    parser.add_argument("--nosave", action="store_true", help="do not save images/videos")
    parser.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    parser.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--augment", action="store_true", help="augmented inference (scales and flips)")
    parser.add_argument("--project", default=ROOT / "runs" / "detect", help="save results to project/name")
    parser.add_argument("--name", default="exp", help="save results to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    parser.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    parser.add_argument("--hide-labels", action="store_true", help="hide labels")
    parser.add_argument("--hide-conf", action="store_true", help="hide confidences")
    parser.add_argument("--half", action="store_true", help="FP16 half-precision inference (GPU); OpenVINO on a CPU: its reduced precision (bfloat16)")
    parser.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    parser.add_argument("--stream-buffer", action="store_true", help="webcams/streams: keep every frame (default: the newest, for low latency)")
    parser.add_argument("--stream-timeout", type=float, default=10.0, help="seconds a stream URL (rtsp, rtmp, http, tcp) may take to open")
    parser.add_argument("--track", nargs="?", const="bytetrack.yaml", default=None, help="track objects across frames: bytetrack.yaml (default) or botsort.yaml")
    opt = parser.parse_args(argv)
    if len(opt.imgsz) > 2:
        parser.error(f"--imgsz takes one size or H W, got {opt.imgsz}")
    if not opt.stream_timeout > 0:
        parser.error(f"--stream-timeout must be > 0 seconds, got {opt.stream_timeout}")
    if opt.vid_stride < 1:
        parser.error("--vid-stride must be >= 1")
    return opt


def main(argv=None) -> int:
    opt = parse_opt(argv)
    try:
        run(**vars(opt))
    except KeyboardInterrupt:
        LOGGER.info("detect.py: interrupted (Ctrl-C); results written so far are saved and videos closed")
        return 130
    except (FileNotFoundError, SourceError, ValueError, ConnectionError) as e:
        LOGGER.error(f"detect.py: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
