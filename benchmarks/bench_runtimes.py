"""Runtime table: CPU inference of each model in PyTorch and in the runtimes export.py writes for, and their mAP.

    python benchmarks/bench_runtimes.py                                  # yolov5n/s and every HorNet style, 320 and 640
    python benchmarks/bench_runtimes.py --models yolov5s yolov5s-hornet yolov5s-hornet-gf --sizes 640
    python benchmarks/bench_runtimes.py --weights a/best.pt b/best.pt --data data/shapes.yaml --img 160   # mAP table

Speed: each model is built from its YAML (random weights, 80 classes), fused as detect.py runs it, and exported
to ONNX and OpenVINO by export.py's own functions, at each size. Then ms/image, batch 1, `--threads` threads
everywhere, median of `--runs` calls per runtime, the runtimes interleaved call by call (a neighbour's load hits
all alike): PyTorch eager with models/cpu_kernels.py off (the plain layers) and on (what detect.py runs), ONNX
Runtime, OpenVINO float32, OpenVINO in the CPU's reduced precision (bf16 where the CPU has it), and OpenVINO INT8
(export.py --int8, calibrated on 60 images of the embedded set; float parts in float32). Ratios are to PyTorch eager
with the kernels on. Post-processing (NMS) is not included: it is the same for all.

mAP (`--weights`): each trained checkpoint exported with --dynamic (so that every runtime gets the same
rectangular batches as the .pt: a fixed-size export would be letterboxed differently), then val.py on `--data`
at `--img` for the .pt and each export (ONNX Runtime, OpenVINO f32, reduced precision, INT8 calibrated on --data's
training images): mAP50-95, and the largest difference to the .pt's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench_env import ROOT  # noqa: E402,F401  (first: see bench_env)

import torch  # noqa: E402

from models import cpu_kernels  # noqa: E402
from models.yolo import Model, find_model_yaml  # noqa: E402
from utils.quantize import quantize_openvino  # noqa: E402
from utils.export import (  # noqa: E402
    compile_openvino,
    export_metadata,
    export_onnx,
    export_openvino,
    exportable_model,
    openvino_reduced_precision,
)

STYLES = ("", "-gnconv", "-horblock", "-hornet", "-hornet-gf", "-horfpn")
RUNTIMES = ("eager, plain layers", "eager", "ONNX Runtime", "OpenVINO f32", "OpenVINO reduced", "OpenVINO INT8")


def openvino_exports(model: torch.nn.Module, em: torch.nn.Module, im: torch.Tensor, folder: Path, meta: dict) -> tuple[Path, Path]:
    """The float OpenVINO export of `em` (the export form of `model`) and its INT8 quantization (calibrated on 60
    embedded-set images) in `folder`, at im's size: (float folder, INT8 folder)."""
    size = tuple(im.shape[2:])
    ov_folder = export_openvino(em, im, folder / f"m{size[0]}_openvino_model", meta)
    return ov_folder, quantize_openvino(ov_folder, model, ROOT / "data" / "shapes.yaml", size, 0.1, folder / f"m{size[0]}_int8_openvino_model")


def runners(model: torch.nn.Module, size: int, folder: Path, threads: int) -> dict:
    """{runtime: a no-argument callable running one 1x3xSxS image} for one model at one size."""
    import onnxruntime as ort

    im = torch.rand(1, 3, size, size)
    em = exportable_model(model, im)
    fused = model.fuse(verbose=False)
    meta = export_metadata(model, [size, size], 1, False, False, "onnx", folder / "model.pt")
    onnx_file = export_onnx(em, im, folder / f"m{size}.onnx", meta)
    ov_folder, int8_folder = openvino_exports(model, em, im, folder, meta)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    x = im.numpy()
    compiled = {half: compile_openvino(ov_folder, half=half, threads=threads) for half in (False, True)}
    int8 = compile_openvino(int8_folder, half=False, threads=threads)  # as val.py and detect.py run it

    def eager(kernels: bool):
        def run():
            with torch.no_grad(), cpu_kernels.enabled(kernels):
                fused(im)

        return run

    return {
        "eager, plain layers": eager(False),
        "eager": eager(True),
        "ONNX Runtime": lambda: session.run(None, {"images": x}),
        "OpenVINO f32": lambda: compiled[False](x),
        "OpenVINO reduced": lambda: compiled[True](x),
        "OpenVINO INT8": lambda: int8(x),
    }


