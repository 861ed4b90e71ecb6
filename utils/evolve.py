"""Hyperparameter evolution, as YOLOv5's `train.py --evolve N`: N trainings, each with hyperparameters mutated from
the best ones so far, ranked by YOLOv5's fitness (0.1 mAP50 + 0.9 mAP50-95 of best.pt).

    python train.py --cfg cfg/yolov5n-hornet.yaml --data my.yaml --epochs 10 --evolve 30

Each generation is an ordinary run of train.py (its recipe, checks and messages) in `runs/evolve/exp/gen<i>`. The
folder also gets `evolve.csv` (one row per generation: fitness, metrics, then every evolved hyperparameter) and
`hyp_evolve.yaml`, the best generation's hyperparameters as a hyp file: `python train.py --hyp .../hyp_evolve.yaml`.

The mutation is YOLOv5's scheme: a parent drawn from the five fittest generations (weighted by fitness), then each
hyperparameter multiplied with probability 0.8 by a factor exp-normally spread around 1 (sigma 0.2, within 0.3-3),
then clipped to its range below. The engine's tuner runs the engine's own trainer in subprocesses, which would not
build this project's models, so the loop is here.
"""

from __future__ import annotations

import csv
from copy import copy
from pathlib import Path

import numpy as np
import yaml

# The hyperparameters evolved, with their ranges (YOLOv5's keys that this project's trainer reads)
SPACE = {
    "lr0": (1e-5, 1e-1), "lrf": (0.01, 1.0), "momentum": (0.6, 0.98), "weight_decay": (0.0, 0.1),
    "warmup_epochs": (0.0, 5.0), "warmup_momentum": (0.0, 0.95), "warmup_bias_lr": (0.0, 0.2),
    "box": (0.02, 0.2), "cls": (0.2, 4.0), "obj": (0.2, 4.0), "anchor_t": (2.0, 8.0),
    "hsv_h": (0.0, 0.1), "hsv_s": (0.0, 0.9), "hsv_v": (0.0, 0.9), "degrees": (0.0, 45.0), "translate": (0.0, 0.9),
    "scale": (0.0, 0.9), "shear": (0.0, 10.0), "perspective": (0.0, 0.001), "flipud": (0.0, 1.0), "fliplr": (0.0, 1.0),
    "mosaic": (0.0, 1.0), "mixup": (0.0, 1.0),
}
METRICS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")


def fitness(metrics: dict) -> float:
    """YOLOv5's: 0.1 x mAP50 + 0.9 x mAP50-95."""
    return 0.1 * float(metrics.get("metrics/mAP50(B)", 0.0)) + 0.9 * float(metrics.get("metrics/mAP50-95(B)", 0.0))


def mutate(history: list[tuple[float, dict]], rng: np.random.Generator, sigma: float = 0.2, p: float = 0.8) -> dict:
    """New hyperparameters from the fittest of `history` ((fitness, hyp) pairs), mutated and clipped to SPACE."""
    best = sorted(history, key=lambda h: -h[0])[:5]
    weights = np.array([f for f, _ in best]) - min(f for f, _ in best) + 1e-6
    parent = best[rng.choice(len(best), p=weights / weights.sum())][1]
    child = dict(parent)
    keys = [k for k in SPACE if k in parent]
    factors = np.ones(len(keys))
    while np.all(factors == 1):  # mutate at least one hyperparameter
        factors = np.where(rng.random(len(keys)) < p, rng.standard_normal(len(keys)) * rng.random() * sigma + 1, 1.0).clip(0.3, 3.0)
    for k, f in zip(keys, factors):
        low, high = SPACE[k]
        child[k] = float(np.clip(parent[k] * f, low, high))
    return child


def evolve(opt, generations: int, base_hyp: dict, train_main) -> Path:
    """Run `generations` trainings (`train_main(opt, hyp=...)`, train.py's main) into an evolve folder; returns it."""
    from ultralytics.utils import LOGGER

    from utils.runs import increment_run_dir

    root = Path(opt.project).resolve().parent / "evolve" if Path(opt.project).name == "train" else Path(opt.project).resolve()
    folder = increment_run_dir(root, opt.name, opt.exist_ok)
    table = folder / "evolve.csv"
    rng = np.random.default_rng(opt.seed)
    keys = [k for k in SPACE if k in base_hyp]
    history = []
    for g in range(generations):
        hyp = dict(base_hyp) if g == 0 else mutate(history, rng)
        run = copy(opt)
        run.evolve, run.project, run.name, run.exist_ok, run.noplots = None, str(folder), f"gen{g}", False, True
        trainer = train_main(run, hyp={k: hyp[k] for k in keys})
        metrics = dict(trainer.metrics or {})
        score = fitness(metrics)
        history.append((score, hyp))
        new = not table.exists()
        with open(table, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["generation", "fitness", *(m.split("/")[1][:-3] for m in METRICS), *keys])
            writer.writerow([g, f"{score:.5f}", *(f"{float(metrics.get(m, 0)):.5f}" for m in METRICS), *(f"{hyp[k]:.6g}" for k in keys)])
        LOGGER.info(f"Evolve: generation {g + 1}/{generations} fitness {score:.4f} ({trainer.save_dir})")
    best_score, best = max(history, key=lambda h: h[0])
    generation = [h[0] for h in history].index(best_score)
    text = yaml.safe_dump({k: best[k] for k in keys}, sort_keys=False)
    (folder / "hyp_evolve.yaml").write_text(f"# the fittest of {generations} generations (generation {generation}, fitness "
                                            f"{best_score:.5f}) of train.py --evolve; every generation: evolve.csv\n{text}")
    LOGGER.info(f"Evolve: best fitness {best_score:.4f} at generation {generation}; its hyperparameters: {folder / 'hyp_evolve.yaml'} "
                f"(python train.py --hyp {folder / 'hyp_evolve.yaml'})")
    return folder
