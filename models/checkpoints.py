"""Weights files of any source, read as data: ours, YOLOv5's, YOLOAir's, the ultralytics package's, official HorNet.

    weights = read_weights("yolov5s.pt")      # Weights(source='YOLOv5', state={...}, model_yaml={...}, names={...})

YOLOv5, YOLOAir and ultralytics checkpoints are pickles of their own model classes (`models.yolo.Model`,
`models.common.C3`, `ultralytics.nn.tasks.DetectionModel`, ...). Unpickling them as they are would import and
run their code, and YOLOv5's names collide with this project's own `models` package. So every file is read
with `torch.load(weights_only=True)`, allowing only:
- tensors and what torch allows by default, and the `torch.nn` layer classes (the engine's restricted loader
  allows the same);
- plain data: `pathlib` paths (POSIX or Windows, on any OS: read as strings), numpy scalars and arrays,
  `argparse.Namespace`;
- model classes of the projects that write detection checkpoints (`models.*`, `yolov5.*`, `ultralytics.*`):
  each becomes an inert stand-in that keeps what the file gives it (its parameters, buffers, sub-modules and
  attributes such as `yaml` and `names`) and runs nothing.
Any other global (`os.system`, `builtins.eval`, `subprocess.*`, ...) is refused before anything is unpickled,
in one line that names it. `torch.serialization.get_unsafe_globals_in_checkpoint` lists what a file needs
without running it.

`weights_format(path)` says what a file is by its content, whatever its suffix or its case: a torch checkpoint
goes to `read_weights`, never to the engine's loader.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# Where the release files users ask for by bare name come from (nothing is downloaded here)
RELEASES = ("the official YOLOv5 weights are on https://github.com/ultralytics/yolov5/releases, the ultralytics "
            "package's (yolo11n.pt, yolov5su.pt, ...) on https://github.com/ultralytics/assets/releases, official HorNet "
            "ImageNet weights on https://github.com/raoyongming/HorNet")

# Top-level packages whose classes are detection model classes: they become inert stand-ins
MODEL_PACKAGES = ("models", "yolov5", "ultralytics")
# YOLOv5's own model classes (v5.0-v7.0 models.common, models.yolo, models.experimental): any other model class
# in a `models.*` file makes it a YOLOAir (or other YOLOv5-derived) checkpoint
YOLOV5_CLASSES = set(
    "Conv DWConv DWConvTranspose2d TransformerLayer TransformerBlock Bottleneck BottleneckCSP CrossConv C3 C3x C3TR "
    "C3SPP C3Ghost SPP SPPF Focus GhostConv GhostBottleneck Contract Expand Concat DetectMultiBackend AutoShape "
    "Detections Proto Classify Detect Segment BaseModel DetectionModel SegmentationModel ClassificationModel Model "
    "Sum MixConv2d Ensemble".split()
)
OURS = "HorNet-YOLOv5"
OFFICIAL_HORNET = "official HorNet"


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file and why."""


class WeightsNotFound(FileNotFoundError):
    """A weights file that is not on disk; the message says that nothing is downloaded and where files come from."""


def weights_not_found(path, flag: str = "--weights") -> WeightsNotFound:
    return WeightsNotFound(f"{flag} {path}: no such file, and nothing is downloaded here: {RELEASES}; save the file and give its path")


# --- what a file is ---------------------------------------------------------------------------------------------


def weights_format(path) -> str | None:
    """'checkpoint' (torch.save), 'torchscript', 'onnx' or 'openvino' by content, else by lower-case suffix; None.

    A torch zip archive holds `data.pkl`; a TorchScript archive also holds `constants.pkl` and its code. A file in
    torch's older pickle format starts with a pickle protocol byte.
    """
    path = Path(path)
    if path.is_dir():
        return "openvino" if path.name.endswith("_openvino_model") or any(path.glob("*.xml")) else None
    if not path.is_file():
        return None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = [n.split("/", 1)[-1] for n in z.namelist()]
        except (OSError, zipfile.BadZipFile):
            return "checkpoint"
        if "constants.pkl" in names or any(n.startswith("code/") for n in names):
            return "torchscript"
        return "checkpoint" if "data.pkl" in names else None
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":  # a pickle (torch's format before 1.6)
        return "checkpoint"
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return "openvino"
    return {".onnx": "onnx", ".torchscript": "torchscript", ".pt": "checkpoint", ".pth": "checkpoint"}.get(suffix)


# --- stand-ins and the allow-list -----------------------------------------------------------------------------------


class StandIn:
    """An inert stand-in for a class a file names: it keeps what unpickling hands it and never runs anything.

    `source` is the class's full name in the file (`models.common.C3`). Parameters, buffers and sub-modules sit
    in `_parameters`, `_buffers`, `_modules` as in an nn.Module, so `tensors_of` walks it like one.
    """

    source = "?"

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict state, slot state)
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update({k: v for k, v in state.items() if isinstance(k, str) and not k.startswith("__")})
        else:
            self.state = state

    def __repr__(self):
        return f"StandIn({self.source})"