def speed_table(opt) -> None:
    reduced = openvino_reduced_precision() or "f32 (no reduced precision on this CPU)"
    print(f"\ntorch {torch.__version__}, {opt.threads} threads, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; batch 1, median of {opt.runs} interleaved calls; "
          f"OpenVINO reduced = {reduced}; CPU kernels: {cpu_kernels.UNAVAILABLE or 'available'}\n")
    print("| model | size | " + " | ".join(f"{r} ms" for r in RUNTIMES) + " | " + " | ".join(f"{r} vs eager" for r in RUNTIMES[2:]) + " |")
    print("|---|---:|" + "---:|" * (2 * len(RUNTIMES) - 2))
    for name in opt.models:
        for size in opt.sizes:
            torch.manual_seed(0)
            model = Model(find_model_yaml(name), verbose=False).eval()
            with tempfile.TemporaryDirectory() as d:
                fns = runners(model, size, Path(d), opt.threads)
                for fn in fns.values():  # warm-up: first calls allocate and pick kernels
                    fn()
                times = {k: [] for k in fns}
                for r in range(opt.runs):
                    for k in (RUNTIMES if r % 2 == 0 else RUNTIMES[::-1]):
                        t0 = time.perf_counter()
                        fns[k]()
                        times[k].append(time.perf_counter() - t0)
            ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            ratios = " | ".join(f"{ms['eager'] / ms[k]:.2f}x" for k in RUNTIMES[2:])
            print(f"| {name} | {size} | " + " | ".join(f"{ms[k]:.1f}" for k in RUNTIMES) + f" | {ratios} |", flush=True)


EXPORTS = (".pt", "ONNX Runtime", "OpenVINO f32", "OpenVINO reduced", "OpenVINO INT8")


def export_maps(weights: Path, data: str, img: int) -> dict[str, float]:
    """{runtime: val mAP50-95} of one trained checkpoint and its dynamic exports, val.py at `img`, batch 1."""
    import export
    import val

    with tempfile.TemporaryDirectory() as d:
        pt = Path(d) / weights.name
        pt.write_bytes(weights.read_bytes())
        half_dir = Path(d) / "half"
        half_dir.mkdir()
        half_pt = half_dir / weights.name
        half_pt.write_bytes(weights.read_bytes())
        files = export.run(weights=pt, include=["onnx", "openvino"], imgsz=[img], dynamic=True)
        files_half = export.run(weights=half_pt, include=["openvino"], imgsz=[img], half=True, dynamic=True)
        files_int8 = export.run(weights=pt, include=["openvino"], imgsz=[img], dynamic=True, int8=True, data=data)
        targets = (pt, files["onnx"]["file"], files["openvino"]["file"], files_half["openvino"]["file"], files_int8["openvino"]["file"])
        return {label: float(val.run(weights=str(f), data=data, imgsz=img, batch_size=1, workers=0,
                                     project=str(Path(d) / "val"))["metrics/mAP50-95(B)"])
                for label, f in zip(EXPORTS, targets)}


def map_table(opt) -> None:
    print(f"\nval mAP50-95 on {opt.data} at {opt.img} px (dynamic exports)\n")
    print("| weights | " + " | ".join(EXPORTS) + " | largest difference |\n|---|" + "---:|" * (len(EXPORTS) + 1))
    out = {}
    for w in opt.weights:
        maps = out[w] = export_maps(Path(w), opt.data, opt.img)
        diff = max(abs(maps[k] - maps[".pt"]) for k in EXPORTS[1:])
        print(f"| {w} | " + " | ".join(f"{maps[k]:.4f}" for k in EXPORTS) + f" | {diff:.4f} |", flush=True)
    if opt.json:
        Path(opt.json).write_text(json.dumps(out, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=[f"yolov5{s}{style}" for s in "ns" for style in STYLES])
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", nargs="+", default=None, help="trained checkpoints: print the mAP table instead")
    ap.add_argument("--data", default="data/shapes.yaml")
    ap.add_argument("--img", type=int, default=160)
    ap.add_argument("--json", default=None, help="with --weights: also write {weights: {runtime: mAP50-95}} to this file")
    ap.add_argument("--passive", action="store_true", help="OpenMP threads sleep while waiting (shared machine)")
    opt = ap.parse_args()
    torch.set_num_threads(opt.threads)
    if opt.weights:
        map_table(opt)
    else:
        speed_table(opt)


if __name__ == "__main__":
    main()
