"""Run folders and devices: exp, exp2, ... made without races, one process per folder (a lock), what an earlier run
left there, whether a last.pt belongs to the run its folder holds, and whether this machine can run on a --device.

Shared by train.py, val.py, detect.py and export.py; nothing here imports training code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import yaml

from models.safe_yaml import YAMLTooLarge, load_yaml_file
from ultralytics.utils import LOGGER


class DeviceError(ValueError):
    """A --device this machine cannot run on ('0' without a GPU, a GPU index too high); the message names the flag."""


# Trainer args a resumed run may change (they do not change what it learns); it takes the rest from its checkpoint.
RESUME_ARGS = ("device", "workers", "cache", "plots", "save_period", "patience")


def check_device(device) -> None:
    """Raise DeviceError naming --device when this machine cannot run on it."""
    if device in (None, "", "cpu"):
        return
    if str(device).strip().lower() in {"mps", "mps:0"} and not torch.backends.mps.is_available():
        # the engine falls back to the CPU without a word here, while it refuses a missing CUDA device
        raise DeviceError(f"--device {device}: Apple's MPS is not available on this machine (torch "
                          f"{torch.__version__}; it needs macOS on Apple silicon): use --device cpu")
    from ultralytics.utils.torch_utils import select_device

    try:
        select_device(str(device), verbose=False)
    except ValueError as e:
        raise DeviceError(f"--device {device}: {str(e).splitlines()[0]}") from None


class RunDirError(ValueError):
    """A --project (or project/name) where no run folder can be made: a file, read-only, not permitted."""


def increment_run_dir(project, name: str = "exp", exist_ok: bool = False) -> Path:
    """YOLOv5's run folders: project/exp, exp2, exp3, ... made here so that two runs never share one.

    Raises RunDirError naming --project when the folder cannot be made there.
    """
    project = Path(project)
    try:
        project.mkdir(parents=True, exist_ok=True)
        path = project / name
        if exist_ok:
            path.mkdir(exist_ok=True)
            return path
        for n in range(1, 10000):
            path = project / (name if n == 1 else f"{name}{n}")
            try:
                path.mkdir()  # atomic: the run that creates the folder owns it
                return path
            except FileExistsError:
                continue
    except OSError as e:
        at = Path(e.filename) if e.filename else project
        if at.exists() and not at.is_dir():
            raise RunDirError(f"--project {project}: {at} is a file, not a folder") from None
        raise RunDirError(f"--project {project}: cannot make a run folder there ({e.strerror or e}: {at})") from None
    raise RunDirError(f"--project {project}: no free run folder for {name} (up to {name}9999 exist)")


class DiskFullError(OSError):
    """A checkpoint that does not fit on its disk; the message names the folder and the space it needs."""


class ResumeError(ValueError):
    """A --resume that cannot go on: the run finished, or another process is still training it."""


def training_state(ckpt: dict) -> str:
    """Where the run a last.pt belongs to stands: 'finished', 'final validation' (every epoch trained, the final
    validation not done) or 'training'."""
    trained = ckpt.get("optimizer") is None or ckpt.get("epoch", -1) + 1 >= (ckpt.get("train_args") or {}).get("epochs", 0)
    if not trained:
        return "training"
    return "final validation" if ckpt.get("final_val") == "pending" or ckpt.get("optimizer") is not None else "finished"


def lock_run(save_dir):
    """Hold an exclusive lock on `save_dir/.lock` while this process lives (the OS drops it however we die).

    Returns the open lock file (keep it), or None where file locks do not exist (Windows). Raises ResumeError
    naming the process that holds the lock: two trainings in one folder would interleave their epochs.
    """
    try:
        import fcntl
    except ImportError:
        return None
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    f = open(Path(save_dir) / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise ResumeError(f"{save_dir} is still training in process {pid}: wait for it to finish or stop it (kill {pid}) first") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def run_results(path) -> list[str]:
    """What an earlier run left in the folder `path` (results.csv, weights, predictions, labels), relative names."""
    path = Path(path)
    found = [p for pattern in ("results.csv", "predictions.json", "weights/*.pt", "labels/*.txt") for p in sorted(path.glob(pattern))]
    return [str(p.relative_to(path)) for p in found]


def warn_overwrite(path) -> None:
    """One line naming what --exist-ok is about to overwrite in an earlier run's folder."""
    found = run_results(path)
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        LOGGER.warning(f"--exist-ok: {path} holds an earlier run; its {shown} will be overwritten")


