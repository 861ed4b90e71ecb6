"""Export helpers: an exportable form of the model, ultralytics-style metadata, ONNX/TorchScript/OpenVINO writers, checks.

The ONNX file is written by the ultralytics exporter's own `torch2onnx` (the TorchScript-based
`torch.onnx.export`), the TorchScript file by its `torch2torchscript`, the OpenVINO folder by its
`torch2openvino`. All carry the metadata that ultralytics' `AutoBackend` reads back (stride, names,
imgsz, task, batch, args...), so the exported models run in `detect.py`, `val.py` and any ultralytics
predictor/validator as they are.

OpenVINO runs a model in the precision it is compiled with, and its CPU plugin picks bfloat16 by itself on
CPUs that have it (AVX512-BF16, AMX); ultralytics' backend compiles without a precision hint. So the
precision asked for at export (float32, or the CPU's reduced precision with --half) is recorded in the
metadata (`args.half`), and `run_in_export_precision` recompiles a loaded float32 export with the f32 hint.

Every export traces models/exportable.py's `exportable_model` (fused, head in export mode, Global Filters as
matrix products).
"""

from __future__ import annotations

import shutil
from copy import deepcopy
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from models.checkpoints import CheckpointError, weights_format, weights_not_found
from models.exportable import exportable_model, has_global_filter
from ultralytics import __version__ as ULTRALYTICS_VERSION
from ultralytics.nn.backends import OpenVINOBackend
from ultralytics.utils import LOGGER


def export_metadata(model: nn.Module, imgsz, batch: int, dynamic: bool, half: bool, fmt: str, weights) -> dict:
    """The metadata ultralytics' exporter writes and AutoBackend reads (stride, task, names, imgsz, batch, args...)."""
    names = dict(getattr(model, "names", {}) or {})
    return {
        "description": f"HorNet-YOLOv5 {Path(str(getattr(model, 'yaml', {}).get('yaml_file', weights))).stem} exported from {Path(weights).name}",
        "author": "HorNet-YOLOv5",
        "date": datetime.now().astimezone().isoformat(),
        "version": ULTRALYTICS_VERSION,
        "stride": int(max(int(model.stride.max()), 32)),
        "task": "detect",
        "head": type(model.model[-1]).__name__,
        "batch": int(batch),
        "imgsz": [int(imgsz[0]), int(imgsz[1])],
        "names": {int(k): str(v) for k, v in names.items()},
        "args": {"batch": int(batch), "half": bool(half), "dynamic": bool(dynamic), "nms": False, "format": fmt},
        "channels": int(getattr(model, "yaml", {}).get("channels", 3)),
        "end2end": False,
    }


def export_torchscript(model: nn.Module, im: torch.Tensor, file, metadata: dict) -> Path:
    """Trace `model` (an exportable_model) on `im` and write it with the metadata as `extra/config.txt`."""
    from ultralytics.utils.export.torchscript import torch2torchscript

    return Path(torch2torchscript(model, im, file, metadata=metadata))


def export_onnx(model: nn.Module, im: torch.Tensor, file, metadata: dict, opset: int | None = None,
                dynamic: bool = False, simplify: bool = False) -> Path:
    """Write `model` (an exportable_model) as ONNX with the metadata in `metadata_props`.

    `dynamic`: batch, height and width dynamic (a Global Filter model must then come from
    exportable_model(..., dynamic=True)). `simplify` runs onnxslim, or onnxsim if that is what is installed.
    """
    import onnx
    from ultralytics.utils.export.engine import best_onnx_opset, torch2onnx

    opset = opset or best_onnx_opset(onnx)
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}}
    LOGGER.info(f"ONNX: exporting with torch {torch.__version__}, onnx {onnx.__version__}, opset {opset}...")
    torch2onnx(model, im, str(file), opset=opset, input_names=["images"], output_names=["output0"], dynamic=axes)
    proto = onnx.load(str(file))
    onnx.checker.check_model(proto)
    if simplify:
        proto = simplify_onnx(proto)
    for k, v in metadata.items():  # str() of dicts/lists: AutoBackend parses them back with literal_eval
        meta = proto.metadata_props.add()
        meta.key, meta.value = k, str(v)
    if getattr(proto, "ir_version", 0) > 10:  # what the ultralytics exporter does, for older onnxruntime builds
        proto.ir_version = 10
    onnx.save(proto, str(file))
    return Path(file)


