"""Prediction on the ultralytics engine: the predictor subclass and the source checks that detect.py uses.

`HorNetPredictor` is ultralytics' `DetectionPredictor` (letterbox, NMS, plotting, label files, video
writers) with what YOLOv5's detect.py adds: output videos at the input's frame rate for webcams and streams
too, and a warning when a video ends before the frame count its header announced (truncated or corrupt
file: the frames read so far are kept). Test-time augmentation (--augment) is the model's own
(`models.yolo.Model._predict_augment`), so the validator has it too.

`resolve_source` turns a `--source` value into what the ultralytics loaders take, and fails early with
a message naming the source when it does not exist or a camera cannot be opened.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from pathlib import Path

import cv2

from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS
from ultralytics.models.yolo.detect import DetectionPredictor
from ultralytics.utils import ASSETS, LOGGER, MACOS, WINDOWS
from utils.export import run_in_export_precision

ROOT = Path(__file__).resolve().parents[1]
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://")
STREAM_TIMEOUT = 10.0  # seconds a stream URL may take to open (detect.py --stream-timeout); OpenCV waits 30 s and more


class SourceError(ValueError):
    """A --source that cannot be read; the message names it."""


def newest_weights(root=ROOT / "runs" / "train") -> Path:
    """The most recently written runs/train/*/weights/best.pt; FileNotFoundError when there is none."""
    found = sorted(Path(root).glob("*/weights/best.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no --weights given and no trained model found in {root}/*/weights/best.pt: train one with train.py or pass --weights")
    return found[-1]


def default_source(data=None):
    """The val images of the dataset YAML `data` (the embedded set made if needed), else ultralytics' sample images."""
    data = Path(data) if data else ROOT / "data" / "shapes.yaml"
    if data.is_file() or (ROOT / data).is_file():
        try:
            from utils.data import load_data_config  # clearer errors; makes the embedded set when missing

            val = load_data_config(str(data)).get("val")
            val = val[0] if isinstance(val, list) else val
            if val and Path(val).exists():
                return str(val)
        except Exception as e:  # a dataset that cannot be built must not stop a demo run
            LOGGER.warning(f"could not use the val images of {data} ({e}), using the sample images instead")
    else:
        LOGGER.warning(f"no --source given and no dataset YAML at {data}: using the sample images in {ASSETS}")
    return str(ASSETS)


def is_stream(source: str) -> bool:
    """A camera index ('0'), a network stream URL or a .streams list (what ultralytics reads with LoadStreams)."""
    s = source.lower()
    if s.startswith(("http://", "https://")) and s.rsplit("?", 1)[0].rpartition(".")[-1] in IMG_FORMATS | VID_FORMATS:
        return False  # a media file behind a URL: ultralytics downloads it (needs the network)
    return source.isnumeric() or s.endswith(".streams") or s.startswith(STREAM_PREFIXES)


def probe_camera(index: int, timeout: float = 10.0) -> None:
    """Open camera `index` once and release it; SourceError naming the index if it does not open within `timeout` s.

    The capture is opened in a daemon thread because some OpenCV backends block for a long time on a
    device that is absent or busy.
    """
    result = {}

    def try_open():
        cap = cv2.VideoCapture(index)
        result["ok"] = cap.isOpened() and cap.read()[0]
        cap.release()

    t = threading.Thread(target=try_open, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise SourceError(f"camera {index} did not open within {timeout:.0f}s (is it connected and not used by another program?)")
    if not result.get("ok"):
        raise SourceError(f"camera {index} could not be opened or gave no frame (no such device, or it is in use; try another index)")


def ffmpeg_open_timeout(timeout: float) -> None:
    """Bound how long OpenCV's FFmpeg backend waits on a network stream, for the engine's own open too.

    The option goes into OPENCV_FFMPEG_CAPTURE_OPTIONS (read at each open) unless the user set a timeout there; it is
    FFmpeg's socket time-out in microseconds for rtsp, http and tcp (for rtmp it would mean listening, so the probe
    thread's wait bounds rtmp instead).
    """
    options = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    if re.search(r"(^|\|)(timeout|stimeout|rw_timeout);", options):
        return
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "|".join(o for o in (options, f"timeout;{int(timeout * 1e6)}") if o)


def probe_stream(url: str, timeout: float = STREAM_TIMEOUT) -> None:
    """Open a stream URL once and release it; SourceError naming it when it gives no frame within `timeout` s.

    A server that accepts the connection and never answers would otherwise hold detect.py for OpenCV's own
    time-out (36 s measured for rtsp). The open runs in a daemon thread, also bounded by CAP_PROP_OPEN_TIMEOUT_MSEC.
    """
    if url.lower().startswith(("rtsp://", "http://", "https://", "tcp://")):
        ffmpeg_open_timeout(timeout)
    result = {}

    def try_open():
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout * 1000),
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(timeout * 1000)])
        result["opened"] = cap.isOpened()
        result["ok"] = result["opened"] and cap.read()[0]
        cap.release()

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its time-out warnings would follow our one line
    try:
        t = threading.Thread(target=try_open, daemon=True)
        t.start()
        t.join(timeout + 1.0)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if t.is_alive() or not result.get("ok"):
        why = "gave no video frame" if result.get("opened") else "did not open"
        raise SourceError(f"stream {url} {why} within {timeout:g}s (unreachable, or a server that accepts and sends "
                          "nothing); --stream-timeout sets the wait")


def resolve_source(source, save_dir: Path | None = None, stream_timeout: float = STREAM_TIMEOUT) -> str:
    """Check a --source value and return what `load_inference_source` takes.

    Accepts an image or video file, a folder, a glob, a camera index, an RTSP/RTMP/HTTP(S)/TCP URL,
    'screen' (with optional 'screen N left top width height'), a .streams list, or a .txt list of any of
    these (a .txt list of cameras/URLs is read as a .streams list). Raises SourceError with the source's
    name when it does not exist, matches no file, or is a camera that does not open.
    """
    source = str(source).strip()
    lower = source.lower()
    if lower == "screen" or (lower.startswith("screen ") and not Path(source).exists()):
        import importlib.util
        import platform

        if importlib.util.find_spec("mss") is None:
            raise SourceError(f"--source {source}: screen capture needs the mss package (pip install mss)")
        if platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SourceError(f"--source {source}: there is no display to capture here (DISPLAY is not set)")
        return source
    if source.isnumeric():
        probe_camera(int(source))
        return source
    if is_stream(source):
        if lower.endswith(".streams"):
            if not Path(source).is_file():
                raise SourceError(f"source not found: {source}")
            urls = [e.strip() for e in Path(source).read_text(encoding="utf-8-sig").splitlines() if e.strip()]
        else:
            urls = [source]
        for url in urls:
            if url.lower().startswith(STREAM_PREFIXES) and not re.search(r"youtube\.com/|youtu\.be/", url.lower()):
                probe_stream(url, stream_timeout)  # YouTube pages go through the engine's own downloader
        return source
    if "*" in source:
        if not glob.glob(source, recursive=True):
            raise SourceError(f"source not found: the pattern {source} matches no file")
        return source
    path = Path(source)
    if not path.exists():
        raise SourceError(f"source not found: {source}")
    if path.is_dir() and not any(p.suffix[1:].lower() in IMG_FORMATS | VID_FORMATS for p in path.iterdir()):
        raise SourceError(f"source {source} is a folder with no images or videos in it")
    if path.is_file() and path.suffix[1:].lower() in VID_FORMATS:
        cap = cv2.VideoCapture(str(path))
        ok = cap.isOpened()
        cap.release()
        if not ok:
            raise SourceError(f"video {source} could not be opened: the file is corrupt or in a format OpenCV cannot read")
    if path.suffix.lower() == ".txt":
        entries = [e.strip() for e in path.read_text(encoding="utf-8-sig").splitlines() if e.strip()]
        if not entries:
            raise SourceError(f"source list {source} is empty")
        streams = [is_stream(e) for e in entries]
        if all(streams):  # cameras and URLs: ultralytics reads those from a .streams list
            for e in entries:
                if e.isnumeric():
                    probe_camera(int(e))
                elif not re.search(r"youtube\.com/|youtu\.be/", e.lower()):
                    probe_stream(e, stream_timeout)
            out = Path(save_dir or path.parent) / f"{path.stem}.streams"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("\n".join(entries) + "\n")
            return str(out)
        if any(streams):
            raise SourceError(f"source list {source} mixes streams/cameras with files: give them in two runs")
        for e in entries:  # each entry relative to the working directory or to the list itself
            if not any(glob.glob(c, recursive=True) if "*" in c else os.path.exists(c) for c in (e, str(path.parent / e))):
                raise SourceError(f"source not found: {e} (listed in {source})")
    return source


class HorNetPredictor(DetectionPredictor):
    """ultralytics' DetectionPredictor for HorNet-YOLOv5 models (an nn.Module, or the path of an export).

    Adds: webcam/stream videos written at
    the stream's frame rate, a warning naming any video that ended before its announced frame count, and
    OpenVINO exports run in the precision they were exported for (`quantize=16`: the CPU's reduced one).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.video_progress = {}  # video path -> [last frame read, frames announced]
        self.csv_path = None  # detect.py --save-csv: predictions.csv, one row per box
        self.stopped_by_user = False  # q pressed in the --view-img window
        self._slot = 0

    def setup_model(self, model, verbose: bool = True):
        super().setup_model(model, verbose)
        if isinstance(model, (str, Path)):
            run_in_export_precision(self.model, model, half=self.args.quantize == 16)

    def show(self, p: str = ""):
        """ultralytics' window; remembers when q stops the run (so an early end is not taken for a truncated video)."""
        try:
            super().show(p)
        except StopIteration:
            self.stopped_by_user = True
            LOGGER.info("q pressed: stopping; the outputs written so far are saved")
            raise

    def write_results(self, i, p, im, s):
        """ultralytics' per-image output, plus bookkeeping: which stream slot is being saved, video frames read."""
        self._slot = i
        if self.dataset.mode == "video":  # a batch never spans two videos: the loader's counters are this video's
            self.video_progress[str(p)] = [self.dataset.frame, self.dataset.frames]
        out = super().write_results(i, p, im, s)
        if self.csv_path is not None:
            self.write_csv(self.results[i], Path(p).name if self.dataset.mode == "image" else f"{Path(p).stem}_{getattr(self.dataset, 'frame', 0)}")
        return out

    def write_csv(self, result, image: str) -> None:
        """YOLOv5's predictions.csv rows (Image Name, Prediction, Confidence), with the box in pixels after them."""
        import csv

        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["Image Name", "Prediction", "Confidence", "x1", "y1", "x2", "y2"])
            for cls, conf, box in zip(result.boxes.cls.tolist(), result.boxes.conf.tolist(), result.boxes.xyxy.tolist()):
                writer.writerow([image, result.names[int(cls)], f"{conf:.4f}", *(f"{v:.1f}" for v in box)])

    def save_predicted_images(self, save_path: Path, frame=0):
        """As ultralytics, but a webcam/stream video is written at that stream's own frame rate (not a fixed 30)."""
        if self.dataset.mode == "stream" and save_path not in self.vid_writer and self.args.save:
            fps = self.dataset.fps[self._slot] if isinstance(self.dataset.fps, list) else self.dataset.fps
            fps = max(1.0, float(fps) / self.args.vid_stride)
            im = self.plotted_img
            suffix, fourcc = (".mp4", "avc1") if MACOS else (".avi", "WMV2") if WINDOWS else (".avi", "MJPG")  # as ultralytics
            self.vid_writer[save_path] = cv2.VideoWriter(
                str(Path(save_path).with_suffix(suffix)), cv2.VideoWriter_fourcc(*fourcc), fps, (im.shape[1], im.shape[0])
            )
        super().save_predicted_images(save_path, frame)

    def incomplete_videos(self) -> dict:
        """{video path: (frames read, frames announced)} for videos that ended early (truncated or corrupt).

        Meaningful after a run that went to the end: empty when q stopped it.
        """
        if self.stopped_by_user:
            return {}
        return {p: tuple(v) for p, v in self.video_progress.items() if v[0] < v[1]}
