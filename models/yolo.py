"""YOLOv5 models from YAML: `Model`, `parse_model`, `load_model`, and a summary on the command line.

    python models/yolo.py --cfg cfg/yolov5s-hornet.yaml     # rows, parameters, GFLOPs

A YAML has `nc`, optional `anchors`, `depth_multiple`/`width_multiple` (or ultralytics' `scales:`
block, the scale letter taken from the file name), and `backbone` + `head` rows
`[from, number, module, args]`. Modules resolve through `models.registry` (or `torch.nn` for
`nn.*` names); string arguments through a literal parser and the symbols `nc`, `anchors`, `None`.
Nothing is ever `eval()`-ed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import operator
import re
import sys
from copy import deepcopy
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so that `python models/yolo.py` finds the project

from models import heads, hornet, yolov5  # noqa: E402,F401  (their modules register themselves)
from models.checkpoints import OURS, CheckpointError, Weights, read_checkpoint, read_weights, write_checkpoint  # noqa: E402,F401
from models.heads import AnchorDetect  # noqa: E402
from models.loss import AnchorLoss  # noqa: E402
from models.safe_yaml import read_yaml, short, short_text  # noqa: E402
from models.registry import DIALECTS, MODERN_HEAD_ROWS, REGISTRY, Entry, Scaling, row_same_width  # noqa: E402
from models.transfer import TransferReport, transfer  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.nn.modules import Conv, Detect  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402
from ultralytics.utils.torch_utils import initialize_weights, scale_img  # noqa: E402


class ModelConfigError(ValueError):
    """A model YAML that cannot be built; the message names the file and the row."""


# --- reading a YAML ----------------------------------------------------------------------------

SCALE_IN_NAME = re.compile(r"^(yolo(?:e-)?v?\d+)([nslmx])(.*)$")  # yolov5s-hornet -> yolov5 + s + -hornet; yolo11n -> yolo11 + n


def _unified(path: Path) -> Path | None:
    """`yolo11n.yaml` -> `yolo11.yaml` (the file that holds the scales), None for a name without a scale letter."""
    match = SCALE_IN_NAME.match(path.stem)
    return path.with_name(match[1] + match[3] + path.suffix) if match else None


def find_model_yaml(name) -> Path | None:
    """A model YAML from a path or a bare name: as given, from the repository root, in cfg/, or among the ultralytics
    package's detection models (`yolo11n.yaml` is its 11/yolo11.yaml at scale n). None when there is none."""
    import ultralytics

    path = Path(name if str(name).endswith((".yaml", ".yml")) else f"{name}.yaml")
    package = sorted((Path(ultralytics.__file__).parent / "cfg" / "models").glob("*/"))
    for candidate in (path, ROOT / path, ROOT / "cfg" / path.name, *(folder / path.name for folder in package)):
        unified = _unified(candidate)
        if candidate.is_file() or (unified is not None and unified.is_file()):
            return candidate
    return None


