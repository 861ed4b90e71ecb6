"""Speed of the HorNet layers against a plain implementation of the paper's formulas.

    python benchmarks/bench_layers.py                 # 2 threads, the full table (a few minutes)
    python benchmarks/bench_layers.py --reps 5 --quick
    python benchmarks/bench_layers.py --ablation          # each speed idea on its own
    python benchmarks/bench_layers.py --passive           # on a machine shared with other jobs (see below)

Times forward (inference: eval, no_grad) and forward+backward (train mode) of gnConv (orders 2-5),
HorBlock (7x7 and Global Filter) and the HorNet-T 7x7 backbone (rows 0-7 of cfg/hornet/yolov5-hornet-t.yaml),
each against the plain form below with the same weights. Runs are interleaved (plain, ours, ours, plain,
...) and the medians compared, so that a neighbour's load hits both sides alike; besides wall-clock time
the table gives the process CPU time (time.process_time), which another process's load inflates much
less on a shared machine. Outputs (and input gradients) are compared and reported.

The plain form is written here, for this benchmark, from the paper and the published reference
computation, deliberately as unoptimized as that reference: a channels-first LayerNorm computed by hand
(mean, variance, normalize, affine: several full-tensor passes, each kept for autograd), NCHW tensors
permuted around the MLP, the filter scale `s` and the layer-scale gammas as separate multiplies, the
Global Filter's halves interleaved with cat + reshape and its complex filter resized on every call.
Parameter names and shapes are the official ones, so the same state_dict loads into both.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

from bench_env import ROOT  # noqa: E402  (first: see bench_env)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

from models import cpu_kernels  # noqa: E402
from models.hornet import GlobalLocalFilter, HorBlock, gnConv  # noqa: E402
from models.yolo import parse_model  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# The plain form of the paper's formulas
# ---------------------------------------------------------------------------------------------------


class PlainLayerNorm(nn.Module):
    """LayerNorm over dim 1 ('channels_first') or the last dim ('channels_last'), as in the paper's code."""

    def __init__(self, c: int, eps: float = 1e-6, channels_first: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps, self.channels_first, self.c = eps, channels_first, (c,)
        self.fused_kernel = False  # ablation switch (--ablation): F.layer_norm on a channels-last view instead

    def forward(self, x):
        if not self.channels_first or self.fused_kernel:
            if self.channels_first:
                return F.layer_norm(x.permute(0, 2, 3, 1), self.c, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
            return F.layer_norm(x, self.c, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PlainGF(nn.Module):
    def __init__(self, dim: int, h: int = 14, w: int = 8):
        super().__init__()
        self.dw = nn.Conv2d(dim // 2, dim // 2, 3, padding=1, bias=False, groups=dim // 2)
        self.complex_weight = nn.Parameter(torch.randn(dim // 2, h, w, 2) * 0.02)
        self.pre_norm = PlainLayerNorm(dim)
        self.post_norm = PlainLayerNorm(dim)

    def forward(self, x):
        x = self.pre_norm(x)
        x1, x2 = torch.chunk(x, 2, dim=1)
        x1 = self.dw(x1)
        x2 = x2.to(torch.float32)
        B, C, a, b = x2.shape
        x2 = torch.fft.rfft2(x2, dim=(2, 3), norm="ortho")
        weight = self.complex_weight
        if weight.shape[1:3] != x2.shape[2:4]:
            weight = F.interpolate(weight.permute(3, 0, 1, 2), size=x2.shape[2:4], mode="bilinear", align_corners=True)
            weight = weight.permute(1, 2, 3, 0)
        x2 = x2 * torch.view_as_complex(weight.contiguous())
        x2 = torch.fft.irfft2(x2, s=(a, b), dim=(2, 3), norm="ortho")
        x = torch.cat([x1.unsqueeze(2), x2.unsqueeze(2)], dim=2).reshape(B, 2 * C, a, b)
        return self.post_norm(x)


class PlainGnConv(nn.Module):
    def __init__(self, dim: int, order: int = 3, gf: bool = False, h: int = 14, w: int = 8, s: float = 1 / 3):
        super().__init__()
        self.order = order
        self.dims = [dim // 2**i for i in range(order)][::-1]
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        c = sum(self.dims)
        self.dwconv = PlainGF(c, h, w) if gf else nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))
        self.scale = s

    def forward(self, x):
        fused = self.proj_in(x)
        pwa, abc = torch.split(fused, (self.dims[0], sum(self.dims)), dim=1)
        dw_abc = self.dwconv(abc) * self.scale
        dw_list = torch.split(dw_abc, self.dims, dim=1)
        x = pwa * dw_list[0]
        for i in range(self.order - 1):
            x = self.pws[i](x) * dw_list[i + 1]
        return self.proj_out(x)


class PlainBlock(nn.Module):
    def __init__(self, dim: int, order: int = 3, gf: bool = False, h: int = 14, w: int = 8):
        super().__init__()
        self.norm1 = PlainLayerNorm(dim)
        self.gnconv = PlainGnConv(dim, order, gf, h, w)
        self.norm2 = PlainLayerNorm(dim, channels_first=False)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma1 = nn.Parameter(torch.full((dim,), 1e-6))
        self.gamma2 = nn.Parameter(torch.full((dim,), 1e-6))
        self.channels_last = False  # ablation switch (--ablation): the block's input in channels-last memory

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        B, C, H, W = x.shape
        x = x + self.gamma1.view(C, 1, 1) * self.gnconv(self.norm1(x))
        inp = x
        x = x.permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm2(x))))
        x = self.gamma2 * x
        return inp + x.permute(0, 3, 1, 2)


class PlainBackbone(nn.Module):
    """The official backbone layout: `downsample_layers.i` and `stages.i` (no classifier head)."""

    def __init__(self, dims=(64, 128, 256, 512), depths=(2, 3, 18, 2), gf_stages=(), sizes=((14, 8), (7, 4))):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), PlainLayerNorm(dims[0]))]
            + [nn.Sequential(PlainLayerNorm(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, stride=2)) for i in range(1, 4)]
        )
        self.stages = nn.ModuleList()
        for i in range(4):
            gf = i in gf_stages
            hw = sizes[i - 2] if gf else (14, 8)
            self.stages.append(nn.Sequential(*(PlainBlock(dims[i], i + 2, gf, *hw) for _ in range(depths[i]))))

    def forward(self, x):
        outs = []
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
            outs.append(x)
        return outs