_STAND_INS: dict[str, type] = {}


def stand_in(name: str) -> type:
    """The StandIn subclass for the global `name` (one per name, so a file's classes stay distinguishable)."""
    if name not in _STAND_INS:
        _STAND_INS[name] = type(name.rpartition(".")[2] or "StandIn", (StandIn,), {"source": name})
    return _STAND_INS[name]


def _path_string(flavour):
    def make(*parts):
        return str(flavour(*(str(p) for p in parts)))

    return make


def _inert_getattr(obj, name):
    """ultralytics files pickle bound methods (`getattr(Detect, 'forward')`); here they come back inert."""
    return stand_in(f"getattr.{name}")()


_NUMPY_SCALAR = np.float64(0).__reduce__()[0]
_NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
PLAIN_DATA = {
    **{f"{m}.{c}": _path_string(pathlib.PureWindowsPath if "Windows" in c else pathlib.PurePosixPath)
       for m in ("pathlib", "pathlib._local") for c in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")},
    **{f"numpy.{m}.multiarray.scalar": _NUMPY_SCALAR for m in ("core", "_core")},
    **{f"numpy.{m}.multiarray._reconstruct": _NUMPY_RECONSTRUCT for m in ("core", "_core")},
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "argparse.Namespace": argparse.Namespace,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.slice": slice,
    "builtins.getattr": _inert_getattr,
}


def _torch_nn_class(name: str):
    """The torch.nn layer class a global names (`torch.nn.modules.conv.Conv2d`), or None."""
    module, _, attr = name.rpartition(".")
    if not module.startswith("torch.nn.modules"):
        return None
    import importlib

    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return obj if isinstance(obj, type) and issubclass(obj, torch.nn.Module) else None


def allowed(name: str):
    """What the global `name` unpickles as, or None when it is refused."""
    if name in PLAIN_DATA:
        return PLAIN_DATA[name]
    if name.startswith("numpy.dtypes.") and name.endswith("DType"):
        return getattr(np.dtypes, name.rpartition(".")[2], None)
    cls = _torch_nn_class(name)
    if cls is not None:
        return cls
    if name.split(".", 1)[0] in MODEL_PACKAGES and "." in name:
        return stand_in(name)
    return None


def _load(path: Path, needed: list[str]):
    """torch.load(weights_only=True) with the globals the file needs allowed (the caller checked them).

    torch's allow-list is process-wide and its context manager removes on exit what it added, so only entries not
    there already are added (the engine's restricted loader registers its own for good; a name it holds keeps its
    entry: the reader handles its real classes as it handles stand-ins).
    """
    present = torch.serialization.get_safe_globals()
    names = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in present}
    extra = [(allowed(n), n) for n in needed if n not in names]
    if "numpy.dtype" in needed:  # dtype instances are built as numpy.dtypes classes, which the scan does not list
        extra += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    extra = [e for e in extra if e not in present]
    with torch.serialization.safe_globals(extra):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_data(path) -> object:
    """The object in a torch file, read as data (see the module docstring); CheckpointError when refused or unreadable."""
    path = Path(path)
    with open(path, "rb") as f:
        pickled = f.read(1) == b"\x80"  # torch's format before 1.6: a bare pickle
    if not (pickled or zipfile.is_zipfile(path)):
        raise CheckpointError(f"{path}: not a torch file, or a truncated one")
    needed = [] if pickled else sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    refused = [n for n in needed if allowed(n) is None]
    if refused:
        shown = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
        raise CheckpointError(f"{path}: refused, nothing in it was run: it needs {shown}, which is neither a tensor, "
                              "a torch.nn layer nor plain data (a file that runs code when it is loaded)")
    try:
        return _load(path, needed)
    except pickle.UnpicklingError as e:  # the older format, whose globals only the unpickler sees
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = found[1] if found else "objects that are not data"
        raise CheckpointError(f"{path}: refused, nothing in it was run: it needs {what}, which is neither a tensor, "
                              "a torch.nn layer nor plain data (an old-format torch file with objects in it)") from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a torch file, or a truncated one ({type(e).__name__})") from None


# --- what a file holds ----------------------------------------------------------------------------------------------


@dataclass
class Weights:
    """The usable content of a weights file, whatever wrote it.

    `source`: who wrote it ('HorNet-YOLOv5', 'YOLOv5', 'YOLOAir', 'ultralytics', 'official HorNet'); `state`:
    float32 tensors by state_dict name; `model_yaml`: the model dict when the file holds one (None for official
    HorNet and bare state dicts); `names`: class names when the file has them; `checkpoint`: our checkpoint dict
    (ours only: what --resume needs).
    """

    path: Path
    source: str
    state: dict
    model_yaml: dict | None = None
    names: dict | None = None
    checkpoint: dict | None = field(default=None, repr=False)
    module: object = field(default=None, repr=False)  # a foreign file's model (stand-ins): its rows, for transfer

    @property
    def label(self) -> str:
        """`yolov5s.pt (YOLOv5 checkpoint)`."""
        return f"{self.path.name} ({self.source} checkpoint)"