def load_model_yaml(cfg) -> dict:
    """A model dict from a dict or a path; `yolov5s-x.yaml` may be scale 's' of a `yolov5-x.yaml` with `scales:`."""
    if isinstance(cfg, dict):
        return deepcopy(cfg)
    path = Path(cfg)
    match = SCALE_IN_NAME.match(path.stem)
    if not path.is_file() and match and _unified(path).is_file():
        unified = _unified(path)
    elif path.is_file():
        unified = path
    else:
        raise FileNotFoundError(f"model YAML not found: {path}")
    d = read_yaml(unified, ModelConfigError)
    if not isinstance(d, dict):
        raise ModelConfigError(f"{unified}: a model YAML must be a mapping with nc, backbone and head")
    if "scales" in d and match and "scale" not in d:
        d["scale"] = match[2]
    d["yaml_file"] = str(path)
    return d


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def literal(value, symbols: dict):
    """A YAML argument with symbols and arithmetic on numbers resolved ('nc', '1/3'); other strings stay strings."""
    if not isinstance(value, str):
        return value
    if value in symbols:
        return symbols[value]

    def number(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = number(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](number(node.left), number(node.right))
        raise ValueError

    try:
        return number(ast.parse(value, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return value  # a plain string such as 'nearest' or 'gf'


def resolve_module(name, dialect: str | None = None) -> tuple[str, Entry]:
    """The registry entry for a module name (the dialect's meaning first), or a torch.nn layer that keeps its width."""
    if not isinstance(name, str):
        raise ValueError(f"module must be a name, got {name!r}")
    if name in DIALECTS.get(dialect, {}):
        return name, DIALECTS[dialect][name]
    if name in REGISTRY:
        return name, REGISTRY[name]
    torch_name = name[3:] if name.startswith("nn.") else None
    layer = getattr(nn, torch_name, None) if torch_name and not torch_name.startswith("_") else None
    if isinstance(layer, type) and issubclass(layer, nn.Module):
        return name, Entry(getattr(nn, torch_name), row_same_width)
    close = difflib.get_close_matches(name, list(REGISTRY) + ["nn.Upsample"], n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known modules: {', '.join(sorted(REGISTRY))}"
    if torch_name is not None and not close:
        hint = f": torch.nn has no layer class {torch_name!r}"
    raise ValueError(f"unknown module {name!r}{hint}")


# The top-level keys a detection model YAML may have (YOLOv5's, ultralytics', and what Model records)
YAML_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "scales", "scale", "activation", "reg_max", "end2end",
             "backbone", "head", "ch", "channels", "yaml_file")


def yaml_activation(spec: str) -> nn.Module:
    """The module of a YAML's `activation: nn.ReLU()` line, read as ultralytics reads it (never eval'd)."""
    from ultralytics.nn.tasks import _SafeLoad

    return _SafeLoad.activation(spec)


MAX_MULTIPLE = 16  # depth/width_multiple: YOLOv5x uses 1.33 and 1.25
MAX_REPEATS = 1000  # blocks one row may stack (after depth_multiple); HorNet-L's deepest stage has 18
MAX_ROW_PARAMS = 500_000_000  # 2 GB of float32 in one row; the largest row of HorNet-L holds about 0.12e9


def row_parameters(build) -> int | None:
    """The parameter count of the module `build()` makes, built on the meta device (no memory); None when a
    constructor cannot run there (it then builds for real, as before)."""
    try:
        with torch.device("meta"):
            module, _ = build()
    except Exception:
        return None
    return sum(p.numel() for p in module.parameters())


def check_from(f, i: int):
    """`from` is -1 (previous row), an earlier row index, a negative offset to one, or a list of those."""
    for j in f if isinstance(f, list) else [f]:
        if isinstance(j, bool) or not isinstance(j, int):
            raise ValueError(f"'from' must be an integer or a list of integers, got {f!r}")
        if j != -1 and not (0 <= (i + j if j < 0 else j) < i):
            raise ValueError(f"'from' index {j} is out of range: row {i} can only take rows 0..{i - 1} (or -1)")


def parse_model(d: dict, ch, verbose: bool = True):
    """Build the rows of a model dict: `(nn.Sequential, sorted indices of outputs later rows take)`.

    `ch` is a list whose last item is the number of input channels, as in YOLOv5.
    """
    source = d.get("yaml_file", "model dict")
    for key in ("backbone", "head"):
        if not isinstance(d.get(key), list):
            raise ModelConfigError(f"{source}: missing '{key}' (a list of [from, number, module, args] rows)")
    nc = d.get("nc")
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ModelConfigError(f"{source}: 'nc' must be a positive integer, got {short(nc)}")
    unknown = [k for k in d if k not in YAML_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0])[:100], YAML_KEYS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelConfigError(f"{source}: unknown key {short(unknown[0])} ({hint}a detection model YAML has: {', '.join(YAML_KEYS[:-3])})")
    depth, width, max_channels = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0), 1 << 30
    scale = None
    if "scales" in d:
        scales = d["scales"]
        scale = d.get("scale") or next(iter(scales))
        if scale not in scales:
            raise ModelConfigError(f"{source}: scale {short(scale)} is not in scales {short(list(scales))}")
        if not isinstance(scales[scale], list) or len(scales[scale]) < 2:
            raise ModelConfigError(f"{source}: scales: {scale}: must be [depth, width] or [depth, width, max_channels], "
                                   f"got {short(scales[scale])}")
        depth, width, *rest = scales[scale]
        max_channels = rest[0] if rest else max_channels
    where = f"scales: {scale}:" if scale else None
    for key, value in (("depth_multiple", depth), ("width_multiple", width)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_MULTIPLE:
            raise ModelConfigError(f"{source}: {where + ' ' + key if where else key}: must be a number in (0, {MAX_MULTIPLE}], got {short(value)}")
    anchors = d.get("anchors")
    na = (len(anchors[0]) // 2 if isinstance(anchors, list) else anchors) if anchors else 0
    rows = d["backbone"] + d["head"]
    modern = any(isinstance(r, list) and len(r) == 4 and isinstance(r[2], str) and r[2] in MODERN_HEAD_ROWS for r in rows)
    scaling = Scaling(width, max_channels, nc, na * (nc + 5) if na else None, scale,
                      legacy_head=not modern, reg_max=d.get("reg_max", 16), end2end=bool(d.get("end2end")))
    symbols = {"nc": nc, "anchors": anchors, "None": None, "True": True, "False": False}
    dialect = "yolov5" if anchors else None  # YOLOv5's YAMLs have anchors; ultralytics' (anchor-free) do not

    default_act = Conv.default_act  # process-wide: set for this model's rows only
    if d.get("activation"):
        try:
            Conv.default_act = yaml_activation(str(d["activation"]))
        except (TypeError, ValueError) as e:
            raise ModelConfigError(f"{source}: activation: {e}") from None
    try:
        return build_rows(rows, ch, depth, scaling, symbols, dialect, source, verbose)
    finally:
        Conv.default_act = default_act


def build_rows(rows, ch, depth, scaling, symbols, dialect, source, verbose):
    """parse_model's loop over the rows, with the model-wide settings decided."""
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    c_image = ch[-1] if isinstance(ch, list) else ch
    widths, layers, save = [], [], set()
    for i, row in enumerate(rows):
        try:
            if not isinstance(row, list) or len(row) != 4:
                raise ValueError("a row must be [from, number, module, args]")
            f, n, name, args = row
            check_from(f, i)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"number must be a positive integer, got {short(n)}")
            if not isinstance(args, list):
                raise ValueError(f"args must be a list, got {short(args)}")
            name, entry = resolve_module(name, dialect)
            args = [literal(a, symbols) for a in args]
            n = max(round(n * depth), 1) if n > 1 else n
            if n > MAX_REPEATS:
                raise ValueError(f"number {n} (after depth_multiple) is more than the {MAX_REPEATS} blocks a row may stack")

            def width_of(j):
                return c_image if i == 0 else widths[j]  # negative j counts back from this row

            c_in = [width_of(j) for j in f] if isinstance(f, list) else width_of(f)
            def build():
                return entry.row(entry.cls, args, n, c_in, scaling)

            size = row_parameters(build)
            if size is not None and size > MAX_ROW_PARAMS:
                raise ValueError(f"it would hold {size:,} parameters, more than the {MAX_ROW_PARAMS:,} a row may "
                                 "build (widths or repeats too large?)")
            module, c2 = build()
        except ModelConfigError:
            raise
        except Exception as e:  # the constructors' own TypeErrors/ValueErrors, with the row attached
            raise ModelConfigError(f"{source}: row {i} {short(row)}: {short_text(e)}") from e
        module.i, module.f, module.type = i, f, name
        module.np = sum(p.numel() for p in module.parameters())
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>18}{n:>3}{module.np:10.0f}  {name:<40}{short(args):<30}")
        save.update(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        widths.append(c2)
    return nn.Sequential(*layers), sorted(save)


# --- the model -----------------------------------------------------------------------------------


class Model(DetectionModel):
    """A YOLOv5 detector built from a YAML (path or dict): `model.model[i]` is row i.

    Runs on the ultralytics engine as a DetectionModel: in training a forward returns the head's raw
    outputs, in eval `(predictions (B, 4 + nc, N), raw)`.
    """

    def __init__(self, cfg="cfg/yolov5s-hornet.yaml", ch: int = 3, nc: int | None = None, verbose: bool = True):
        nn.Module.__init__(self)  # DetectionModel.__init__ would parse with the ultralytics parser
        self.yaml = load_model_yaml(cfg)
        if nc and nc != self.yaml.get("nc"):
            LOGGER.info(f"Overriding model.yaml nc={self.yaml.get('nc')} with nc={nc}")
            self.yaml["nc"] = nc
        self.yaml["channels"] = ch
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch], verbose=verbose)
        self.names = {i: f"{i}" for i in range(self.yaml["nc"])}
        self.inplace = True
        self.stride = self._build_strides(ch)
        initialize_weights(self)
        if verbose:
            self.info()

    def _build_strides(self, ch: int, size: int = 256) -> torch.Tensor:
        """Run a blank image through the rows to learn each head input's stride; a failing row is named."""
        head = self.model[-1]
        entered, shapes = [], []
        hooks = [m.register_forward_pre_hook(lambda m, x: entered.append(m.i)) for m in self.model]
        hooks.append(head.register_forward_pre_hook(lambda m, x: shapes.extend(t.shape[-2] for t in x[0])))
        try:
            self.model.eval()
            with torch.no_grad():
                self.predict(torch.zeros(1, ch, size, size))
        except Exception as e:
            i = entered[-1] if entered else 0
            row = (self.yaml["backbone"] + self.yaml["head"])[i]
            raise ModelConfigError(f"{self.yaml.get('yaml_file', 'model dict')}: row {i} {short(row)}: fails on a {size}x{size} input: {short_text(e)}") from e
        finally:
            for h in hooks:
                h.remove()
            self.model.train()
        if not isinstance(head, (AnchorDetect, Detect)):
            return torch.tensor([32.0])
        head.stride = torch.tensor([size / s for s in shapes], dtype=torch.float32)
        if isinstance(head, AnchorDetect):
            head.check_anchor_order()
            head.anchors /= head.stride.view(-1, 1, 1)  # pixels -> stride units
        head.bias_init()
        return head.stride

    def _predict_augment(self, x: torch.Tensor):
        """YOLOv5's test-time augmentation, for both heads: scales 1, 0.83 and 0.67 (left-right flipped), candidates
        merged before NMS; the engine's de-scaling and tail clipping. (The engine's refuses every head but its Detect.)"""
        size = x.shape[-2:]
        y = []
        for scale, flip in zip((1.0, 0.83, 0.67), (None, 3, None)):
            out = self._predict_once(scale_img(x.flip(flip) if flip else x, scale, gs=int(self.stride.max())))
            y.append(self._descale_pred((out[0] if isinstance(out, (list, tuple)) else out).clone(), flip, scale, size))
        return torch.cat(self._clip_augmented(y), -1), None

    def init_criterion(self):
        if isinstance(self.model[-1], AnchorDetect):
            return AnchorLoss(self)
        return super().init_criterion()

    def fuse(self, verbose: bool = True, imgsz: int = 640):
        """Conv+BN fusion (ultralytics), then the HorNet layers fold s and their layer scales into weights.

        The HorNet step runs even when the engine finds nothing left to fuse (few BatchNorms), and is idempotent.
        """
        super().fuse(verbose=verbose, imgsz=imgsz)
        for m in self.model.modules():
            if isinstance(m, (hornet.HorBlock, hornet.gnConv)):
                m.fuse()
        return self