# ---------------------------------------------------------------------------------------------------
# Building matched pairs (plain, ours) with the same weights
# ---------------------------------------------------------------------------------------------------


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Weights where every path shows in the output: layer scales ~0.5 (not 1e-6), norms near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.25)
            elif "norm" in name and leaf == "weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif leaf == "complex_weight":
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif leaf == "bias":
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
    return module


def row(module: str, args: list, c_in: int) -> nn.Module:
    """One of our layers, built from a YAML row the way a model builds it."""
    seq, _ = parse_model({"nc": 1, "backbone": [[-1, 1, module, args]], "head": []}, ch=[c_in], verbose=False)
    return seq[0]


def pair_gnconv(dim: int, order: int, gf: bool = False, h: int = 14, w: int = 8):
    plain = randomize(PlainGnConv(dim, order, gf, h, w))
    ours = row("gnConv", [dim, order, "gf" if gf else 7, 1 / 3, h, w], dim)
    ours.load_state_dict(plain.state_dict())
    return plain, ours


def pair_block(dim: int, order: int, gf: bool = False, h: int = 14, w: int = 8):
    plain = randomize(PlainBlock(dim, order, gf, h, w))
    ours = row("HorBlock", [dim, order, "gf" if gf else 7, 1 / 3, h, w], dim)
    ours.load_state_dict(plain.state_dict())
    return plain, ours