def discard_unused_run_dir(path) -> bool:
    """Remove a run folder this process made when the run stopped before writing any result into it."""
    path = Path(path)
    if not path.is_dir() or run_results(path):
        return False
    shutil.rmtree(path, ignore_errors=True)
    LOGGER.info(f"removed {path}: the run stopped before it saved any result")
    return True


def keep_epochs(csv, last_epoch: int) -> int:
    """Drop the rows of results.csv after `last_epoch` (1-based) and any torn row; returns how many were dropped.

    The engine writes an epoch's row before its last.pt, so a run killed between the two has a row that
    last.pt does not hold, and resuming would write that epoch again. With `last_epoch` 0 (no checkpoint)
    the file goes: the engine writes a new header with the first row.
    """
    csv = Path(csv)
    if not csv.is_file():
        return 0
    header, *rows = csv.read_text(encoding="utf-8").splitlines() or [""]

    def held(row: str) -> bool:
        try:
            return row.count(",") == header.count(",") and float(row.split(",")[0]) <= last_epoch
        except ValueError:
            return False

    keep = [r for r in rows if held(r)]
    if not keep and last_epoch < 1:
        csv.unlink()
    elif len(keep) < len(rows):
        tmp = csv.with_name(csv.name + ".tmp")
        tmp.write_text("\n".join([header, *keep]) + "\n", encoding="utf-8")
        os.replace(tmp, csv)
    return len(rows) - len(keep)


def other_run(last, ckpt: dict) -> str | None:
    """Why resuming `last` would mix two runs in its folder, or None when the folder holds the checkpoint's own run.

    The folder's args.yaml (written when its run started) must carry the checkpoint's run id; for checkpoints from
    before run ids, the same start folder, and its results.csv the checkpoint's metric columns. A run folder that
    was moved or renamed as a whole passes.
    """
    last = Path(last)
    run_dir = last.resolve().parent.parent
    args = ckpt.get("train_args") or {}
    try:
        here = load_yaml_file(run_dir / "args.yaml") if (run_dir / "args.yaml").is_file() else None
    except (OSError, yaml.YAMLError, UnicodeDecodeError, YAMLTooLarge):
        here = None
    here = here if isinstance(here, dict) else None
    csv = run_dir / "results.csv"
    header = csv.read_text(encoding="utf-8").splitlines()[:1] if csv.is_file() else []
    columns = {c.strip() for c in header[0].split(",")} if header else set()
    wanted = [k for k in (ckpt.get("train_metrics") or {}) if k != "fitness"]
    by_id = here is not None and bool(args.get("run_id")) and bool(here.get("run_id"))
    if by_id:
        same = args["run_id"] == here["run_id"]
    else:
        same = here is None or str(args.get("save_dir")) == str(here.get("save_dir"))
    missing = [] if by_id else [k for k in wanted if columns and k not in columns]  # the ids decide where both have one
    if same and not missing:
        return None
    theirs = f"{(ckpt.get('model_yaml') or {}).get('yaml_file', '?')}, started in {args.get('save_dir', '?')}"
    ours = f"{here.get('model', '?')}, started in {here.get('save_dir', '?')}" if here else "another model"
    why = f"results.csv has no {missing[0]} column" if missing else f"args.yaml is another run's ({ours})"
    return (f"--resume {last}: this last.pt is from another run ({theirs}) than the one {run_dir} holds ({why}): resuming "
            f"would train its model there and append to that results.csv; resume it from a run folder of its own, or "
            f"train from its weights: python train.py --weights {last}")