def save_checkpoint(path, model: Model, **extra) -> Path:
    """Write `{'model_yaml', 'model' (float32 state_dict), 'names', **extra}` atomically (see write_checkpoint).

    Everything in it is plain tensors, dicts, lists, strings and numbers, so it loads with weights_only=True.
    """
    return write_checkpoint(path, checkpoint_dict(model, **extra))


def checkpoint_dict(model: Model, **extra) -> dict:
    """What save_checkpoint writes, as a dict."""
    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu() for k, v in model.state_dict().items()}
    return {"model_yaml": deepcopy(model.yaml), "model": state, "names": dict(model.names), **extra}


def weights_yaml(weights: Weights) -> dict:
    """The model dict a weights file holds; CheckpointError when it holds none (official HorNet, bare state dicts)."""
    if weights.model_yaml is None:
        raise CheckpointError(f"{weights.path}: a {weights.source} file holds weights but no model description; give the "
                              "model YAML to put them in (train.py --weights FILE --cfg MODEL.yaml)")
    d = deepcopy(weights.model_yaml)
    if weights.source != OURS:  # errors about its rows name the file they came from
        d["yaml_file"] = str(weights.path)
    d.setdefault("channels", d.get("ch") or 3)
    return d


@contextlib.contextmanager
def checkpoint_yaml_errors(path, d: dict):
    """ModelConfigErrors about the model YAML a checkpoint of ours holds name the checkpoint; they would name the
    YAML file it was first made from (what `yaml_file` keeps), which may have changed or be gone since."""
    source = str(d.get("yaml_file", "model dict"))
    try:
        yield
    except ModelConfigError as e:
        msg = str(e)
        msg = msg[len(source) + 2:] if msg.startswith(f"{source}: ") else msg
        raise ModelConfigError(f"{path}: its model YAML (made from {source}): {msg}") from None