class Rows(nn.Module):
    """Backbone rows run in sequence, returning the stage outputs (rows 1, 3, 5, 7) like PlainBackbone."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        self.rows = seq

    def forward(self, x):
        outs = []
        for i, m in enumerate(self.rows):
            x = m(x)
            if i % 2:
                outs.append(x)
        return outs


def pair_backbone(cfg: str = "cfg/hornet/yolov5-hornet-t.yaml"):
    d = yaml.safe_load((ROOT / cfg).read_text())
    seq, _ = parse_model({"nc": 1, "backbone": d["backbone"][:8], "head": []}, ch=[3], verbose=False)
    ours = Rows(seq)
    dims = [seq[2 * i + 1][0].gnconv.proj_out.out_channels for i in range(4)]
    depths = [len(seq[2 * i + 1]) for i in range(4)]
    plain = randomize(PlainBackbone(dims, depths))
    state = {}  # official layout -> YAML rows: downsample_layers.i -> row 2i, stages.i.j -> row 2i+1, block j
    for k, v in plain.state_dict().items():
        part, i, rest = k.split(".", 2)
        state[f"rows.{2 * int(i) + (part == 'stages')}.{rest}"] = v
    ours.load_state_dict(state)
    return plain, ours


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------


def _outputs(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def make_step(model: nn.Module, x: torch.Tensor, train: bool, grads):
    """A no-argument callable: inference (eval, no_grad) or forward + backward (train mode)."""
    if not train:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

        return step
    model.train()
    xg = x.clone().requires_grad_()
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        xg.grad = None
        ys = _outputs(model(xg))
        torch.autograd.backward(ys, grads)

    return step


def compare(plain, ours, x, train: bool, grads) -> float:
    """Largest difference of outputs (inference) or of outputs and input gradients (training)."""
    if not train:
        plain.eval(), ours.eval()
        with torch.no_grad():
            return max((a - b).abs().max().item() for a, b in zip(_outputs(plain(x)), _outputs(ours(x))))
    plain.train(), ours.train()
    diffs = []
    gx = []
    for m in (plain, ours):
        xg = x.clone().requires_grad_()
        ys = _outputs(m(xg))
        torch.autograd.backward(ys, grads)
        gx.append(xg.grad)
        diffs.append([y.detach() for y in ys])
    out = max((a - b).abs().max().item() for a, b in zip(*diffs))
    return max(out, (gx[0] - gx[1]).abs().max().item())


def timed(fns: dict, reps: int, warmup: int) -> dict:
    """Interleaved runs: each repetition runs every variant once, the order reversed every other time."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    names = list(fns)
    for r in range(reps):
        for k in names if r % 2 == 0 else names[::-1]:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]) * 1e3, statistics.median(cpu[k]) * 1e3) for k in fns}


# ---------------------------------------------------------------------------------------------------
# Ablation: each idea on its own
# ---------------------------------------------------------------------------------------------------


def _unfolded_call(module, x, scale):
    """models.hornet.scaled_call with the folding switched off: the scale multiplies the output."""
    y = module(x)
    if isinstance(scale, torch.Tensor):
        scale = scale if isinstance(module, nn.Linear) else scale.view(-1, 1, 1)
    return y * scale


def kernels_off(step):
    """`step` with models/cpu_kernels.py switched off: the layers' plain PyTorch path."""

    def run():
        with cpu_kernels.enabled(False):
            step()

    return run


