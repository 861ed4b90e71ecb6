"""Export a HorNet-YOLOv5 checkpoint to ONNX, TorchScript and OpenVINO, each checked against PyTorch.

    python export.py --weights runs/train/exp/weights/best.pt --include onnx torchscript --imgsz 640
    python export.py --weights best.pt --include onnx --imgsz 384 640 --dynamic   # H W, dynamic batch/size
    python export.py --weights best.pt --include openvino             # best_openvino_model/, float32
    python export.py --weights best.pt --include openvino --half      # runs in bfloat16 on CPUs that have it
    python export.py --weights /read-only/best.pt --output exports/    # exports/best.onnx, exports/best.torchscript

The exports land next to the weights (`best.onnx`, `best.torchscript`, `best_openvino_model/`), or in `--output DIR`,
and carry the metadata ultralytics' AutoBackend reads (stride, names, imgsz, task, batch...), so `detect.py` and
`val.py` take them as they are. Global Filter (GF) models export too: their FFT becomes DFT matrix products (see
models/exportable.py), constants for the export size, or built in the graph from the input's shape with --dynamic.
`--half` means float16 files for ONNX and TorchScript (GPU only), and for OpenVINO the CPU's reduced
precision at run time (bfloat16 on CPUs with AVX512-BF16 or AMX; float32 where the CPU has none).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent

import torch  # noqa: E402
from models.yolo import load_model  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402
from ultralytics.utils.checks import check_imgsz  # noqa: E402
from ultralytics.utils.torch_utils import select_device  # noqa: E402
from utils.export import (  # noqa: E402
    export_metadata,
    runnable,
    export_onnx,
    export_openvino,
    export_torchscript,
    exportable_model,
    has_global_filter,
    max_diffs,
    onnx_output,
    openvino_output,
    openvino_reduced_precision,
    reference_output,
    torchscript_output,
)
from utils.predict import newest_weights  # noqa: E402
from utils.runs import check_device  # noqa: E402

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": "_openvino_model"}  # appended to the weights' stem
TOLERANCE = 1e-3  # largest accepted |export - PyTorch| on scores, and on boxes as a fraction of the image size
TOLERANCE_HALF = 2e-2  # the same for --half exports against the float32 model (fp16 keeps about 3 digits)
TOLERANCE_BF16 = 5e-2  # OpenVINO in bfloat16 (about 2 digits): what it shows on trained models, see docs/export.md


class ExportError(RuntimeError):
    """An export that did not produce a file matching PyTorch; the message says which and by how much."""


def compare(got, want, size: int, label: str, tol: float = TOLERANCE) -> float:
    """Report max |exported - PyTorch| and return it; raises ExportError above `tol`.

    got, want: (B, 4 + nc, N) outputs. Boxes are in pixels (up to the image size `size`) and scores in
    0..1, so scores are held to `tol` and boxes to `tol` times the image size.
    """
    diff_boxes, diff_scores = max_diffs(got, want)
    LOGGER.info(f"{label}: max |{label} - PyTorch| = {max(diff_boxes, diff_scores):.3g} (boxes {diff_boxes:.3g} px, scores {diff_scores:.3g})")
    if diff_scores > tol or diff_boxes > tol * size:
        raise ExportError(f"{label} output differs from PyTorch: boxes by {diff_boxes:.3g} px, scores by {diff_scores:.3g} (tolerance {tol})")
    return max(diff_boxes, diff_scores)


def writable_folder(folder: Path, given: bool) -> Path:
    """`folder`, made if needed, once a file could be written in it; ValueError naming it (and --output) otherwise."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".export-check-"):
            pass
    except OSError as e:
        why = f"{e.strerror or e}" if folder.is_dir() or not folder.exists() else "it is a file, not a folder"
        if given:
            raise ValueError(f"--output {folder}: cannot write the exports there ({why})") from None
        raise ValueError(f"{folder}: cannot write the exports next to the weights ({why}): choose a folder with --output DIR") from None
    return folder


