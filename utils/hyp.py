"""Hyperparameters: the keys a YOLOv5 hyp file may hold, our own keys with their defaults, hyp files read and
checked, and the recipe a model trains with when --hyp is not given.

In: hyp YAML files, dicts of overrides, model YAMLs or checkpoints. Out: checked dicts, or HypError naming the file
and key at fault.
"""

from __future__ import annotations

from pathlib import Path


from models.loss import LOSS_DEFAULTS, YOLOV5_HYP  # noqa: F401  (YOLOV5_HYP: the defaults every hyp starts from)
from models.safe_yaml import read_yaml, short

ROOT = Path(__file__).resolve().parents[1]
# The recipe train.py picks when --hyp is not given (measured per family: README, "Accuracy on real photos")
RECIPES = {"hornet": ROOT / "data/hyps/hyp.hornet.yaml", "yolov5": ROOT / "data/hyps/hyp.scratch-adamw.yaml"}

# YOLOv5 hyp keys that are ultralytics trainer args of the same name and meaning.
# Not `cls_pw`: YOLOv5's is a class-BCE positive weight, the engine's a class-frequency weight power.
ENGINE_HYP_KEYS = (
    "lr0 lrf momentum weight_decay warmup_epochs warmup_momentum warmup_bias_lr box cls dfl "
    "hsv_h hsv_s hsv_v degrees translate scale shear perspective flipud fliplr mosaic mixup copy_paste "
    "cutmix bgr close_mosaic nbs"
).split()

# Keys the ultralytics args do not have: YOLOv5's loss/anchor hyps and our own options, with defaults.
EXTRA_DEFAULTS = {
    **{k: LOSS_DEFAULTS[k] for k in ("obj", "obj_pw", "anchor_t", "fl_gamma", "label_smoothing")},  # the anchor loss's
    "drop_path": 0.0,  # stochastic depth over the HorBlocks
    "layer_scale": 1e-6,  # initial HorBlock layer scales (gamma1, gamma2); 1e-6 is the paper's
    "hornet_lr_scale": 1.0,  # the HorNet layers' learning rate as a fraction of lr0 (1.0: one rate for all)
    "ema_decay": 0.9999,  # the weight EMA's largest decay (the engine's ModelEMA default)
    "ema_tau": 2000,  # optimizer steps over which the EMA's decay ramps up to ema_decay (the engine's default)
    "autoanchor": True,  # check (and fix) the anchors before training
    "sync_bn": False,  # BatchNorm statistics over all GPUs of a DDP run (SyncBatchNorm; GPUs only)
    "weights": "",  # initial weights: a checkpoint of ours, YOLOv5's, YOLOAir's, ultralytics', or official HorNet
    "verbose_transfer": False,  # list every tensor --weights moved or did not
    "hyp": "",  # the hyp file used (recorded for the run)
    "albumentations": "",  # the albumentations file used (recorded; the transforms are in `augmentations`)
    "run_id": "",  # made when a run starts; args.yaml and every checkpoint hold it, so --resume tells this folder's run from another's
}
HYP_KEYS = (*ENGINE_HYP_KEYS, *(k for k in EXTRA_DEFAULTS
                                if k not in {"autoanchor", "weights", "hyp", "albumentations", "verbose_transfer", "sync_bn", "run_id"}))
HYP_RANGES = {"layer_scale": (0.0, 10.0), "drop_path": (0.0, 0.99), "hornet_lr_scale": (0.0, 10.0),
              "ema_decay": (0.0, 0.99999), "ema_tau": (1.0, 1e9)}  # our keys whose nonsense values would train silently
# YOLOv5 hyp keys that change nothing here: its files keep iou_t, which YOLOv5 itself does not read; cls_pw is 1.0
# in all of them (no effect), and the engine's cls_pw means something else. Checked, then dropped by check_hyp.
NO_EFFECT = ("cls_pw", "iou_t")
HYP_FILE_ONLY = ("optimizer", *NO_EFFECT)  # allowed in a hyp file: optimizer unless --optimizer


class HypError(ValueError):
    """A hyp file with an unknown key or a bad value; the message names the file and the key."""


def load_hyp(path) -> dict:
    """The hyperparameters of a YOLOv5-style hyp YAML, checked: unknown keys and non-numbers are errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hyp file not found: {path}")
    hyp = read_yaml(path, HypError) or {}
    if not isinstance(hyp, dict):
        raise HypError(f"{path}: a hyp file must be a mapping of key: value")
    return check_hyp(hyp, path)


def check_hyp(hyp: dict, source) -> dict:
    """`hyp` with YOLO-style string numbers read as numbers and the NO_EFFECT keys dropped; HypError naming `source`
    and the key for anything else."""
    path = source
    for k, v in hyp.items():
        if isinstance(v, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                hyp[k] = v = float(v)
            except ValueError:
                pass
        if k == "optimizer":
            if v not in {"SGD", "Adam", "AdamW"}:
                raise HypError(f"{path}: optimizer must be SGD, Adam or AdamW, got {short(v)}")
        elif k == "cls_pw":  # every YOLOv5 hyp file has 1.0 (no effect); other values have no equivalent here
            if v != 1.0:
                raise HypError(f"{path}: cls_pw (YOLOv5's class BCE positive weight) is only supported as 1.0, got {short(v)}")
        elif k not in HYP_KEYS and k not in NO_EFFECT:
            import difflib

            close = difflib.get_close_matches(str(k)[:100], HYP_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            known = ", ".join((*HYP_KEYS, *HYP_FILE_ONLY))
            raise HypError(f"{path}: unknown hyperparameter {short(k)}{hint}; known keys: {known}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise HypError(f"{path}: hyperparameter '{k}' must be a number, got {short(v)}")
        elif k in HYP_RANGES and not HYP_RANGES[k][0] <= v <= HYP_RANGES[k][1]:
            low, high = HYP_RANGES[k]
            raise HypError(f"{path}: hyperparameter '{k}' must be in [{low}, {high}], got {short(v)}")
    for k in NO_EFFECT:
        hyp.pop(k, None)
    return hyp


def model_family(model) -> str:
    """'hornet' if any row of a model is a HorNet layer, else 'yolov5'. `model`: a model dict or YAML path, a
    checkpoint path, or a checkpoint read already (`models.checkpoints.Weights`)."""
    from models.checkpoints import Weights, read_weights, weights_format
    from models.hornet import C3HB, HORNET_LAYERS, HorNet
    from models.registry import REGISTRY
    from models.yolo import load_model_yaml, weights_yaml

    if not isinstance(model, (dict, Weights)) and weights_format(model) == "checkpoint":
        model = read_weights(model)
    d = weights_yaml(model) if isinstance(model, Weights) else load_model_yaml(model)
    rows = [*(d.get("backbone") or []), *(d.get("head") or [])]
    names = {row[2] for row in rows if isinstance(row, (list, tuple)) and len(row) > 2 and isinstance(row[2], str)}
    hornet = any(name in REGISTRY and issubclass(REGISTRY[name].cls, (*HORNET_LAYERS, C3HB, HorNet)) for name in names)
    return "hornet" if hornet else "yolov5"


def recipe_for(model) -> Path:
    """The hyp file train.py uses for a model when --hyp is not given."""
    return RECIPES[model_family(model)]
