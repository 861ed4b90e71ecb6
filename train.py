"""Train a HorNet-YOLOv5 detector on a dataset, with YOLOv5's flags, on the ultralytics engine.

    python train.py                                             # yolov5s-hornet on the embedded shapes set
    python train.py --cfg cfg/yolov5n-hornet.yaml --img 160 --epochs 15
    python train.py --cfg cfg/yolov5s-hornet.yaml --hyp data/hyps/hyp.hornet.yaml --data my.yaml
    python train.py --weights runs/train/exp/weights/best.pt   # fine-tune from one of our checkpoints
    python train.py --weights yolov5s.pt --cfg cfg/yolov5s-hornet.yaml  # what fits of YOLOv5's weights, rows aligned
    python train.py --resume                                    # continue the newest run under runs/train
    python train.py --resume runs/train/exp3/weights/last.pt

In: a model YAML (--cfg) and/or weights, a dataset YAML (--data), a YOLOv5 hyp file (--hyp). Out: a run folder
runs/train/exp, exp2, ... with results.csv, plots and weights/last.pt, best.pt (weights_only loadable).
Python: `import train; train.run(cfg=..., data=..., epochs=1)` returns the trainer.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

from models.yolo import CheckpointError, ModelConfigError  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402
from utils.data import DataConfigError, load_data_config  # noqa: E402
from utils.hyp import RECIPES, YOLOV5_HYP, HypError, load_hyp, model_family  # noqa: E402
from utils.runs import RESUME_ARGS, DeviceError, DiskFullError, ResumeError, RunDirError, check_device, discard_unused_run_dir, increment_run_dir  # noqa: E402
from utils.trainer import HorNetTrainer  # noqa: E402

DEFAULT_CFG = "cfg/yolov5s-hornet.yaml"
# The flags of utils.runs.RESUME_ARGS (a resumed run may change them), and with the two that say what to resume
CHANGEABLE_ON_RESUME = [{"plots": "noplots"}.get(a, a) for a in RESUME_ARGS]
RESUME_FLAGS = {"resume", "project", *CHANGEABLE_ON_RESUME}


class FlagError(ValueError):
    """A command-line value that cannot train (--epochs 0); the message names the flag."""


def parse_opt(argv=None) -> argparse.Namespace:
    """YOLOv5's train.py flags (plus --albumentations)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=str, default="", help="initial weights: a checkpoint of ours, YOLOv5's, YOLOAir's or ultralytics', or official HorNet ImageNet weights")
    p.add_argument("--cfg", type=str, default=None, help=f"model YAML (default {DEFAULT_CFG}, or the model of --weights)")
    p.add_argument("--data", type=str, default="data/shapes.yaml", help="dataset YAML")
    p.add_argument("--hyp", type=str, default=None, help="hyperparameters YAML (default: hyp.hornet.yaml for models with HorNet layers, else hyp.scratch-adamw.yaml)")
    p.add_argument("--epochs", type=int, default=100, help="total training epochs")
    p.add_argument("--batch-size", type=int, default=16, help="total batch size for all GPUs")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train, val image size (pixels)")
    p.add_argument("--rect", action="store_true", help="rectangular training")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the newest run, or the given last.pt")
    p.add_argument("--nosave", action="store_true", help="only save the final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate the final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help="image --cache ram/disk")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--multi-scale", action="store_true", help="vary img-size +/- 50%%")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default=None, help="optimizer (default: the hyp's, else SGD)")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers (per RANK in DDP mode)")
    p.add_argument("--project", default=str(ROOT / "runs/train"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing epsilon")
    p.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, default=[0], help="freeze the first N rows (--freeze 10), or rows (--freeze 0 1 2)")
    p.add_argument("--save-period", type=int, default=-1, help="save a checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    p.add_argument("--albumentations", type=str, default="", help="albumentations pipeline YAML (albumentations' own format)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm over the GPUs of a DDP run")
    p.add_argument("--evolve", type=int, nargs="?", const=300, default=None, help="evolve hyperparameters for x generations (runs/evolve)")
    p.add_argument("--verbose", action="store_true", help="list every tensor --weights transferred, or why not")
    return p.parse_args(argv)


def in_repo(path: str | None, folder: str = "") -> str | None:
    """A relative path that does not exist from the working directory but does from the repo root, or for a bare
    name in `folder` of the repo (data/hyps/ for --hyp, as YOLOv5 looks hyp files up): the latter."""
    if path and not Path(path).exists() and not Path(path).is_absolute():
        for candidate in (ROOT / path, *([ROOT / folder / path] if folder and len(Path(path).parts) == 1 else [])):
            if candidate.exists():
                return str(candidate)
    return path


def model_of(opt: argparse.Namespace) -> tuple[str, str]:
    """The model to build (--cfg, else the model of a checkpoint of ours in --weights, else the default YAML) and its
    family ('hornet' or 'yolov5', which picks the recipe), from one read of each file."""
    from models.checkpoints import read_weights
    from models.yolo import find_model_yaml
    from utils.export import runnable

    if opt.weights:
        fmt, _ = runnable(opt.weights)
        if fmt != "checkpoint":
            raise CheckpointError(f"--weights {opt.weights}: an exported model ({fmt}) cannot seed training: give a .pt "
                                  "checkpoint (ours, YOLOv5's, YOLOAir's, ultralytics', or official HorNet ImageNet weights)")
        weights = read_weights(opt.weights)  # refuses, in one line, a file that would run code
        if opt.cfg is None and weights.model_yaml is None:
            hint = " (official HorNet weights: a backbone for cfg/hornet/*.yaml)" if weights.source == "official HorNet" else ""
            raise CheckpointError(f"--weights {opt.weights}: holds weights but no model{hint}: give the model to put them in with --cfg")
        if opt.cfg is None:
            return opt.weights, model_family(weights)  # YOLOv5: --weights without --cfg trains that checkpoint's model

    model = find_model_yaml(opt.cfg or DEFAULT_CFG)  # also cfg/NAME and the ultralytics package's models (yolo11n.yaml)
    if model is None:
        raise FileNotFoundError(f"--cfg: model YAML not found: {opt.cfg} (looked in {Path.cwd()}, {ROOT}, cfg/ and the ultralytics package's models)")
    return str(model), model_family(model)


def ignored_by_resume(opt: argparse.Namespace) -> list[str]:
    """The flags given with --resume that it will not use, by their long names (--epochs, --imgsz, ...)."""
    defaults = vars(parse_opt([]))
    return [f"--{k.replace('_', '-')}" for k, v in vars(opt).items() if k not in RESUME_FLAGS and v != defaults.get(k)]


def run_args(opt: argparse.Namespace) -> dict:
    """The trainer args of utils.runs.RESUME_ARGS from the flags: how a run runs, not what it learns."""
    return {"device": opt.device or None, "workers": opt.workers, "cache": opt.cache or False, "plots": not opt.noplots,
            "save_period": opt.save_period, "patience": opt.patience}


def overrides_from(opt: argparse.Namespace, hyp_overrides: dict | None = None) -> dict:
    """The trainer's args from the command line flags and the hyp file (YOLOv5 names -> ultralytics names); the
    checked `hyp_overrides` (the Python API's lr0=..., mosaic=...) go over the hyp file's values."""
    ignored = ignored_by_resume(opt) if opt.resume else []
    # The defaults (data/shapes.yaml, data/hyps/..., cfg/...) work from any working directory, as in YOLOv5.
    opt.cfg, opt.data, opt.albumentations = map(in_repo, (opt.cfg, opt.data, opt.albumentations))
    opt.hyp = in_repo(opt.hyp, "data/hyps")
    project = str(Path(opt.project).resolve())  # absolute: the engine puts relative ones under its settings dir
    check_device(opt.device)
    if not opt.resume:
        for flag, value in (("--epochs", opt.epochs), ("--batch-size", opt.batch_size), ("--imgsz", opt.imgsz)):
            if value < 1 and not (flag == "--batch-size" and value == -1):  # -1: the engine's auto batch size
                raise FlagError(f"{flag} {value}: must be 1 or more")
    if opt.resume:
        if ignored:
            may = ", ".join(f"--{f.replace('_', '-')}" for f in CHANGEABLE_ON_RESUME)
            LOGGER.warning(f"--resume: ignoring {' '.join(ignored)}: a resumed run keeps the arguments it started with "
                           f"(only {may} may change)")
        defaults = run_args(parse_opt([]))
        given = {k: v for k, v in run_args(opt).items() if k != "device" and v != defaults[k]}
        return {"resume": opt.resume, "project": project, "device": opt.device or None, **given}
    model, family = model_of(opt)
    if opt.hyp is None:
        opt.hyp = str(RECIPES[family])
        why = "the HorNet recipe: the model has HorNet layers" if family == "hornet" else "the YOLOv5 recipe: no HorNet layers"
        LOGGER.info(f"hyp: {Path(opt.hyp).relative_to(ROOT)} ({why}; --hyp overrides)")
    hyp = {**load_hyp(YOLOV5_HYP), **load_hyp(opt.hyp), **(hyp_overrides or {})}  # left out: YOLOv5's values
    optimizer = opt.optimizer or hyp.pop("optimizer", "SGD")
    hyp.pop("optimizer", None)
    # A YAML that is no dataset's, or whose images are missing, fails here, before a run folder is made (the
    # embedded set is generated here when missing; a package YAML such as coco128.yaml is found and named)
    opt.data = load_data_config(opt.data)["yaml_file"]
    # exp, exp2, ... as YOLOv5 names them; processes that torchrun started must all agree: project/name as given.
    # With --exist-ok the trainer says what it overwrites once it holds the folder's lock.
    torchrun = os.environ.get("LOCAL_RANK") is not None
    save_dir = increment_run_dir(project, opt.name, opt.exist_ok or torchrun)
    freeze = opt.freeze[0] if len(opt.freeze) == 1 else list(opt.freeze)
    overrides = {
        "task": "detect",
        "mode": "train",
        "model": model,
        "data": opt.data,
        "epochs": opt.epochs,
        "batch": opt.batch_size,
        "imgsz": opt.imgsz,
        "rect": opt.rect,
        "save": not opt.nosave,
        "val": not opt.noval,
        "multi_scale": 0.5 if opt.multi_scale else 0.0,
        "single_cls": opt.single_cls,
        "optimizer": optimizer,
        **run_args(opt),
        "project": project,
        "name": save_dir.name,
        "save_dir": str(save_dir),
        "exist_ok": opt.exist_ok,
        "cos_lr": opt.cos_lr,
        "freeze": freeze or None,
        "seed": opt.seed,
        "close_mosaic": 0,  # YOLOv5 keeps mosaic to the end; a hyp may set close_mosaic
        "pretrained": False,
        **hyp,
        "autoanchor": not opt.noautoanchor,
        "weights": opt.weights if model != opt.weights else "",
        "verbose_transfer": opt.verbose,
        "sync_bn": opt.sync_bn,
        "hyp": str(opt.hyp),
    }
    if opt.label_smoothing:
        overrides["label_smoothing"] = opt.label_smoothing
    if opt.albumentations:
        from utils.augment import load_albumentations

        overrides["augmentations"] = load_albumentations(opt.albumentations)
        overrides["albumentations"] = str(opt.albumentations)
    return overrides


CTRL_C = []  # the signals that stopped training (the command line's SIGINT and SIGTERM handler records them)


def on_ctrl_c(signum, frame):
    """SIGINT (Ctrl-C) and SIGTERM (kill, a job scheduler): KeyboardInterrupt now, and again at the next batch
    (`raise_after_ctrl_c`), because Python ignores an exception raised while an import releases its module lock, and
    a signal landing there would be lost. Either way the run stops as Ctrl-C stops it: said in one line, a run folder
    with nothing in it removed."""
    CTRL_C.append(signum)
    raise KeyboardInterrupt


def raise_after_ctrl_c(trainer) -> None:
    if CTRL_C:
        raise KeyboardInterrupt


def main(opt: argparse.Namespace, hyp: dict | None = None, callbacks: dict | None = None) -> HorNetTrainer:
    """Train; a run folder made here is removed again when the run stops before saving anything.

    `hyp`: hyperparameters over the hyp file's (checked as a hyp file is); `callbacks`: the engine's callback dict
    (the Python API's). On Ctrl-C raises KeyboardInterrupt whose message says where training stopped and what
    --resume will do.
    """
    if opt.evolve is not None:
        return evolve_hyp(opt)
    overrides = overrides_from(opt, hyp)
    trainer = None
    try:
        trainer = HorNetTrainer(overrides=overrides, _callbacks=callbacks)
        trainer.add_callback("on_train_batch_start", raise_after_ctrl_c)
        trainer.train()
    except BaseException as e:
        made_here = not opt.resume and not opt.exist_ok and "save_dir" in overrides
        removed = overrides["save_dir"] if made_here and discard_unused_run_dir(overrides["save_dir"]) else None
        if isinstance(e, KeyboardInterrupt):
            raise KeyboardInterrupt(stop_note(trainer, removed)) from None
        raise
    return trainer


def evolve_hyp(opt: argparse.Namespace):
    """--evolve N: N trainings whose hyperparameters evolve from the recipe's (or --hyp's); see utils/evolve.py."""
    from utils.evolve import evolve

    if opt.resume:
        raise ResumeError("--evolve and --resume: an evolution starts new trainings; resume one generation by itself")
    if opt.evolve < 1:
        raise HypError(f"--evolve {opt.evolve}: the number of generations must be at least 1")
    hyp = in_repo(opt.hyp, "data/hyps") or str(RECIPES[model_of(opt)[1]])
    return evolve(opt, opt.evolve, {**load_hyp(YOLOV5_HYP), **load_hyp(hyp)}, main)


def stop_note(trainer: HorNetTrainer | None, removed: str | None) -> str:
    """Where a Ctrl-C stopped training, and what --resume will do."""
    gone = f" ({removed} removed)" if removed else ""
    by = "SIGTERM" if CTRL_C and CTRL_C[-1] == signal.SIGTERM else "Ctrl-C"
    if trainer is None or not hasattr(trainer, "epoch"):
        return f"stopped ({by}) before training started: nothing to resume{gone}"
    where = f"stopped ({by}) in epoch {trainer.epoch + 1}/{trainer.epochs}"
    if trainer.last.is_file():
        from models.yolo import read_checkpoint

        ckpt = read_checkpoint(trainer.last)
        if ckpt.get("final_val") == "pending":
            return f"stopped ({by}) in the final validation; python train.py --resume {trainer.last} runs it"
        saved = ckpt.get("epoch", -1) + 1
        return f"{where}; python train.py --resume {trainer.last} goes on from epoch {saved + 1}"
    return f"{where}, before the first checkpoint (written after each epoch): nothing to resume{gone}"


def run(**kwargs) -> HorNetTrainer:
    """`run(cfg='cfg/yolov5n.yaml', data=..., epochs=1, imgsz=64)`: flags as keyword arguments (dashes -> underscores)."""
    opt = parse_opt([])
    for k, v in kwargs.items():
        if not hasattr(opt, k):
            raise TypeError(f"train.run(): unknown option {k!r}")
        setattr(opt, k, v)
    return main(opt)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, on_ctrl_c)
    signal.signal(signal.SIGTERM, on_ctrl_c)
    try:
        main(parse_opt())
    except KeyboardInterrupt as e:
        print(f"train.py: {e}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM if CTRL_C and CTRL_C[-1] == signal.SIGTERM else 130)
    except (FileNotFoundError, HypError, ModelConfigError, CheckpointError, DeviceError, ResumeError, FlagError,
            DataConfigError, RunDirError, DiskFullError) as e:
        sys.exit(f"error: {e}")