def run(
    weights=None,
    include=("onnx", "torchscript"),
    imgsz=(640,),
    batch_size: int = 1,
    device: str = "cpu",
    half: bool = False,
    dynamic: bool = False,
    simplify: bool = False,
    opset: int | None = None,
    output=None,
    int8: bool = False,
    data=None,
    fraction: float = 1.0,
    max_drop: float | None = None,
) -> dict:
    """Export `weights` to each format in `include`; returns {format: {'file': Path, 'max_diff': float}}.

    In: a checkpoint written by train.py (or save_checkpoint), image size as [size] or [height, width]; `output` the
    folder the exports go to (default: the weights' folder); `int8`: the OpenVINO export quantized to INT8
    (`<stem>_int8_openvino_model`), calibrated on `fraction` of the training images of `data` (default data/shapes.yaml);
    `max_drop`: with `int8`, layers go back to float until the val split's mAP50-95 is within `max_drop` of float's.
    Raises FileNotFoundError/ValueError for missing or foreign weights or an output folder that cannot be written,
    ExportError when an export does not match PyTorch.
    """
    t0 = time.time()
    fmt, weights = runnable(weights) if weights else ("checkpoint", newest_weights())
    if fmt != "checkpoint":
        raise ValueError(f"--weights {weights}: an exported model ({fmt}); export from the .pt checkpoint it was made from")
    include = [f.lower() for f in include]
    unknown = [f for f in include if f not in FORMATS]
    if unknown:
        raise ValueError(f"--include {unknown}: supported formats are {list(FORMATS)}")
    if int8 and include != ["openvino"]:
        raise ValueError(f"--int8: INT8 quantization is for OpenVINO exports: use --include openvino, not {' '.join(include)}")
    if max_drop is not None and not (int8 and max_drop >= 0):
        raise ValueError(f"--max-drop {max_drop}: " + ("must be 0 or more (mAP50-95, e.g. 0.01)" if int8 else "is for --int8 exports"))
    check_device(device)
    folder = writable_folder(Path(output) if output else weights.parent, given=bool(output))
    device = select_device(device, verbose=False)
    half_files = half and device.type != "cpu"  # float16 ONNX/TorchScript need a GPU to run
    if half and not half_files and include != ["openvino"]:
        LOGGER.warning("--half: float16 ONNX/TorchScript files need a GPU (--device 0); exporting those in float32")
    reduced = None  # the reduced precision OpenVINO runs --half exports in on this CPU
    if half and "openvino" in include:
        reduced = openvino_reduced_precision()
        LOGGER.info(f"OpenVINO --half: {f'this CPU runs it in {reduced}' if reduced else 'this CPU has no reduced precision (no AVX512-BF16/AMX): it runs in float32 here'}")
    model = load_model(weights, device)
    stride = max(int(model.stride.max()), 32)
    size = list(imgsz) * 2 if len(imgsz) == 1 else list(imgsz)
    checked = check_imgsz(size, stride=stride, min_dim=2)  # multiples of the stride, with a warning when rounded
    gf = has_global_filter(model)
    if dynamic and gf:
        LOGGER.info("--dynamic: Global Filter layers export with their DFT matrices built in the graph for any input size")
    im = torch.rand(batch_size, model.yaml.get("channels", 3), *checked, device=device)
    LOGGER.info(f"Exporting {weights} ({'Global Filter, ' if gf else ''}input {tuple(im.shape)}) to {', '.join(include)}")
    em = exportable_model(model, im, dynamic=dynamic)
    want = reference_output(model, im)  # the float32 model: half exports are held to it too
    results = {}
    for fmt in include:
        file = folder / (weights.stem + ("_int8" if int8 else "") + FORMATS[fmt])
        if file.exists():
            LOGGER.info(f"{fmt}: overwriting the previous export {file}")
        if fmt == "openvino":  # traced in float32 on the CPU; the reduced precision is the runtime's, at run time
            metadata = export_metadata(model, checked, batch_size, dynamic, half, fmt, weights)
            tol = TOLERANCE_BF16 if reduced else TOLERANCE
            label = f"OpenVINO {reduced}" if reduced else "OpenVINO"
            if int8:  # the float export, checked, then quantized from it
                from utils.quantize import quantize_openvino

                float_folder = folder / f".{weights.stem}_float_openvino_model"
                export_openvino(em.float().cpu(), im.float().cpu(), float_folder, metadata, dynamic=dynamic)
                compare(openvino_output(float_folder, im, half=half), want, max(checked), label, tol)
                try:
                    quantize_openvino(float_folder, model, data or ROOT / "data" / "shapes.yaml", tuple(checked), fraction, file, max_drop)
                finally:
                    shutil.rmtree(float_folder, ignore_errors=True)
                diff_boxes, diff_scores = max_diffs(openvino_output(file, im, half=half), want)
                diff = max(diff_boxes, diff_scores)
                LOGGER.info(f"OpenVINO INT8: max |INT8 - PyTorch| = {diff:.3g} (boxes {diff_boxes:.3g} px, scores {diff_scores:.3g}; "
                            "INT8 is judged by its mAP: val.py --weights on it)")
            else:
                export_openvino(em.float().cpu(), im.float().cpu(), file, metadata, dynamic=dynamic)
                diff = compare(openvino_output(file, im, half=half), want, max(checked), label, tol)
            em.to(device)
        else:
            metadata = export_metadata(model, checked, batch_size, dynamic, half_files, fmt, weights)
            m, x = (em.half(), im.half()) if half_files else (em.float(), im.float())
            tol = TOLERANCE_HALF if half_files else TOLERANCE
            if fmt == "onnx":
                export_onnx(m, x, file, metadata, opset=opset, dynamic=dynamic, simplify=simplify)
                try:
                    got = onnx_output(file, x)
                except Exception as e:  # onnxruntime's CPU provider lacks some fp16 kernels
                    if not half_files:
                        raise
                    LOGGER.warning(f"ONNX: could not run the fp16 file on onnxruntime's CPU provider to check it ({e})")
                    got = None
                diff = float("nan") if got is None else compare(got, want, max(checked), "ONNX", tol)
            else:
                export_torchscript(m, x, file, metadata)
                diff = compare(torchscript_output(file, x), want, max(checked), "TorchScript", tol)
        size_mb = sum(f.stat().st_size for f in ([file] if file.is_file() else file.iterdir())) / 1e6
        LOGGER.info(f"{fmt}: saved {file} ({size_mb:.1f} MB)")
        results[fmt] = {"file": file, "max_diff": diff}
    LOGGER.info(f"Export complete ({time.time() - t0:.1f}s): {', '.join(str(r['file']) for r in results.values())}")
    return results


