"""Accuracy table: model YAMLs trained from scratch on one data YAML at one budget over several seeds.

    python benchmarks/bench_accuracy.py --data ../shared/datasets/raccoon/data.yaml --scale s --epochs 40 --img 160 --seeds 0 1
    python benchmarks/bench_accuracy.py --data ../shared/datasets/bccd/data.yaml --scale n --epochs 100 --img 320
    python benchmarks/bench_accuracy.py --data my.yaml --models yolov5s yolov5s-hornet --set lr0=0.002 --tag lr2e-3
    python benchmarks/bench_accuracy.py --data my.yaml --models benchmarks/ablations/yolov5n-hornet-ln.yaml
    python benchmarks/bench_accuracy.py --data my.yaml --scale s --report       # print the table, train nothing
    python benchmarks/bench_accuracy.py --data my.yaml --scale n --epochs 20 --img 160 --exports   # also bf16 / INT8 mAP
    python benchmarks/bench_accuracy.py --scale n --summary raccoon/e100-i320 neu-det/e20-i160   # the README's table

Each run is `train.py` in its own process with the recipe train.py picks for the model (or `--hyp`), plus any
`--set key=value` hyp overrides (written to the run folder as hyp.yaml). Runs live in
`--project/<data>/e<epochs>-i<img>/<model>[-<tag>]/seed<k>`, and each finished run's numbers in a small JSON file
under `--results` (the same sub-path, kept in git: benchmarks/results/accuracy/). A run with a result is skipped,
an interrupted one is resumed from its last.pt, so the benchmark can be stopped and started again across sessions.
`--jobs 2` trains two runs at once with one thread each (more runs per hour on 2 cores, s/epoch no longer
comparable with single runs).

The table: mean and min-max over seeds of the mAP50 and mAP50-95 of best.pt (the metrics of its validation
epoch, the same weights `val.py` would score), the ratio of the mean mAP50-95 to the plain YOLOv5 model of the
same scale in the same table, and s/epoch (training + validation).

`--summary SET/BUDGET ...`: one table over several sets, each at its own budget (folders under --results), for
yolov5<scale>, its plain YOLOv5s of equal cost and the styles: mean mAP50-95 with min-max and the number of seeds
(every stored seed), parameters and GFLOPs at 640 (nc=80) and CPU ms at 640 (fused, batch 1, the models
interleaved call by call); then each style's ratio to yolov5<scale> and to the plain YOLOv5 nearest in parameters;
and, for runs scored with `--exports`, how much mAP50-95 the bf16 and INT8 OpenVINO exports lose against the .pt.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_env import ROOT  # noqa: E402  (first: see bench_env)

import yaml  # noqa: E402

STYLES = ("", "-gnconv", "-horblock", "-hornet", "-hornet-gf", "-horfpn")  # plain YOLOv5 first: the baseline
# Plain YOLOv5 of the styles' cost, where the scale has them: deeper (styles 1-2) and wider (styles 3-4) yolov5n
EQUAL_COST = {"n": ("yolov5n-d45", "yolov5n-w29")}
ABLATIONS = ROOT / "benchmarks" / "ablations"  # architecture variants of cfg/ models: --models benchmarks/ablations/X.yaml


def parse_opt(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="dataset YAML")
    p.add_argument("--models", nargs="+", default=None, help="model YAML names or paths (default: every style at --scale)")
    p.add_argument("--scale", default="s", help="with no --models: yolov5<scale>, its YOLOv5s of equal cost and its five HorNet styles")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--img", type=int, default=160)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--hyp", default=None, help="hyp file for every model (default: the recipe train.py picks per model)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="hyp overrides, e.g. lr0=0.002 layer_scale=1")
    p.add_argument("--tag", default="", help="name of this variant in the run folders and the table (needed with --set/--hyp)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (threads are split between them)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all")
    p.add_argument("--project", default=str(ROOT / "runs/accuracy"), help="run folders (weights, logs)")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/accuracy"), help="one JSON per finished run")
    p.add_argument("--report", action="store_true", help="only print the table of the finished runs")
    p.add_argument("--all", action="store_true", help="with --report: every model and variant stored for this data and budget")
    p.add_argument("--exports", action="store_true", help="also score each run's best.pt exported (ONNX, OpenVINO f32, bf16, INT8)")
    p.add_argument("--summary", nargs="+", metavar="SET/BUDGET", help="print one table over these stored sets, e.g. raccoon/e100-i320")
    p.add_argument("--runs", type=int, default=21, help="with --summary: timed calls per model for CPU ms (0: not timed)")
    p.add_argument("--passive", action="store_true", help="OpenMP threads sleep while waiting (CPU ms on a shared machine)")
    return p.parse_args(argv)


def model_path(name: str) -> Path:
    """cfg/NAME.yaml, a path, or one of the ultralytics package's models (yolo11s); a path that does not exist if none."""
    from models.yolo import find_model_yaml

    return find_model_yaml(name) or ROOT / "cfg" / f"{name}.yaml"