def ablation(opt):
    """LayerNorm variants, then HorBlock with the ideas switched on one after another (cumulative)."""
    import models.hornet as hornet

    print("LayerNorm over the channels of 8x128x40x40 (the block's norm1):\n")
    print("| variant | inference ms | fwd+bwd ms |\n|---|---:|---:|")
    x = torch.randn(8, 128, 40, 40)
    xcl = x.contiguous(memory_format=torch.channels_last)
    w, b = 1 + 0.1 * torch.randn(128), 0.1 * torch.randn(128)

    def manual(t):  # the paper's form
        u = t.mean(1, keepdim=True)
        v = (t - u).pow(2).mean(1, keepdim=True)
        return w[:, None, None] * ((t - u) / torch.sqrt(v + 1e-6)) + b[:, None, None]

    def var_mean(t):  # one statistics pass, rsqrt and a multiply instead of sqrt and a divide
        v, u = torch.var_mean(t, 1, unbiased=False, keepdim=True)
        return (t - u) * torch.rsqrt(v + 1e-6) * w[:, None, None] + b[:, None, None]

    def kernel(t):  # the fused layer_norm kernel on a channels-last view
        return F.layer_norm(t.permute(0, 2, 3, 1), (128,), w, b, 1e-6).permute(0, 3, 1, 2)

    variants = {"manual (paper), NCHW input": (manual, x), "var_mean + rsqrt, NCHW input": (var_mean, x),
                "fused kernel, NCHW input (one permute copy)": (kernel, x),
                "fused kernel, channels-last input (free view)": (kernel, xcl)}
    fwd = {k: (lambda f=f, t=t: f(t)) for k, (f, t) in variants.items()}

    def fb(f, t):
        t = t.clone(memory_format=torch.preserve_format).requires_grad_()
        g = torch.randn(8, 128, 40, 40)
        return lambda: f(t).backward(g)

    with torch.no_grad():
        t_fwd = timed(fwd, opt.reps, opt.warmup)
    t_fb = timed({k: fb(f, t) for k, (f, t) in variants.items()}, opt.reps, opt.warmup)
    for k in variants:
        print(f"| {k} | {t_fwd[k][0]:.2f} | {t_fb[k][0]:.2f} |", flush=True)

    for gf in (False, True):
        name = f"HorBlock {'GF' if gf else '7x7'} order 3, 8x128x40x40"
        plain, ours = pair_block(128, 3, gf)
        ln = copy.deepcopy(plain)
        for m in ln.modules():
            if isinstance(m, PlainLayerNorm):
                m.fused_kernel = True
        cl = copy.deepcopy(ln)
        cl.channels_last = True
        fused = copy.deepcopy(ours).eval().fuse()
        for train in (True, False):
            grads = [torch.randn(8, 128, 40, 40)]
            steps = {
                "plain": make_step(plain, x, train, grads),
                "+ fused LayerNorm kernel": make_step(ln, x, train, grads),
                "+ channels-last block": make_step(cl, x, train, grads),
            }
            module_path = kernels_off(make_step(ours, x, train, grads))

            def no_fold(module_path=module_path):
                hornet.scaled_call, saved = _unfolded_call, hornet.scaled_call
                try:
                    module_path()
                finally:
                    hornet.scaled_call = saved

            steps["ours, module path, s/gammas multiplying outputs"] = no_fold
            steps["+ s/gammas folded into weights, GF one-copy interleave"] = module_path
            steps["+ CPU kernels (oneDNN inference, depth-wise backward, blocked MLP)"] = make_step(ours, x, train, grads)
            if not train:
                steps["ours, fuse()"] = make_step(fused, x, False, grads)
                if gf:
                    f_step = make_step(fused, x, False, grads)
                    gfs = [m for m in fused.modules() if isinstance(m, GlobalLocalFilter)]

                    def no_cache(f_step=f_step, gfs=gfs):
                        for m in gfs:
                            m._filter_cache = {}
                        f_step()

                    steps["ours, fuse(), no GF filter cache"] = no_cache
            t = timed(steps, opt.reps, opt.warmup)
            label = "fwd+bwd" if train else "inference"
            print(f"\n{name}, {label}:\n\n| variant | ms (wall) | vs plain | ms (CPU) | vs plain |\n|---|---:|---:|---:|---:|")
            for k, (wall, cpu) in t.items():
                print(f"| {k} | {wall:.1f} | {t['plain'][0] / wall:.2f}x | {cpu:.1f} | {t['plain'][1] / cpu:.2f}x |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the issue's targets: 2)")
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE: for a machine shared with other jobs")
    ap.add_argument("--reps", type=int, default=9, help="interleaved repetitions per case (medians)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="skip the gnConv orders and the backbone training pass")
    ap.add_argument("--ablation", action="store_true", help="instead: each speed idea on its own")
    opt = ap.parse_args()
    torch.set_num_threads(opt.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {opt.threads} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}; medians of {opt.reps} interleaved runs\n")
    if opt.ablation:
        return ablation(opt)

    x40 = torch.randn(8, 128, 40, 40)
    cases = []  # (name, (plain, ours), input, train)
    orders = [3] if opt.quick else [2, 3, 4, 5]
    for order in orders:
        for train in (False, True):
            cases.append((f"gnConv 7x7 order {order}, 8x128x40x40", lambda o=order: pair_gnconv(128, o), x40, train))
    for train in (False, True):
        cases.append(("gnConv GF order 4, 8x128x40x40", lambda: pair_gnconv(128, 4, True), x40, train))
    for train in (False, True):
        cases.append(("HorBlock 7x7 order 3, 8x128x40x40", lambda: pair_block(128, 3), x40, train))
        cases.append(("HorBlock GF order 3, 8x128x40x40", lambda: pair_block(128, 3, True), x40, train))
    img = torch.randn(1, 3, 224, 224)
    cases.append(("HorNet-T 7x7 backbone, 1x3x224x224", pair_backbone, img, False))
    if not opt.quick:
        cases.append(("HorNet-T 7x7 backbone, 1x3x224x224", pair_backbone, img, True))

    rows, results = [], {}
    header = "| layer | pass | plain ms | ours ms | speed-up (wall) | speed-up (CPU time) | max abs diff |"
    print(header + "\n|---|---|---:|---:|---:|---:|---:|", flush=True)
    for name, build, x, train in cases:
        plain, ours = build()
        with torch.no_grad():
            shapes = [y.shape for y in _outputs(plain.eval()(x))]
        grads = [torch.randn(s) for s in shapes]
        diff = compare(plain, ours, x, train, grads)
        fns = {"plain": make_step(plain, x, train, grads), "ours": make_step(ours, x, train, grads)}
        label = "fwd+bwd" if train else "inference"
        if not train:  # inference also after fuse(), as detect.py runs it
            fused = copy.deepcopy(ours).eval()
            for m in fused.modules():
                if isinstance(m, (HorBlock, gnConv)):
                    m.fuse()
            diff = max(diff, compare(plain, fused, x, False, grads))
            fns["ours, fused"] = make_step(fused, x, False, grads)
        t = timed(fns, opt.reps, opt.warmup)
        for k in fns:
            if k == "plain":
                continue
            line = (f"| {name} | {label}{' (fused)' if 'fused' in k else ''} | {t['plain'][0]:.1f} | {t[k][0]:.1f} | "
                    f"{t['plain'][0] / t[k][0]:.2f}x | {t['plain'][1] / t[k][1]:.2f}x | {diff:.1e} |")
            print(line, flush=True)
            rows.append(line)
            results[(name, label + (" fused" if "fused" in k else ""))] = (t["plain"][0] / t[k][0], t["plain"][1] / t[k][1], diff)

    print("\nTargets:")
    checks = [
        ("HorBlock 7x7 order 3, 8x128x40x40", "fwd+bwd", 1.5),
        ("HorBlock GF order 3, 8x128x40x40", "fwd+bwd", 1.5),
        ("HorNet-T 7x7 backbone, 1x3x224x224", "inference", 1.3),
        ("HorNet-T 7x7 backbone, 1x3x224x224", "inference fused", 1.3),
    ]
    for name, label, target in checks:
        wall, cpu, _ = results[(name, label)]
        print(f"  {name}, {label}: {wall:.2f}x wall, {cpu:.2f}x CPU time, target {target}x: "
              f"{'met' if wall >= target else 'NOT met'} (wall){', met (CPU time)' if cpu >= target else ''}")
    worst = max(r[2] for r in results.values())
    print(f"  all outputs within 1e-4 of the plain form: {'yes' if worst <= 1e-4 else 'NO'} (largest difference {worst:.1e})")


if __name__ == "__main__":
    main()