def tensors_of(obj, prefix: str = "", seen: set | None = None) -> dict:
    """The state_dict of a module or a StandIn of one: its parameters and persistent buffers, by dotted name."""
    seen = set() if seen is None else seen
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return {}
    seen.add(id(obj))
    d = vars(obj)
    out = {}
    skip = d.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for k, v in (d.get(group) or {}).items():
            if isinstance(v, torch.Tensor) and not (group == "_buffers" and k in skip):
                out[prefix + k] = v
    for k, m in (d.get("_modules") or {}).items():
        if m is not None:
            out.update(tensors_of(m, f"{prefix}{k}.", seen))
    return out


def plain(x, depth: int = 0):
    """`x` as what weights_only loading accepts: dicts, lists, strings, numbers, None and CPU tensors (numpy scalars as
    numbers, paths and other objects as strings; nesting deeper than 50 levels, as a file may craft it, is dropped)."""
    if depth > 50:
        return None
    if isinstance(x, dict):
        return {k if isinstance(k, (int, str)) else str(k): plain(v, depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v, depth + 1) for v in x]
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def _names(x) -> dict | None:
    if isinstance(x, (list, tuple)):
        x = dict(enumerate(x))
    if isinstance(x, dict) and x:
        try:
            return {int(k): str(v) for k, v in x.items()}
        except (TypeError, ValueError):
            return None
    return None


def _class_names(obj, seen=None) -> set:
    """Full names of the stand-in classes in a model (`models.common.C3`, ...)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return set()
    seen.add(id(obj))
    cls = type(obj)
    found = {cls.source if isinstance(obj, StandIn) else f"{cls.__module__}.{cls.__qualname__}"}
    for m in (vars(obj).get("_modules") or {}).values():
        found |= _class_names(m, seen)
    return found


def _source_of(model) -> str:
    classes = {c for c in _class_names(model) if not c.startswith("torch.")}
    top = {c.split(".", 1)[0] for c in classes}
    if "ultralytics" in top:
        return "ultralytics"
    if "models" in top or "yolov5" in top:
        return "YOLOv5" if all(c.rpartition(".")[2] in YOLOV5_CLASSES for c in classes) else "YOLOAir"
    return "torch"


def read_weights(path) -> Weights:
    """Every source's weights file as `Weights` (see the module docstring); never runs anything the file holds.

    Raises WeightsNotFound (not on disk), CheckpointError (refused, unreadable, or holding no tensors).
    """
    from models.hornet_weights import official_state_dict

    path = Path(path)
    if not path.is_file():
        raise weights_not_found(path)
    obj = load_data(path)
    if isinstance(obj, dict) and isinstance(obj.get("model_yaml"), dict) and isinstance(obj.get("model"), dict):
        state = {k: v for k, v in obj["model"].items() if isinstance(v, torch.Tensor)}
        return Weights(path, OURS, _float(state), obj["model_yaml"], _names(obj.get("names")), obj)
    official = official_state_dict(obj) if isinstance(obj, dict) else None
    if official is not None:
        return Weights(path, OFFICIAL_HORNET, _float(official))
    model = obj
    if isinstance(obj, dict):
        model = next((obj[k] for k in ("ema", "model", "state_dict") if obj.get(k) is not None), None)
    if isinstance(model, dict) and model and all(isinstance(v, torch.Tensor) for v in model.values()):
        return Weights(path, "torch", _float(model))  # a bare state dict
    state = tensors_of(model) if model is not None else {}
    if not state:
        raise CheckpointError(f"{path}: holds no model weights (a torch file, but no model, state_dict or tensors in it)")
    attrs = vars(model)
    yaml_dict = attrs.get("yaml") if isinstance(attrs.get("yaml"), dict) else None
    names = _names(attrs.get("names")) or (_names(obj.get("names")) if isinstance(obj, dict) else None)
    return Weights(path, _source_of(model), _float(state), plain(yaml_dict) if yaml_dict else None, names, module=model)


def _float(state: dict) -> dict:
    """float16 (and other floating) tensors as float32, detached; integer buffers as they are."""
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()) for k, v in state.items()}


# --- our own checkpoints ----------------------------------------------------------------------------------------------


def write_checkpoint(path, ckpt: dict) -> Path:
    """torch.save into a temp file, then rename: a kill leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> dict:
    """A checkpoint dict that train.py wrote (what --resume needs); a clear error naming what the file is otherwise."""
    w = read_weights(path)
    if w.checkpoint is None:
        raise CheckpointError(f"{path} is a {w.source} checkpoint, not one that train.py wrote (expected 'model_yaml' "
                              "and a 'model' state_dict)")
    return w.checkpoint
