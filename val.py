"""Validate a trained HorNet-YOLOv5 detector on a dataset, with YOLOv5's flags, on the ultralytics validator.

    python val.py --weights runs/train/exp/weights/best.pt --data data/shapes.yaml --img 640
    python val.py --weights best.pt --task speed                      # inference speed only
    python val.py --weights best.onnx                                 # exported models (export.py) too
    python val.py --weights best_openvino_model                       # OpenVINO, in the precision it was exported for
    python val.py --weights best.pt --verbose --save-json --save-txt --save-conf

In: weights (our .pt checkpoint, rebuilt by models.yolo.load_model with weights_only=True; or an exported
.onnx/.torchscript/_openvino_model folder that the ultralytics AutoBackend runs from its embedded metadata) and a dataset YAML.
Out: P, R, mAP50, mAP50-95 (all classes, and per class with --verbose) and the speed per image, printed;
results (predictions.json with --save-json, labels/*.txt with --save-txt) under runs/val/exp, exp2, ...
Python: `import val; metrics = val.run(weights=..., data=...)` returns the metrics dict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent

from utils.data import load_data_config  # noqa: E402
from utils.export import runnable, runtime_reason  # noqa: E402
from utils.predict import newest_weights  # noqa: E402
from utils.runs import check_device, discard_unused_run_dir, increment_run_dir, warn_overwrite  # noqa: E402
from utils.validator import HorNetValidator  # noqa: E402


def parse_opt(argv=None) -> argparse.Namespace:
    """YOLOv5's val.py flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=str, default="data/shapes.yaml", help="dataset YAML")
    p.add_argument("--weights", type=str, default=None, help="model: .pt checkpoint or exported file (default: the newest runs/train/*/weights/best.pt)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", choices=["val", "test", "speed"], help="val or test split, or speed only")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file")
    p.add_argument("--project", default=str(ROOT / "runs/val"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="FP16 half-precision inference (GPU); OpenVINO on a CPU: its reduced precision (bfloat16)")
    p.add_argument("--augment", action="store_true", help="augmented inference (YOLOv5's scales and flip; PyTorch models)")
    return p.parse_args(argv)


def main(opt: argparse.Namespace, model=None) -> dict:
    """Validate; returns the metrics dict (precision, recall, mAP50, mAP50-95, fitness) of all classes, and under
    'results' the engine's DetMetrics (`.box.map`, per-class maps, `.speed`).

    `model`: a model already in memory (the Python API's), validated instead of loading --weights.
    """
    if model is not None:
        fmt, weights = "checkpoint", Path(getattr(model, "pt_path", None) or "model")
    else:
        fmt, weights = runnable(opt.weights) if opt.weights else ("checkpoint", newest_weights())
    if fmt != "checkpoint":
        check_exported(weights)
    # clear errors naming the YAML, builds the embedded set when missing, finds a relative path from the repo root
    opt.data = load_data_config(opt.data)["yaml_file"]

    if opt.task == "test":
        from models.safe_yaml import load_yaml_file

        if not (load_yaml_file(opt.data) or {}).get("test"):
            raise ValueError(f"--task test: {opt.data} has no 'test' split")
    check_device(opt.device)
    if opt.exist_ok:
        warn_overwrite(Path(opt.project).resolve() / opt.name)
    save_dir = increment_run_dir(Path(opt.project).resolve(), opt.name, opt.exist_ok)
    try:
        metrics, speeds = validate(opt, weights, save_dir, fmt, model)
    except BaseException:
        if not opt.exist_ok:
            discard_unused_run_dir(save_dir)
        raise
    print(
        f"P {metrics.get('metrics/precision(B)', 0):.4g}  R {metrics.get('metrics/recall(B)', 0):.4g}  "
        f"mAP50 {metrics.get('metrics/mAP50(B)', 0):.4g}  mAP50-95 {metrics.get('metrics/mAP50-95(B)', 0):.4g}  "
        f"speed {speeds['preprocess']:.1f}ms pre-process, {speeds['inference']:.1f}ms inference, {speeds['postprocess']:.1f}ms NMS per image"
    )
    metrics["speed"] = dict(speeds)
    metrics["save_dir"] = str(save_dir)
    return metrics


def half_precision(opt: argparse.Namespace, weights: Path, fmt: str) -> bool:
    """--half where it means something: float16 on a GPU, the CPU's reduced precision for an OpenVINO export."""
    if not opt.half:
        return False
    if fmt == "openvino" or str(opt.device or "").lower() not in {"", "cpu"}:
        return True
    import torch

    if torch.cuda.is_available() and not opt.device:
        return True
    from ultralytics.utils import LOGGER

    LOGGER.warning("--half needs a GPU (--device 0), or an OpenVINO export on a CPU with bfloat16: validating in float32")
    return False


def check_exported(weights: Path) -> None:
    """ValueError naming an exported model file that its runtime cannot load (corrupt, truncated, not a model)."""
    from ultralytics.nn.autobackend import AutoBackend

    try:
        AutoBackend(str(weights), device=torch.device("cpu"), verbose=False)
    except Exception as e:
        while e.__cause__ is not None:  # the runtime's own reason, not the engine's re-export advice
            e = e.__cause__
        raise ValueError(f"--weights {weights}: cannot be loaded as a model ({type(e).__name__}: {runtime_reason(e)})") from None


def validate(opt: argparse.Namespace, weights: Path, save_dir: Path, fmt: str = "checkpoint", model=None,
             compiled=None) -> tuple[dict, dict]:
    """Run the validator into `save_dir`; returns its metrics and speeds.

    `compiled`: an OpenVINO CompiledModel run in place of the export `weights` (whose metadata still names the classes
    and stride): how INT8 accuracy control scores its candidates the way val.py scores the export.
    """
    speed = opt.task == "speed"
    args = {
        "task": "detect",
        "mode": "val",
        "data": opt.data,
        "imgsz": opt.imgsz,
        "batch": opt.batch_size,
        "conf": 0.25 if speed else opt.conf_thres,  # YOLOv5's speed settings
        "iou": 0.45 if speed else opt.iou_thres,
        "max_det": opt.max_det,
        "split": "test" if opt.task == "test" else "val",
        "device": opt.device or None,
        "workers": opt.workers,
        "single_cls": opt.single_cls,
        "verbose": opt.verbose,
        "save_txt": opt.save_txt and not speed,
        "save_conf": opt.save_conf,
        "save_json": opt.save_json and not speed,
        "plots": not speed and compiled is None,
        "project": str(save_dir.parent),
        "name": save_dir.name,
        "rect": True,
        "quantize": 16 if half_precision(opt, weights, fmt) else None,
        "augment": opt.augment,
    }
    if fmt == "checkpoint":
        from models.yolo import load_model

        model = model if model is not None else load_model(weights)  # rebuilt from its YAML dict: nothing in the file is run
        args["model"] = str(weights)
        validator = HorNetValidator(save_dir=save_dir, args=args)
        metrics = validator(model=model)
    else:  # exported formats: AutoBackend reads them and their metadata
        args["model"] = str(weights)
        validator = HorNetValidator(save_dir=save_dir, args=args)
        validator.compiled = compiled
        metrics = validator()
    return {**metrics, "results": validator.metrics}, validator.speed


def run(model=None, **kwargs) -> dict:
    """`run(weights='best.pt', data='data/shapes.yaml', imgsz=640)`: flags as keyword arguments; `model` a model in
    memory to validate instead of --weights."""
    opt = parse_opt([])
    for k, v in kwargs.items():
        if not hasattr(opt, k):
            raise TypeError(f"val.run(): unknown option {k!r}")
        setattr(opt, k, v)
    return main(opt, model)


if __name__ == "__main__":
    try:
        main(parse_opt())
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
