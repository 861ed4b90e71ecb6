"""Where OpenVINO's time goes, per kind of layer, in bf16 and INT8: why INT8 gains more for one model than another.

    python benchmarks/profile_openvino.py                                   # yolov5s and its HorNet styles at 640
    python benchmarks/profile_openvino.py --models yolov5s-horfpn --size 320

Each model is built from its YAML (random weights, as bench_runtimes.py builds them), exported by export.py's own
functions to OpenVINO float32 and quantized to INT8 (calibrated on 60 embedded-set images). Both are compiled with
OpenVINO's per-layer counters (PERF_COUNT), the reduced precision (bf16 where the CPU has it) and INT8 calls
interleaved; a layer's time is its median over `--runs` calls. The table sums the layers by kind (OpenVINO's
layer type after its fusions: a Convolution row includes the activations and quantizers fused into it), and
says how much of each kind ran in 8 bits (an execution type naming I8/U8).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import bench_env  # noqa: F401  (first: see bench_env)

import torch  # noqa: E402

from bench_runtimes import openvino_exports  # noqa: E402
from models.yolo import Model, find_model_yaml  # noqa: E402
from utils.export import compile_openvino, export_metadata, exportable_model  # noqa: E402


def layer_times(compiled: dict, x, runs: int) -> tuple[dict, dict]:
    """({precision: {layer name: (layer type, execution type, median ms)}}, {precision: median wall ms of a call})
    over `runs` calls of each compiled model, interleaved call by call (after one warm-up call each)."""
    requests = {k: c.create_infer_request() for k, c in compiled.items()}
    samples = {k: defaultdict(list) for k in compiled}
    kinds = {k: {} for k in compiled}
    wall = {k: [] for k in compiled}
    for r in range(runs + 1):
        for k, request in requests.items():
            t0 = time.perf_counter()
            request.infer(x)
            wall[k].append((time.perf_counter() - t0) * 1e3)
            for p in request.get_profiling_info() if r else ():
                if p.status.name == "EXECUTED":
                    samples[k][p.node_name].append(p.real_time.total_seconds() * 1e3)
                    kinds[k][p.node_name] = (p.node_type, p.exec_type)
    layers = {k: {name: (*kinds[k][name], statistics.median(ms)) for name, ms in samples[k].items()} for k in compiled}
    return layers, {k: statistics.median(v[1:]) for k, v in wall.items()}


def by_kind(layers: dict) -> dict[str, tuple[float, float]]:
    """{layer type: (ms, ms of it in 8-bit kernels)}."""
    out = defaultdict(lambda: [0.0, 0.0])
    for node_type, exec_type, ms in layers.values():
        out[node_type][0] += ms
        if re.search(r"[IU]8", exec_type):
            out[node_type][1] += ms
    return {k: tuple(v) for k, v in out.items()}


def profile(name: str, size: int, threads: int, runs: int) -> None:
    torch.manual_seed(0)
    model = Model(find_model_yaml(name), verbose=False).eval()
    im = torch.rand(1, 3, size, size)
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        meta = export_metadata(model, [size, size], 1, False, False, "openvino", folder / "model.pt")
        ov_folder, int8_folder = openvino_exports(model, exportable_model(model, im), im, folder, meta)
        compiled = {"bf16": compile_openvino(ov_folder, half=True, threads=threads, PERF_COUNT=True),
                    "INT8": compile_openvino(int8_folder, half=False, threads=threads, PERF_COUNT=True)}
        x = im.numpy()
        layers, wall = layer_times(compiled, x, runs)
    kinds = {k: by_kind(v) for k, v in layers.items()}
    total = {k: sum(ms for ms, _ in v.values()) for k, v in kinds.items()}
    print(f"\n{name} at {size}: layers (sum of medians) bf16 {total['bf16']:.1f} ms, INT8 {total['INT8']:.1f} ms, INT8 "
          f"{total['bf16'] / total['INT8']:.2f}x faster; whole call (median) bf16 {wall['bf16']:.1f} ms, INT8 "
          f"{wall['INT8']:.1f} ms, {wall['bf16'] / wall['INT8']:.2f}x\n")
    print("| layer type | bf16 ms | INT8 ms | INT8 ms in 8-bit kernels | share of INT8 time |")
    print("|---|---:|---:|---:|---:|")
    rows = {k: (kinds["bf16"].get(k, (0.0, 0.0))[0], *kinds["INT8"].get(k, (0.0, 0.0))) for k in {*kinds["bf16"], *kinds["INT8"]}}
    for k, (b, i, i8) in sorted(rows.items(), key=lambda row: -max(row[1][:2])):
        if max(b, i) >= 0.005 * max(total.values()):  # kinds under 0.5 % of the time are left out
            print(f"| {k} | {b:.1f} | {i:.1f} | {i8:.1f} | {i / total['INT8']:.0%} |")
    print(flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=[f"yolov5s{s}" for s in ("", "-gnconv", "-horblock", "-hornet", "-hornet-gf", "-horfpn")])
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--passive", action="store_true", help="OpenMP threads sleep while waiting (a shared machine)")
    opt = p.parse_args()
    for name in opt.models:
        profile(name, opt.size, opt.threads, opt.runs)


if __name__ == "__main__":
    main()