def load_own_state(model: Model, state: dict, path) -> None:
    """A checkpoint's weights into the model of its own YAML; CheckpointError naming the file when they do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(e)
        raise CheckpointError(f"{path}: its weights do not fit its own model YAML ({first[:200]})") from None


def model_of_weights(weights: Weights, nc: int | None = None, verbose: bool = False) -> Model:
    """The model a weights file describes (its own YAML dict), built by our parser, without its weights yet."""
    d = weights_yaml(weights)
    if weights.source != OURS:  # its yaml_file is the weights file already
        return Model(d, ch=d["channels"], nc=nc, verbose=verbose)
    with checkpoint_yaml_errors(weights.path, d):
        return Model(d, ch=d["channels"], nc=nc, verbose=verbose)


def transfer_weights(model: Model, weights: Weights, exclude=()) -> TransferReport:
    """What fits of `weights` into `model` (see models.transfer), the file's rows read from its own model."""
    source = weights.module
    if source is None and weights.model_yaml is not None:
        source = model_of_weights(weights)  # ours: rebuilt from its YAML (no weights needed) for its rows
    return transfer(model, weights, exclude, source_model=source)


def load_model(path, device="cpu") -> Model:
    """The model a checkpoint describes, with its weights: ours, YOLOv5's, YOLOAir's or the ultralytics package's.

    Rebuilt from the YAML dict the file holds, by our parser; nothing pickled in the file is run (models.checkpoints).
    A foreign file whose tensors do not all fit the rebuilt model (YOLOAir builds one block per HorBlock row) loads
    what fits, with one warning that says what starts untrained.
    """
    weights = read_weights(path)
    model = model_of_weights(weights)
    if weights.source == OURS:
        load_own_state(model, weights.state, path)
    else:
        report = transfer_weights(model, weights)
        if report.transferred < report.total:
            LOGGER.warning(f"{report.summary()}; the rest starts untrained")
    if weights.names:
        model.names = dict(weights.names)
    model.pt_path = str(path)
    model.weights_source = weights.source
    return model.to(device).eval()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build a model YAML and print its summary")
    parser.add_argument("--cfg", type=str, default="cfg/yolov5s-hornet.yaml", help="model YAML")
    parser.add_argument("--nc", type=int, default=None, help="override the number of classes")
    opt = parser.parse_args()
    try:
        Model(opt.cfg, nc=opt.nc, verbose=True)
    except (ModelConfigError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