def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=str, default=None, help="checkpoint (default: the newest runs/train/*/weights/best.pt)")
    parser.add_argument("--include", nargs="+", default=["onnx", "torchscript"], help="formats: onnx, torchscript, openvino")
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="image size: one value, or H W")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the exported input")
    parser.add_argument("--device", default="cpu", help="cpu, or a cuda device such as 0")
    parser.add_argument("--half", action="store_true", help="ONNX/TorchScript: float16 (GPU only); OpenVINO: the CPU's reduced precision (bfloat16)")
    parser.add_argument("--dynamic", action="store_true", help="ONNX/OpenVINO: dynamic batch, height and width")
    parser.add_argument("--simplify", action="store_true", help="ONNX: simplify the graph (needs onnxslim or onnxsim)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the one ultralytics picks)")
    parser.add_argument("--output", type=str, default=None, help="folder the exports go to (default: the weights' folder)")
    parser.add_argument("--int8", action="store_true", help="OpenVINO: INT8 post-training quantization (NNCF), calibrated on --data")
    parser.add_argument("--data", type=str, default=None, help="--int8: dataset YAML whose training images calibrate (default data/shapes.yaml)")
    parser.add_argument("--fraction", type=float, default=1.0, help="--int8: fraction of the training images to calibrate on (at most 300 are used)")
    parser.add_argument("--max-drop", type=float, default=None, help="--int8: keep layers in float until the val mAP50-95 of --data is within this of float's (e.g. 0.01)")
    opt = parser.parse_args(argv)
    if len(opt.imgsz) > 2:
        parser.error(f"--imgsz takes one size or H W, got {opt.imgsz}")
    return opt


def main(argv=None) -> int:
    opt = parse_opt(argv)
    try:
        run(**vars(opt))
    except (FileNotFoundError, ValueError, ExportError) as e:
        LOGGER.error(f"export.py: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
