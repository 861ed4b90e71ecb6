"""Model table: parameters, GFLOPs, CPU inference time and training speed of every model YAML.

    python benchmarks/bench_models.py                      # every cfg/*.yaml, 2 threads
    python benchmarks/bench_models.py --hornet             # also the full-size cfg/hornet/*.yaml
    python benchmarks/bench_models.py --models yolov5s yolov5s-hornet --runs 5
    python benchmarks/bench_models.py --passive            # on a machine shared with other jobs
    python benchmarks/bench_models.py --cpu-kernels        # training with models/cpu_kernels.py on vs off

For each model: parameters, GFLOPs at 640x640 (thop, as the ultralytics engine counts them), CPU inference
ms/image at 320 and 640 (batch 1, the model fused as detect.py runs it, median of `--runs` runs after a
warm-up), and training images/s at 320: a few SGD iterations (forward, the model's own loss
`model.loss(batch)`, backward, optimizer step) on a batch of the embedded shapes dataset, rendered in
memory by utils/shapes.py (random images and boxes if that module is missing). The table is markdown,
with ratios to yolov5s (params, GFLOPs and ms: lower is better; train img/s: higher is better).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

from bench_env import ROOT  # noqa: E402  (first: see bench_env)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.utils.torch_utils import get_flops  # noqa: E402

from models.yolo import Model  # noqa: E402


def shapes_batch(bs: int, imgsz: int, seed: int = 0) -> dict:
    """An ultralytics training batch (img, batch_idx, cls, bboxes as normalized xywh) of the embedded dataset."""
    try:
        from utils.shapes import _n_objects, render_shapes_image
    except ImportError:  # no embedded dataset in this checkout: random images and boxes
        g = torch.Generator().manual_seed(seed)
        n = 4 * bs
        xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
        return {
            "img": torch.rand(bs, 3, imgsz, imgsz, generator=g),
            "batch_idx": torch.arange(bs).repeat_interleave(4).float(),
            "cls": torch.randint(0, 6, (n, 1), generator=g).float(),
            "bboxes": torch.cat((xy, wh), 1),
        }
    images, idx, cls, boxes = [], [], [], []
    for i in range(bs):
        rng = np.random.default_rng([seed, 2, i])
        img, _, labels = render_shapes_image(rng, imgsz, _n_objects(rng, i, imgsz))
        images.append(torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))).float() / 255)
        idx += [i] * len(labels)
        cls.append(torch.from_numpy(labels[:, :1]).float())
        boxes.append(torch.from_numpy(labels[:, 1:]).float())
    return {"img": torch.stack(images), "batch_idx": torch.tensor(idx, dtype=torch.float32),
            "cls": torch.cat(cls), "bboxes": torch.cat(boxes)}


def inference_ms(model, imgsz: int, runs: int) -> float:
    x = torch.rand(1, 3, imgsz, imgsz)
    times = []
    with torch.no_grad():
        model(x)  # warm-up (allocations, the GF filter cache)
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def train_images_per_s(model, batch: dict, iters: int) -> float:
    args = get_cfg()  # the engine's default hyperparameters, as the trainer hands them to the criterion
    args.imgsz = batch["img"].shape[-1]
    model.args = args
    model.criterion = None
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    times = []
    for i in range(iters + 1):  # the first iteration is a warm-up
        t = time.perf_counter()
        loss, _ = model.loss(batch)
        loss.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    return len(batch["img"]) / statistics.median(times)


def cpu_kernels_table(cfgs, batch: dict, reps: int) -> None:
    """Training step (loss forward + backward) of each HorNet model with models/cpu_kernels.py on and off,
    interleaved in one process."""
    from bench_layers import kernels_off, timed

    from models import cpu_kernels
    from models.hornet import HorBlock, gnConv

    print("| model | plain path ms/iter | CPU kernels ms/iter | train img/s | speed-up |\n|---|---:|---:|---:|---:|")
    for cfg in cfgs:
        torch.manual_seed(0)
        model = Model(cfg, verbose=False)
        if not any(isinstance(m, (HorBlock, gnConv)) for m in model.modules()):
            continue
        model.args = get_cfg()
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            model.loss(batch)[0].sum().backward()

        t = timed({"plain": kernels_off(step), "kernels": step}, reps, 2)
        (slow, _), (fast, _) = t["plain"], t["kernels"]
        n = len(batch["img"])
        print(f"| {cfg.stem} | {slow:.0f} | {fast:.0f} | {n * 1e3 / slow:.1f} -> {n * 1e3 / fast:.1f} | {slow / fast:.2f}x |",
              flush=True)
    if cpu_kernels.UNAVAILABLE:
        print(f"(the CPU kernels cannot run with this torch: {cpu_kernels.UNAVAILABLE}; both columns are the plain path)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", help="YAML stems (default: every cfg/*.yaml)")
    ap.add_argument("--hornet", action="store_true", help="also the full-size backbones in cfg/hornet/")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE: for a machine shared with other jobs")
    ap.add_argument("--runs", type=int, default=3, help="timed inference runs per size (median)")
    ap.add_argument("--iters", type=int, default=3, help="timed training iterations (median)")
    ap.add_argument("--batch", type=int, default=8, help="training batch size")
    ap.add_argument("--cpu-kernels", action="store_true",
                    help="instead: training with models/cpu_kernels.py on vs off, per HorNet model (median of 7)")
    opt = ap.parse_args()
    torch.set_num_threads(opt.threads)

    cfgs = sorted((ROOT / "cfg").glob("*.yaml")) + (sorted((ROOT / "cfg" / "hornet").glob("*.yaml")) if opt.hornet else [])
    if opt.models:
        cfgs = [c for c in cfgs if c.stem in opt.models]
    order = {"yolov5n": 0, "yolov5s": 1, "yolov5m": 2, "yolov5l": 3, "yolov5x": 4}
    cfgs.sort(key=lambda c: (c.parent.name == "hornet", c.stem.split("-")[0][-1] not in "ns", order.get(c.stem, 9), c.stem))
    batch = shapes_batch(opt.batch, 320)
    print(f"torch {torch.__version__}, {opt.threads} threads, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}; inference batch 1 (fused, median of {opt.runs}), "
          f"training batch {opt.batch} at 320 (median of {opt.iters} iterations)\n", flush=True)

    if opt.cpu_kernels:
        return cpu_kernels_table(cfgs, batch, reps=7)

    # Warm the process up (thread pool, allocator, oneDNN kernels) on a throwaway model: the first model timed
    # in a fresh process otherwise measured a third slower in training than in a second run.
    warm = Model(cfgs[0], verbose=False)
    train_images_per_s(warm, batch, 1)
    inference_ms(copy.deepcopy(warm).eval().fuse(verbose=False), 320, 1)
    del warm

    results = {}
    for cfg in cfgs:
        name = cfg.stem
        torch.manual_seed(0)
        model = Model(cfg, verbose=False)
        params = sum(p.numel() for p in model.parameters())
        gflops = get_flops(model, 640)
        ips = train_images_per_s(model, batch, opt.iters)
        fused = copy.deepcopy(model).eval().fuse(verbose=False)
        ms = {s: inference_ms(fused, s, opt.runs) for s in (320, 640)}
        results[name] = (params, gflops, ms[320], ms[640], ips)
        print(f"  {name}: {params / 1e6:.2f}M params, {gflops:.1f} GFLOPs, {ms[320]:.0f} / {ms[640]:.0f} ms, "
              f"{ips:.2f} img/s", flush=True)
        del model, fused

    base = results.get("yolov5s")
    print("\n| model | params (M) | GFLOPs @640 | CPU ms/img @320 | CPU ms/img @640 | train img/s @320 |"
          + (" params / s | GFLOPs / s | ms@320 / s | ms@640 / s | train / s |" if base else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|---:|" if base else ""))
    for name, (params, gflops, ms320, ms640, ips) in results.items():
        line = f"| {name} | {params / 1e6:.2f} | {gflops:.1f} | {ms320:.0f} | {ms640:.0f} | {ips:.2f} |"
        if base:
            line += (f" {params / base[0]:.2f} | {gflops / base[1]:.2f} | {ms320 / base[2]:.2f} | {ms640 / base[3]:.2f} |"
                     f" {ips / base[4]:.2f} |")
        print(line)


if __name__ == "__main__":
    main()
