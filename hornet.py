"""HorNet-YOLOv5 in the ultralytics Python idiom: one object that trains, validates, predicts, tracks and exports.

    from hornet import YOLO
    model = YOLO("cfg/yolov5n-hornet.yaml")             # any model YAML of ours, or the package's ("yolo11n.yaml")
    model = YOLO("yolov5s.pt")                          # a checkpoint of ours, YOLOv5's, YOLOAir's, ultralytics' (read as data)
    model = YOLO("cfg/yolov5s-hornet.yaml").load("yolov5s.pt")  # what fits of a checkpoint, rows aligned
    model.train(data="data/shapes.yaml", epochs=3, imgsz=160, lr0=0.002)  # train.py: its recipe, run folders, checkpoints
    metrics = model.val(data="data/shapes.yaml")          # val.py: metrics.box.map, ...
    for r in model("video.mp4", stream=True): r.boxes     # the engine's Results
    model.track("video.mp4", tracker="botsort.yaml", persist=True)
    model.export(format="openvino")                      # export.py

`YOLO` is the engine's public model class (`ultralytics.engine.model.Model`) with this project's model, trainer,
validator and predictor plugged in through `task_map`, as the engine's own model families (RT-DETR, YOLO-World)
plug in theirs. It differs from the engine's where the scripts do: models are built by our parser and checkpoints
read by `models.checkpoints` (never unpickled); `train()`, `val()` and `export()` run train.py's, val.py's and
export.py's own code; `save()` writes our weights_only checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.checkpoints import CheckpointError
from models.yolo import Model, find_model_yaml, load_model, save_checkpoint
from ultralytics.engine.model import Model as EngineModel
from ultralytics.utils import DEFAULT_CFG_DICT
from utils.export import runnable
from utils.predict import HorNetPredictor, resolve_source
from utils.hyp import HYP_KEYS, check_hyp
from utils.trainer import HorNetTrainer
from utils.validator import HorNetValidator

ROOT = Path(__file__).resolve().parent

# The engine's argument names whose train.py flag is named otherwise (the rest are the same names)
TRAIN_ALIASES = {"batch": "batch_size"}
TRAIN_NEGATED = {"save": "nosave", "val": "noval", "plots": "noplots"}  # engine True/False -> train.py's no-flags
VAL_ALIASES = {"batch": "batch_size", "conf": "conf_thres", "iou": "iou_thres", "split": "task"}
EXPORT_ARGS = {"format", "imgsz", "batch", "device", "half", "dynamic", "simplify", "opset", "int8", "data", "fraction", "max_drop"}


class YOLO(EngineModel):
    """A HorNet-YOLOv5 detector from a model YAML, a checkpoint (ours or another project's) or an export of ours."""

    def __init__(self, model="cfg/yolov5s-hornet.yaml", task: str | None = "detect", verbose: bool = False):
        if task not in (None, "detect"):
            raise ValueError(f"YOLO(task={task!r}): HorNet-YOLOv5 models detect (task='detect')")
        self._pretrained = None  # a checkpoint .load() transferred in: train() seeds from it again
        super().__init__(model=model, task="detect", verbose=verbose)

    @property
    def task_map(self) -> dict:
        return {"detect": {"model": Model, "trainer": HorNetTrainer, "validator": HorNetValidator, "predictor": HorNetPredictor}}

    # --- building -------------------------------------------------------------------------------------------------

    def _new(self, cfg: str, task=None, verbose: bool = False) -> None:
        """A model from a YAML of ours or of the package (a bare name is looked up in cfg/ and the package)."""
        path = find_model_yaml(cfg)
        if path is None:
            raise FileNotFoundError(f"YOLO({cfg!r}): model YAML not found (looked in {Path.cwd()}, {ROOT}, cfg/ and the "
                                    "ultralytics package's models)")
        self.model = Model(str(path), verbose=verbose)
        self._describe(cfg=str(path), ckpt_path=None)

    def _load(self, weights: str, task=None) -> None:
        """A checkpoint (rebuilt from the YAML it holds, nothing in it run) or an export (run by the engine's backend)."""
        fmt, path = runnable(weights, flag=f"YOLO({str(weights)!r})")
        self.model = load_model(path) if fmt == "checkpoint" else str(path)
        self._describe(cfg=None, ckpt_path=str(path))

    def _describe(self, cfg: str | None, ckpt_path: str | None) -> None:
        """The engine's bookkeeping for a model built here."""
        self.cfg, self.ckpt_path, self.task, self.ckpt = cfg, ckpt_path, "detect", {}
        self.model_name = cfg or ckpt_path
        self.overrides = {"model": cfg or ckpt_path, "task": "detect"}
        if not isinstance(self.model, str):
            self.model.args = {**DEFAULT_CFG_DICT, **self.overrides}
            self.model.task = "detect"

    def load(self, weights) -> YOLO:
        """What fits of a checkpoint (any source) into this model, rows aligned; one line says what came across."""
        self._check_is_pytorch_model()
        fmt, path = runnable(weights, flag=f"load({str(weights)!r})")
        if fmt != "checkpoint":
            raise CheckpointError(f"load({str(weights)!r}): an exported model ({fmt}) has no weights to load: give a .pt checkpoint")
        HorNetTrainer.load_weights(self.model, path)
        self._pretrained, self.predictor = str(path), None
        return self

    def save(self, filename="saved_model.pt") -> None:
        """Our checkpoint: the model YAML and a float32 state_dict (torch.load(weights_only=True) reads it)."""
        self._check_is_pytorch_model()
        save_checkpoint(filename, self.model)

    # --- modes: the scripts' code ----------------------------------------------------------------------------------

    def train(self, trainer=None, **kwargs):
        """train.py with these keyword arguments (its flags, the engine's names for them, and hyp keys such as lr0);
        returns the final validation metrics. The object then holds the run's best.pt."""
        import train as train_script

        if trainer is not None:
            raise TypeError("train(trainer=...): HorNet-YOLOv5 trains with its own trainer (train.py's)")
        self._check_is_pytorch_model()
        opt, hyp = train_options(kwargs, train_script.parse_opt([]))
        if opt.resume is True and self.ckpt_path:  # the engine's resume=True: go on with this checkpoint's run
            opt.resume = self.ckpt_path
        if not opt.resume:
            if self.cfg:
                opt.cfg, opt.weights = self.cfg, self._pretrained or opt.weights
            elif self.ckpt_path:
                opt.cfg, opt.weights = opt.cfg, opt.weights or self.ckpt_path
        self.trainer = train_script.main(opt, hyp=hyp, callbacks=self.callbacks)
        best = self.trainer.best if self.trainer.best.exists() else self.trainer.last
        data = self.trainer.args.data
        self._load(str(best))
        self.overrides["data"] = data
        self.metrics = getattr(self.trainer.validator, "metrics", None)
        return self.metrics

    def val(self, validator=None, **kwargs):
        """val.py on this model (in memory); returns the engine's DetMetrics (`.box.map`, `.results_dict`, ...)."""
        import val as val_script

        if validator is not None:
            raise TypeError("val(validator=...): HorNet-YOLOv5 validates with its own validator (val.py's)")
        opt = val_script.parse_opt([])
        kwargs.setdefault("data", self.overrides.get("data") or opt.data)
        for k, v in kwargs.items():
            name = VAL_ALIASES.get(k, k)
            if not hasattr(opt, name) or name == "weights":
                raise TypeError(f"val(): unknown argument {k!r} (val.py's flags: {', '.join(vars(opt))})")
            setattr(opt, name, v)
        if isinstance(self.model, str):  # an export: val.py runs it through the engine's backend
            opt.weights = self.model
            out = val_script.main(opt)
        else:
            out = val_script.main(opt, model=self.model)
        self.metrics = out["results"]
        return self.metrics

    def predict(self, source=None, stream: bool = False, predictor=None, **kwargs):
        """The engine's predict with our predictor; a file, folder or camera source is checked first (one clear error)."""
        if isinstance(source, (str, Path)):
            source = resolve_source(source)
        kwargs.setdefault("project", str(ROOT / "runs" / "detect"))
        kwargs.setdefault("name", "exp")
        return super().predict(source=source, stream=stream, predictor=predictor, **kwargs)

    def export(self, **kwargs) -> str:
        """export.py on this model's checkpoint; returns the exported file or folder (next to the checkpoint)."""
        import export as export_script

        self._check_is_pytorch_model()
        unknown = set(kwargs) - EXPORT_ARGS
        if unknown:
            raise TypeError(f"export(): unknown argument {sorted(unknown)[0]!r} (it takes {', '.join(sorted(EXPORT_ARGS))})")
        if not self.ckpt_path:
            raise CheckpointError("export(): this model has no weights file yet: train it, or save it (model.save('x.pt')) "
                                  "and load that (YOLO('x.pt'))")
        imgsz = kwargs.get("imgsz", 640)
        fmt = kwargs.get("format", "onnx")
        results = export_script.run(weights=self.ckpt_path, include=[fmt], imgsz=list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz],
                                    batch_size=kwargs.get("batch", 1), device=str(kwargs.get("device") or "cpu"),
                                    half=bool(kwargs.get("half")), dynamic=bool(kwargs.get("dynamic")),
                                    simplify=bool(kwargs.get("simplify")), opset=kwargs.get("opset"), int8=bool(kwargs.get("int8")),
                                    data=kwargs.get("data"), fraction=kwargs.get("fraction", 1.0), max_drop=kwargs.get("max_drop"))
        return str(results[fmt]["file"])


def train_options(kwargs: dict, opt: argparse.Namespace) -> tuple[argparse.Namespace, dict]:
    """train.py's options from keyword arguments in train.py's or the engine's names, and the hyp keys among them."""
    hyp = {}
    for k, v in kwargs.items():
        if k in HYP_KEYS:
            hyp[k] = v
        elif k in TRAIN_NEGATED:
            setattr(opt, TRAIN_NEGATED[k], not v)
        elif hasattr(opt, TRAIN_ALIASES.get(k, k)):
            setattr(opt, TRAIN_ALIASES.get(k, k), v)
        else:
            raise TypeError(f"train(): unknown argument {k!r} (train.py's flags, the engine's names batch/save/val/plots, "
                            f"or a hyperparameter: {', '.join(HYP_KEYS)})")
    return opt, check_hyp(hyp, "train()")