def export_openvino(model: nn.Module, im: torch.Tensor, folder, metadata: dict, dynamic: bool = False) -> Path:
    """Write `model` (an exportable_model) as an OpenVINO folder: `<name>.xml` and `.bin` (float32 weights) and
    `metadata.yaml`, the layout ultralytics' exporter writes. A previous folder of that name is replaced whole.

    `dynamic`: any batch and image size (a Global Filter model must then come from exportable_model(..., dynamic=True)).
    """
    import openvino as ov
    from ultralytics.utils import YAML
    from ultralytics.utils.export.openvino import torch2openvino

    folder = Path(folder)
    ov_model = torch2openvino(model, im, dynamic=dynamic, prefix="OpenVINO:")
    for i, out in enumerate(ov_model.outputs):  # named as in the ONNX export: NNCF's accuracy control reads outputs by name
        if not out.get_names():
            out.get_tensor().set_names({f"output{i}"})
    tmp = folder.with_name(folder.name + ".tmp")  # written aside, swapped in whole: a failed export leaves the old one
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ov.save_model(ov_model, tmp / f"{folder.name.removesuffix('_openvino_model')}.xml", compress_to_fp16=False)
    YAML.save(tmp / "metadata.yaml", metadata)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def runtime_reason(e: BaseException) -> str:
    """One line saying why a runtime refused a model: its first line that is not an 'Exception from <source file>' frame."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith("Exception from ")]
    return (reasons or lines or [type(e).__name__])[0][:200]


def export_path(weights) -> Path:
    """The path AutoBackend takes for `weights`: an OpenVINO export's folder when given the .xml inside it."""
    path = Path(weights)
    return path.parent if path.suffix.lower() == ".xml" and path.parent.name.endswith("_openvino_model") else path


EXPORT_FORMATS = ("onnx", "torchscript", "openvino")  # what the engine's AutoBackend is given to run, and only these


def runnable(weights, flag: str = "--weights") -> tuple[str, Path]:
    """(format, path) of a weights argument, by the file's content whatever its suffix: 'checkpoint' (a torch file,
    read by models.checkpoints and never by the engine's loader) or one of EXPORT_FORMATS.

    Raises FileNotFoundError (not on disk: for a bare name such as yolov5s.pt, where such files come from) or
    CheckpointError, a ValueError (a file that is neither).
    """
    path = export_path(weights)
    if not path.exists():
        if len(Path(str(weights)).parts) == 1:
            raise weights_not_found(weights, flag)
        raise FileNotFoundError(f"{flag}: not found: {path}")
    fmt = weights_format(path)
    if fmt is None:
        raise CheckpointError(f"{flag} {path}: not a model this project runs: give a .pt checkpoint (ours, YOLOv5's, YOLOAir's, "
                         "the ultralytics package's) or an export of ours (.onnx, .torchscript, *_openvino_model)")
    return fmt, path


def openvino_xml(path) -> Path:
    """The model file of an OpenVINO export: `path` itself if it is the .xml, else the one .xml in the folder."""
    path = Path(path)
    found = [path] if path.suffix == ".xml" else sorted(path.glob("*.xml"))
    if not found:
        raise FileNotFoundError(f"{path}: no OpenVINO model (.xml) in this folder")
    return found[0]


def openvino_reduced_precision() -> str | None:
    """The precision OpenVINO's CPU plugin runs in by default here ('bf16', 'f16'), or None when that is float32."""
    import openvino as ov

    precision = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    return None if precision == "f32" else precision


def compile_openvino(path, half: bool = False, device: str = "CPU", threads: int | None = None, **config):
    """The OpenVINO export at `path` compiled for latency: in float32, or with `half` in the device's default
    (reduced where the hardware has it) precision; on `threads` CPU threads when given; `config`: further
    OpenVINO properties (PERF_COUNT=True for a per-layer profile)."""
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", **config}
    if not half:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(core.read_model(openvino_xml(path)), device, config)