def model_exists(name: str) -> bool:
    from models.yolo import find_model_yaml

    return find_model_yaml(name) is not None


def data_name(data: str) -> str:
    path = Path(data)
    return path.parent.name if path.stem == "data" else path.stem


def overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"error: --set {pair}: expected KEY=VALUE")
        try:
            out[key] = float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            out[key] = yaml.safe_load(value)  # a word: optimizer=SGD
    return out


def run_key(opt, model: str, seed: int, tag: str | None = None) -> Path:
    """<data>/e<epochs>-i<img>/<model>[-<tag>]/seed<k>: the run folder under --project, its result under --results."""
    tag = opt.tag if tag is None else tag
    variant = Path(model).stem + (f"-{tag}" if tag else "")
    return Path(data_name(opt.data)) / f"e{opt.epochs}-i{opt.img}" / variant / f"seed{seed}"


def result_file(opt, model: str, seed: int, tag: str | None = None) -> Path:
    return Path(opt.results) / run_key(opt, model, seed, tag).with_suffix(".json")


def train_one(opt, model: str, seed: int, threads: int) -> str:
    """Train (or resume) one run unless it has a result.json, then (--exports) score its exports; a line for the log."""
    from models.yolo import read_checkpoint
    from utils.hyp import recipe_for
    from utils.runs import training_state

    folder, result = Path(opt.project) / run_key(opt, model, seed), result_file(opt, model, seed)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "YOLO_OFFLINE": "1"}
    if result.is_file():
        line = f"done before: {result}"
    else:
        cfg = model_path(model)
        last = folder / "weights" / "last.pt"
        if last.is_file() and training_state(read_checkpoint(last)) == "finished":
            args = None  # stopped after training ended, before its result was written
        elif last.is_file():
            args = ["--resume", str(last)]
        else:
            base = Path(opt.hyp) if opt.hyp else recipe_for(cfg)
            hyp = {**yaml.safe_load(base.read_text()), **overrides(opt.set)}
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hyp.yaml").write_text(f"# {base} with --set {' '.join(opt.set) or '(none)'}\n" + yaml.safe_dump(hyp, sort_keys=False))
            args = ["--cfg", str(cfg), "--data", opt.data, "--hyp", str(folder / "hyp.yaml"), "--epochs", str(opt.epochs),
                    "--img", str(opt.img), "--batch-size", str(opt.batch_size), "--seed", str(seed), "--workers", "2",
                    "--project", str(folder.parent), "--name", folder.name, "--exist-ok", "--noplots"]
        if args is not None:
            with open(folder / "train.log", "a") as log:
                rc = subprocess.call([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if rc:
                return f"FAILED (exit {rc}), see {folder / 'train.log'}"
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_text(json.dumps({**read_result(folder), "hyp": yaml.safe_load((folder / "hyp.yaml").read_text())}, indent=1))
        line = f"trained: {folder}"
    if opt.exports:
        line += "; " + score_exports(opt, folder, result, env)
    return line


def score_exports(opt, folder: Path, result: Path, env: dict) -> str:
    """val mAP50-95 of the run's best.pt and of its ONNX / OpenVINO f32 / reduced / INT8 exports, into its result JSON."""
    stored = json.loads(result.read_text())
    best = folder / "weights" / "best.pt"
    if "exports" in stored:
        return "exports scored before"
    if not best.is_file():
        return f"exports not scored: {best} is not on this machine"
    out = folder / "exports.json"
    with open(folder / "exports.log", "w") as log:
        rc = subprocess.call([sys.executable, str(ROOT / "benchmarks" / "bench_runtimes.py"), "--weights", str(best), "--data",
                              opt.data, "--img", str(opt.img), "--json", str(out)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc:
        return f"exports FAILED (exit {rc}), see {folder / 'exports.log'}"
    stored["exports"] = json.loads(out.read_text())[str(best)]
    result.write_text(json.dumps(stored, indent=1))
    return "exports scored"


def read_result(folder: Path) -> dict:
    """mAP50, mAP50-95 of best.pt (its validation epoch) and s/epoch of a finished run folder."""
    from models.yolo import read_checkpoint

    metrics = read_checkpoint(folder / "weights" / "best.pt").get("train_metrics") or {}
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    rows = [{k.strip(): v for k, v in r.items()} for r in rows]
    return {
        "mAP50": float(metrics["metrics/mAP50(B)"]),
        "mAP50-95": float(metrics["metrics/mAP50-95(B)"]),
        "s_per_epoch": float(rows[-1]["time"]) / len(rows),
        "epochs": len(rows),
    }


def results(opt, model: str, tag: str | None = None) -> list[dict]:
    return [json.loads(p.read_text()) for s in opt.seeds if (p := result_file(opt, model, s, tag)).is_file()]


def mean(rs: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in rs)


def stored_variants(opt) -> list[tuple[str, str]]:
    """(model, tag) of every variant with results for this data and budget, plain YOLOv5 first."""
    budget = Path(opt.results) / data_name(opt.data) / f"e{opt.epochs}-i{opt.img}"
    names = sorted((p.name for p in budget.iterdir() if p.is_dir()), key=lambda n: (n.count("-") > 0, n)) if budget.is_dir() else []
    variants = []
    for name in names:  # split 'yolov5s-hornet-lr1e-3' into a model YAML that exists and the tag after it
        parts = name.split("-")
        cut = max((i for i in range(1, len(parts) + 1) if model_exists("-".join(parts[:i]))), default=len(parts))
        variants.append(("-".join(parts[:cut]), "-".join(parts[cut:])))
    return variants


def table(opt, models: list[str]) -> str:
    """Markdown: one row per model, mean and min-max over the finished seeds; ratios to the untagged YOLOv5."""
    if opt.report and opt.all:
        return variants_table(opt)
    lines = [f"{data_name(opt.data)}, {opt.epochs} epochs at {opt.img} px, seeds {' '.join(map(str, opt.seeds))}"
             + (f", variant '{opt.tag}' ({' '.join(opt.set) or opt.hyp})" if opt.tag else ""),
             "", "| model | runs | mAP50 mean (min-max) | mAP50-95 mean (min-max) | vs YOLOv5 | s/epoch |", "|---|---:|---:|---:|---:|---:|"]
    for model in models:
        name, rs = Path(model).stem, results(opt, model)
        if not rs:
            lines.append(f"| {name} | 0 | | | | |")
            continue
        base = results(opt, name.split("-")[0], tag="")  # yolov5s-hornet -> yolov5s, the plain recipe
        ratio = f"{mean(rs, 'mAP50-95') / mean(base, 'mAP50-95'):.2f}x" if base and mean(base, "mAP50-95") > 0 else "-"
        span = lambda k: f"{mean(rs, k):.3f} ({min(r[k] for r in rs):.3f}-{max(r[k] for r in rs):.3f})"  # noqa: E731
        lines.append(f"| {name} | {len(rs)} | {span('mAP50')} | {span('mAP50-95')} | {ratio} | {mean(rs, 's_per_epoch'):.1f} |")
    return "\n".join(lines)


def variants_table(opt) -> str:
    """Markdown: every stored model and variant (tag and its hyp overrides against the family recipe)."""
    from utils.hyp import recipe_for
    from utils.hyp import EXTRA_DEFAULTS

    lines = [f"{data_name(opt.data)}, {opt.epochs} epochs at {opt.img} px, seeds {' '.join(map(str, opt.seeds))}", "",
             "| model | variant | changes | runs | mAP50 mean (min-max) | mAP50-95 mean (min-max) | vs YOLOv5 | s/epoch |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for model, tag in stored_variants(opt):
        rs = results(opt, model, tag)
        if not rs:
            continue
        recipe = {**EXTRA_DEFAULTS, **yaml.safe_load(recipe_for(model_path(model)).read_text())}  # keys it leaves out: defaults
        changes = [f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                   for k, v in rs[0]["hyp"].items() if k in recipe and recipe[k] != v]
        ablation = ABLATIONS / f"{model}-{tag}.yaml"  # an architecture variant: its YAML is the change
        if tag and ablation.is_file():
            changes.insert(0, str(ablation.relative_to(ROOT)))
        changes = ", ".join(changes) or "-"
        base = results(opt, model.split("-")[0], tag="")
        ratio = f"{mean(rs, 'mAP50-95') / mean(base, 'mAP50-95'):.2f}x" if base and mean(base, "mAP50-95") > 0 else "-"
        span = lambda k: f"{mean(rs, k):.3f} ({min(r[k] for r in rs):.3f}-{max(r[k] for r in rs):.3f})"  # noqa: E731
        lines.append(f"| {model} | {tag or '(recipe)'} | {changes} | {len(rs)} | {span('mAP50')} | {span('mAP50-95')} | {ratio} | {mean(rs, 's_per_epoch'):.1f} |")
    return "\n".join(lines)


def default_models(scale: str) -> list[str]:
    """yolov5<scale>, its plain YOLOv5s of equal cost, then the styles."""
    return [f"yolov5{scale}", *EQUAL_COST.get(scale, ()), *(f"yolov5{scale}{style}" for style in STYLES[1:])]


def stored(folder: Path) -> list[dict]:
    """Every finished seed of one model at one budget (the seed<k>.json files in its results folder)."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("seed*.json"))]


def spread(rs: list[dict], key: str = "mAP50-95") -> str:
    if not rs:
        return "-"
    return f"{mean(rs, key):.3f} ({min(r[key] for r in rs):.3f}-{max(r[key] for r in rs):.3f}, {len(rs)})"


def cost(models: list[str], runs: int, imgsz: int = 640) -> dict[str, tuple[int, float, float]]:
    """{model: (parameters, GFLOPs, CPU ms)} at imgsz, nc=80; ms is the median of `runs` calls, models interleaved
    (None with runs 0: on a machine busy with other work, times say nothing)."""
    import torch
    from ultralytics.utils.torch_utils import get_flops

    from models.yolo import Model

    built = {m: Model(model_path(m), verbose=False) for m in models}
    out = {m: (sum(p.numel() for p in net.parameters()), get_flops(net, imgsz)) for m, net in built.items()}
    fused = {m: net.eval().fuse(verbose=False) for m, net in built.items()}
    x, times = torch.rand(1, 3, imgsz, imgsz), {m: [] for m in models}
    with torch.no_grad():
        for m in models:
            fused[m](x)  # warm-up
        for _ in range(runs):
            for m in models:
                t = time.perf_counter()
                fused[m](x)
                times[m].append(time.perf_counter() - t)
    return {m: (*out[m], statistics.median(times[m]) * 1e3 if runs else None) for m in models}


def summary(opt) -> str:
    """Markdown: mAP50-95 of every model of --scale on each --summary set and budget; cost; ratios of the styles."""
    import torch

    models = opt.models or default_models(opt.scale)
    twins = {t for ts in EQUAL_COST.values() for t in ts}
    base, plain = models[0], [m for m in models if m == models[0] or Path(m).stem in twins]
    cells = {(m, sb): stored(Path(opt.results) / sb / Path(m).stem) for m in models for sb in opt.summary}
    costs = cost(models, opt.runs)
    timed = (f"CPU ms at 640, batch 1, fused, median of {opt.runs} interleaved calls ({torch.get_num_threads()} threads)"
             if opt.runs else "CPU ms not measured (--runs 0)")
    lines = [f"mAP50-95 of best.pt: mean (min-max, seeds); parameters and GFLOPs at 640 (nc=80); {timed}", "",
             "| model | parameters | GFLOPs | CPU ms | " + " | ".join(opt.summary) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(opt.summary)]
    for m in models:
        n, gflops, ms = costs[m]
        lines.append(f"| {Path(m).stem} | {n / 1e6:.2f}M | {gflops:.1f} | {'-' if ms is None else f'{ms:.1f}'} | "
                     + " | ".join(spread(cells[m, sb]) for sb in opt.summary) + " |")

    def ratio(m, b, sb):
        rs, bs = cells[m, sb], cells[b, sb]
        return f"{mean(rs, 'mAP50-95') / mean(bs, 'mAP50-95'):.2f}x" if rs and bs and mean(bs, "mAP50-95") > 0 else "-"

    lines += ["", f"Each style's mean mAP50-95 against {Path(base).stem} / against the plain YOLOv5 nearest in parameters", "",
              "| model | equal cost | " + " | ".join(opt.summary) + " |", "|---|---|" + "---:|" * len(opt.summary)]
    for m in models:
        if m in plain:
            continue
        twin = min(plain, key=lambda b: abs(costs[b][0] - costs[m][0]))
        lines.append(f"| {Path(m).stem} | {Path(twin).stem} | " + " | ".join(f"{ratio(m, base, sb)} / {ratio(m, twin, sb)}" for sb in opt.summary) + " |")
    if any("exports" in r for rs in cells.values() for r in rs):
        lines += ["", "The exports' val mAP50-95 minus the .pt's (val.py at the training size, batch 1; mean over the seeds scored): "
                  "OpenVINO reduced precision (bf16 on CPUs that have it) / OpenVINO INT8", "",
                  "| model | " + " | ".join(opt.summary) + " |", "|---|" + "---:|" * len(opt.summary)]
        for m in models:
            lines.append(f"| {Path(m).stem} | " + " | ".join(export_drop(cells[m, sb]) for sb in opt.summary) + " |")
    return "\n".join(lines)


def export_drop(rs: list[dict]) -> str:
    """'+0.000 / -0.004 (2)': mean reduced-precision and INT8 mAP50-95 minus the .pt's over the runs that have exports."""
    rs = [r["exports"] for r in rs if "exports" in r]
    if not rs:
        return "-"
    drop = lambda k: round(statistics.mean(r[k] - r[".pt"] for r in rs), 3) + 0.0  # noqa: E731  (+ 0.0: no "-0.000")
    return f"{drop('OpenVINO reduced'):+.3f} / {drop('OpenVINO INT8'):+.3f} ({len(rs)})"


def main(opt: argparse.Namespace) -> None:
    if opt.summary:
        for sb in opt.summary:
            if not (Path(opt.results) / sb).is_dir():
                sys.exit(f"error: --summary {sb}: no stored runs in {Path(opt.results) / sb} (expected SET/e<epochs>-i<img>)")
        print(summary(opt))
        return
    if (opt.set or opt.hyp) and not opt.tag:
        sys.exit("error: --set/--hyp change the recipe: give the variant a name with --tag")
    if not opt.data:
        sys.exit("error: --data is required to train or report (or --summary SET/BUDGET to summarize stored runs)")
    if not Path(opt.data).is_file():
        sys.exit(f"error: --data: data YAML not found: {opt.data}")
    models = opt.models or default_models(opt.scale)
    for model in models:
        if not model_exists(model):
            sys.exit(f"error: --models: model YAML not found: {model_path(model)}")
    overrides(opt.set)  # check before anything trains
    if not opt.report:
        jobs = [(m, s) for s in opt.seeds for m in models]
        threads = max(opt.threads // opt.jobs, 1)
        with ThreadPoolExecutor(opt.jobs) as pool:
            for line in pool.map(lambda job: train_one(opt, *job, threads), jobs):
                print(line, flush=True)
    print(table(opt, models))


if __name__ == "__main__":
    main(parse_opt())
