"""What only a GPU shows, in one command: AMP, the Global Filter under autocast, channels_last, torch.compile, speed
and DDP over every visible GPU, for every style; a markdown table.

    python benchmarks/gpu_check.py                       # on a CUDA machine: 50 steps per style, docs/gpu-check.md
    python benchmarks/gpu_check.py --dry --out x.md      # on a CPU, a few steps (the test suite runs this)

Per style, on the embedded shapes set (generated if missing; --dry: a tiny set in a temporary folder):
- `fp16`, `bf16`: train steps under autocast (GradScaler for fp16): every loss finite, and the loss of the last
  steps against the first (`0.41 -> 0.23`); --dry: bf16 on the CPU only, and no claim about decrease.
- `GF fp32`: a Global Filter layer's FFT path under autocast returns float32 equal to its float32 result (CUDA
  half-precision FFTs take power-of-two sizes only, and 640-px feature maps are not).
- `channels_last`, `compile`: the largest output difference to the plain eager model (compile: inductor; --dry:
  the eager backend, which traces the model without generating code).
- `train ms`, `infer ms`: per image, after warm-up (batch 8; --dry: batch 2).
- DDP: `train.py --device 0,1,...` for one epoch of yolov5n-hornet over every visible GPU, when there are two or more.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from bench_env import ROOT  # noqa: F401  (first: see bench_env)

import torch  # noqa: E402

from models.heads import AnchorDetect  # noqa: E402
from models.hornet import GlobalLocalFilter  # noqa: E402
from models.loss import LOSS_DEFAULTS  # noqa: E402
from models.yolo import Model  # noqa: E402
from ultralytics.utils import IterableSimpleNamespace  # noqa: E402
from utils.trainer import ANCHOR_FREE_GAINS  # noqa: E402

STYLES = ["yolov5n", "yolov5n-gnconv", "yolov5n-horblock", "yolov5n-hornet", "yolov5n-hornet-gf", "yolov5n-horfpn", "yolo11n-horfpn"]


def batches(data_yaml: Path, imgsz: int, batch: int, n: int, device) -> list[dict]:
    """`n` training batches of the set (the engine's loader and augmentation), on `device`."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader

    from utils.data import build_yolo_dataset, load_data_config

    data = load_data_config(data_yaml)
    cfg = get_cfg(overrides={"imgsz": imgsz, "mosaic": 1.0})
    loader = build_dataloader(build_yolo_dataset(cfg, data["train"], batch, data, mode="train"), batch, 0, shuffle=True)
    out = []
    while len(out) < n:
        for b in loader:
            b["img"] = b["img"].to(device).float() / 255
            out.append({k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()})
            if len(out) == n:
                break
    return out


def amp_steps(style: str, dtype, data: list[dict], device) -> str:
    """Train steps under autocast in `dtype`: 'first -> last' loss, or what went wrong."""
    torch.manual_seed(0)
    model = Model(ROOT / "cfg" / f"{style}.yaml", nc=6, verbose=False).to(device).train()
    anchor_free = not isinstance(model.model[-1], AnchorDetect)  # the engine's loss and gains, as train.py uses them
    model.args = IterableSimpleNamespace(**{**LOSS_DEFAULTS, "imgsz": data[0]["img"].shape[-1], **(ANCHOR_FREE_GAINS if anchor_free else {})})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    losses = []
    for b in data:
        with torch.autocast(device.type, dtype=dtype):
            loss, _ = model.loss(b)
        loss = loss.sum()
        if not torch.isfinite(loss):
            return f"non-finite loss at step {len(losses) + 1}"
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss))
    k = max(1, len(losses) // 5)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return f"{first:.3g} -> {last:.3g}"


def gf_stays_float32(style: str, device, dtype) -> str:
    layers = [m for m in Model(ROOT / "cfg" / f"{style}.yaml", verbose=False).to(device).modules() if isinstance(m, GlobalLocalFilter)]
    if not layers:
        return "-"
    layer = layers[0]
    x = torch.randn(1, layer.complex_weight.shape[0], 20, 20, device=device)  # 20: not a power of two
    with torch.autocast(device.type, dtype=dtype):
        y = layer.global_filter(x.to(dtype))
    want = layer.global_filter(x.to(dtype).float())
    ok = y.dtype == torch.float32 and torch.allclose(y, want, atol=1e-5)
    return "yes" if ok else f"no ({y.dtype})"


def tensors(x) -> list:
    """The tensors in a model's output (a tensor, a list of them, or the anchor-free head's dict of them)."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for item in x for t in tensors(item)] if isinstance(x, (list, tuple)) else []


def max_diff(a, b) -> float:
    return float((a[0] if isinstance(a, (list, tuple)) else a).float().sub((b[0] if isinstance(b, (list, tuple)) else b).float()).abs().max())


def layouts(style: str, device, dry: bool) -> tuple[str, str]:
    model = Model(ROOT / "cfg" / f"{style}.yaml", verbose=False).to(device).eval()
    x = torch.rand(2, 3, 128, 128, device=device)
    with torch.no_grad():
        want = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        model.to(memory_format=torch.contiguous_format)
        try:
            compiled = torch.compile(model, backend="eager" if dry else "inductor")(x)
            comp = f"{max_diff(compiled, want):.2g}"
        except Exception as e:  # a compile failure is a finding, not a crash of the check
            comp = f"fails: {type(e).__name__}"
    return f"{max_diff(cl, want):.2g}", comp


def speed(style: str, device, batch: int, imgsz: int, n: int) -> tuple[float, float]:
    """ms per image for a train step (forward + backward of the outputs' sum) and for inference."""
    model = Model(ROOT / "cfg" / f"{style}.yaml", verbose=False).to(device)
    x = torch.rand(batch, 3, imgsz, imgsz, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    amp = torch.autocast(device.type, dtype=torch.float16) if device.type == "cuda" else nullcontext()

    def timed(fn) -> float:
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - t) / n / batch * 1000

    def train_step():
        with amp:
            out = model.train()(x)
        sum(t.float().sum() for t in tensors(out)).backward()

    def infer():
        with torch.no_grad(), amp:
            model.eval()(x)

    return timed(train_step), timed(infer)


def ddp_run(data_yaml: Path, project: Path) -> str:
    n = torch.cuda.device_count()
    if n < 2:
        return f"not run ({n} visible GPU{'s' if n != 1 else ''})"
    cmd = [sys.executable, "train.py", "--cfg", "cfg/yolov5n-hornet.yaml", "--data", str(data_yaml), "--epochs", "1", "--img", "320",
           "--batch-size", str(8 * n), "--device", ",".join(map(str, range(n))), "--project", str(project), "--noplots"]
    t = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return f"{n} GPUs: {'ok' if r.returncode == 0 else 'FAILED: ' + (r.stderr or r.stdout).strip().splitlines()[-1][:200]} in {time.time() - t:.0f} s"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry", action="store_true", help="CPU dry run: a few steps, bf16 only, compile with the eager backend")
    p.add_argument("--styles", nargs="+", default=STYLES)
    p.add_argument("--out", default=None, help="markdown file (default docs/gpu-check.md, or stdout with --dry)")
    opt = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not opt.dry else "cpu")
    if device.type == "cpu" and not opt.dry:
        sys.exit("error: no CUDA device here: run with --dry for the CPU check")
    steps, imgsz, batch = (4, 64, 2) if opt.dry else (50, 320, 8)
    with tempfile.TemporaryDirectory() as tmp:
        if opt.dry:
            from utils.shapes import CLASSES, make_shapes_dataset

            root = make_shapes_dataset(Path(tmp) / "shapes", n_train=8, n_val=2, imgsz=64, seed=0)
            data_yaml = root / "data.yaml"
            data_yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {dict(enumerate(CLASSES))}\n")
        else:
            data_yaml = ROOT / "data" / "shapes.yaml"
        data = batches(data_yaml, imgsz, batch, steps, device)
        dtypes = [torch.bfloat16] if opt.dry else [torch.float16, torch.bfloat16]
        rows = []
        for style in opt.styles:
            amp = {d: amp_steps(style, d, data, device) for d in dtypes}
            cl, comp = layouts(style, device, opt.dry)
            train_ms, infer_ms = speed(style, device, batch, 128 if opt.dry else 640, 2 if opt.dry else 20)
            rows.append([style, amp.get(torch.float16, "-"), amp[torch.bfloat16], gf_stays_float32(style, device, dtypes[0]),
                         cl, comp, f"{train_ms:.1f}", f"{infer_ms:.1f}"])
            print(" | ".join(rows[-1]), flush=True)
        ddp = "not run (--dry: see tests/test_ddp.py for DDP on CPU processes)" if opt.dry else ddp_run(data_yaml, Path(tmp))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (dry run)"
    lines = [f"# GPU check: {name}, torch {torch.__version__}", "",
             f"`python benchmarks/gpu_check.py{' --dry' if opt.dry else ''}`: {steps} steps at {imgsz} px, batch {batch}; "
             f"speed at {128 if opt.dry else 640} px (fp16 autocast on CUDA).", "",
             "| style | fp16 loss | bf16 loss | GF FFT fp32 | channels_last diff | compile diff | train ms/img | infer ms/img |",
             "|---|---|---|---|---:|---|---:|---:|", *("| " + " | ".join(r) + " |" for r in rows), "", f"DDP: {ddp}", ""]
    text = "\n".join(lines)
    out = opt.out or (None if opt.dry else ROOT / "docs" / "gpu-check.md")
    if out:
        Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