def run_in_export_precision(model, weights, half: bool = False) -> None:
    """Make an AutoBackend that runs an OpenVINO export on the CPU compute in float32, unless the export was made
    with --half or `half` is asked for now; other formats and devices are left as they are.

    ultralytics' backend compiles without a precision hint, which on a CPU with bfloat16 means bfloat16.
    """
    backend = getattr(model, "backend", None)
    if not isinstance(backend, OpenVINOBackend) or not hasattr(backend, "ov_compiled_model"):
        return
    if half or (backend.metadata.get("args") or {}).get("half"):
        return
    if list(backend.ov_compiled_model.get_property("EXECUTION_DEVICES")) == ["CPU"]:
        backend.ov_compiled_model = compile_openvino(weights, half=False)


def simplify_onnx(proto):
    """The graph simplified by onnxslim or onnxsim, whichever is installed; unchanged (with a message) if neither."""
    try:
        import onnxslim

        LOGGER.info(f"ONNX: simplifying with onnxslim {onnxslim.__version__}...")
        return onnxslim.slim(proto)
    except ImportError:
        pass
    try:
        import onnxsim

        LOGGER.info(f"ONNX: simplifying with onnxsim {onnxsim.__version__}...")
        simplified, ok = onnxsim.simplify(proto)
        if ok:
            return simplified
        LOGGER.warning("ONNX: onnxsim could not validate the simplified model, keeping the original graph")
        return proto
    except ImportError:
        LOGGER.warning("ONNX: --simplify needs onnxslim or onnxsim (pip install onnxslim); exporting without simplifying")
        return proto


def onnx_output(file, im: torch.Tensor) -> np.ndarray:
    """onnxruntime's output (B, 4 + nc, N) for `file` on `im` (CPU provider), float32 numpy."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    x = im.detach().cpu().numpy()
    return session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float32)


def openvino_output(path, im: torch.Tensor, half: bool = False) -> np.ndarray:
    """The OpenVINO export's output (B, 4 + nc, N) on `im` (CPU, float32 or with `half` the reduced precision)."""
    compiled = compile_openvino(path, half=half)
    return np.asarray(compiled(im.detach().cpu().float().numpy())[0], dtype=np.float32)


def torchscript_output(file, im: torch.Tensor) -> np.ndarray:
    """The TorchScript `file`'s output (B, 4 + nc, N) on `im`, float32 numpy."""
    ts = torch.jit.load(str(file), map_location=im.device)
    with torch.no_grad():
        y = ts(im)
    return (y[0] if isinstance(y, (list, tuple)) else y).float().cpu().numpy()


def max_diffs(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max |diff| over the 4 box rows, in pixels; max |diff| over the score rows) of two (B, 4 + nc, N) arrays."""
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return float(d[:, :4].max()), float(d[:, 4:].max())


def reference_output(model: nn.Module, im: torch.Tensor) -> np.ndarray:
    """The original model's predictions (B, 4 + nc, N) on `im`, float32, as numpy."""
    model = deepcopy(model).float().cpu().eval()
    with torch.no_grad():
        y = model(im.cpu().float())
    return (y[0] if isinstance(y, (list, tuple)) else y).numpy()


def read_metadata(file) -> dict:
    """The metadata of an exported file as AutoBackend reads it (for checks and tests)."""
    from ultralytics.nn.backends.base import BaseBackend

    return BaseBackend.read_metadata(file)


__all__ = (
    "exportable_model",
    "export_path",
    "runtime_reason",
    "export_metadata",
    "compile_openvino",
    "export_onnx",
    "export_openvino",
    "export_torchscript",
    "has_global_filter",
    "max_diffs",
    "onnx_output",
    "openvino_output",
    "openvino_reduced_precision",
    "openvino_xml",
    "run_in_export_precision",
    "reference_output",
    "torchscript_output",
    "read_metadata",
)
