"""Official HorNet ImageNet checkpoints <-> the HorNet rows of a HorNet-YOLOv5 model.

The paper authors publish classifiers as `{'model': state_dict}` with keys such as
`downsample_layers.0.0.weight` (stem), `downsample_layers.2.1.weight` (a downsampling conv) and
`stages.2.5.gnconv.proj_in.weight` (block 5 of stage 2), plus the classifier `norm.*` and `head.*`.

A model YAML writes the same backbone as rows, at any row indices:
- `HorStem` / `HorDown` rows take `downsample_layers.0..3`, in the order the rows come (a `ConvStem` first row
  stands in for `downsample_layers.0`, which is then left unused);
- `HorBlock` rows (one block, or an nn.Sequential of blocks when number > 1) take `stages.0..3`, in order;
- a YOLOAir-style `HorNet` row with index k takes both `downsample_layers.k` (its `.downsample`)
  and `stages.k` (its `.blocks`).
Inside a slot the parameter names are the official ones, so a key maps by swapping its prefix.

    from models.hornet_weights import load_hornet_weights
    report = load_hornet_weights(model, 'hornet_tiny_7x7.pth')

`load_hornet_weights` is all-or-nothing: if any tensor does not fit, nothing in the model changes and
a HorNetWeightsError (a ValueError) carries the report. `to_official_state_dict` is the inverse mapping.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn
from ultralytics.utils import LOGGER

from models.hornet import ConvStem, HorBlock, HorDown, HorNet, HorStem, resize_filter

__all__ = (
    "load_hornet_weights",
    "is_official_hornet_checkpoint",
    "to_official_state_dict",
    "official_state_dict",
    "format_report",
    "HorNetWeightsError",
)

OFFICIAL_KEY = re.compile(r"^(downsample_layers\.\d+|stages\.\d+\.\d+)\.(.+)$")  # (slot, name inside the slot)
CLASSIFIER_PREFIXES = ("norm.", "head.")  # the ImageNet classifier: never loaded
WRAPPER_PREFIXES = ("module.", "backbone.", "module.backbone.")  # DDP / detection-framework checkpoints
CONTAINER_KEYS = ("model", "model_ema", "state_dict")  # where the state_dict sits in a checkpoint file


class HorNetWeightsError(ValueError):
    """An official checkpoint that does not fit the model; `.report` is load_hornet_weights' report."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report


# --- which model module takes which official slot -------------------------------------------------


def _rows(model: nn.Module) -> list[tuple[int, str, nn.Module]]:
    """`(row index, row type, module)` for each row of a Model (its `.model`) or of a plain nn.Sequential."""
    seq = model.model if isinstance(getattr(model, "model", None), nn.Sequential) else model
    if not isinstance(seq, nn.Sequential):
        raise TypeError(f"expected a HorNet-YOLOv5 Model or an nn.Sequential of rows, got {type(model).__name__}")
    return [(getattr(m, "i", i), getattr(m, "type", type(m).__name__), m) for i, m in enumerate(seq)]


def hornet_slots(model: nn.Module) -> tuple[dict[str, tuple[int, str, nn.Module]], list[str]]:
    """The official slot each HorNet module of `model` takes.

    Returns `(slots, extra)`: `slots` maps an official prefix ('downsample_layers.k' or 'stages.k.j') to
    `(row index, row type, module)`; `extra` lists `(row index, why)` for HorNet rows that get no slot (a fifth HorBlock
    row, a slot already taken). Rows are walked in order; a `HorNet` row with index k sets both counters
    to k + 1, so plain rows after it continue with the next stage.
    """

    slots, extra = {}, []
    next_down = next_stage = 0

    def claim(prefix, row):
        if prefix in slots:
            extra.append((row[0], f"row {row[0]} {row[1]}: {prefix} is already taken by row {slots[prefix][0]}"))
        else:
            slots[prefix] = row

    for i, kind, m in _rows(model):
        if isinstance(m, HorNet):
            k = m.index
            claim(f"downsample_layers.{k}", (i, kind, m.downsample))
            for j, block in enumerate(m.blocks):
                claim(f"stages.{k}.{j}", (i, kind, block))
            next_down, next_stage = max(next_down, k + 1), max(next_stage, k + 1)
        elif isinstance(m, ConvStem) and next_down == 0:  # YOLOv5's stem where the official one stood
            extra.append((i, f"row {i} {kind}: YOLOv5's stem in place of downsample_layers.0, keeps its own weights"))
            next_down = 1
        elif isinstance(m, (HorStem, HorDown)):
            if next_down > 3:
                extra.append((i, f"row {i} {kind}: the official network has only downsample_layers.0-3"))
            else:
                claim(f"downsample_layers.{next_down}", (i, kind, m))
            next_down += 1
        elif isinstance(m, HorBlock) or (isinstance(m, nn.Sequential) and len(m) and isinstance(m[0], HorBlock)):
            blocks = [m] if isinstance(m, HorBlock) else list(m)
            if next_stage > 3:
                extra.append((i, f"row {i} {kind}: the official network has only stages.0-3"))
            else:
                for j, block in enumerate(blocks):
                    claim(f"stages.{next_stage}.{j}", (i, kind, block))
            next_stage += 1
    return slots, extra


# --- reading a checkpoint ----------------------------------------------------------------------------


def _official_key(key: str) -> str | None:
    """`key` without a DDP/framework wrapper prefix if it is an official backbone key, else None."""
    for prefix in ("",) + WRAPPER_PREFIXES:
        if key.startswith(prefix) and OFFICIAL_KEY.match(key[len(prefix) :]):
            return key[len(prefix) :]
    return None


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def official_state_dict(path_or_obj) -> dict[str, torch.Tensor] | None:
    """The official backbone + classifier tensors of a checkpoint, or None if it is not one.

    Takes a path (read as data by `models.checkpoints.load_data`: `torch.load(weights_only=True)` that also reads
    plain data such as an `argparse.Namespace` of training arguments) or an already-loaded object:
    `{'model': sd}`, `{'model_ema': sd}`, `{'state_dict': sd}` or a bare state_dict `sd`. The result
    keeps only `downsample_layers.*`, `stages.*`, `norm.*` and `head.*` keys, wrapper prefixes removed.
    """
    obj = path_or_obj
    if isinstance(obj, (str, Path)):
        from models.checkpoints import load_data

        obj = load_data(obj)
    if not isinstance(obj, dict):
        return None
    candidates = [obj[k] for k in CONTAINER_KEYS if k in obj] + [obj]
    for sd in candidates:
        if not _is_state_dict(sd):
            continue
        out = {}
        for k, v in sd.items():
            ok = _official_key(k)
            if ok is not None:
                out[ok] = v
            elif k.startswith(CLASSIFIER_PREFIXES):
                out[k] = v
        if any(OFFICIAL_KEY.match(k) for k in out):
            return out
    return None


def is_official_hornet_checkpoint(path_or_obj) -> bool:
    """True if `path_or_obj` (a path or a loaded object) holds official HorNet keys.

    Official means `downsample_layers.*` / `stages.*` keys in a state_dict under 'model', 'model_ema'
    or 'state_dict', or bare. A HorNet-YOLOv5 checkpoint (`model.0.0.weight`, ...) is not one; a file
    that does not load with weights_only=True is not one either.
    """
    try:
        return official_state_dict(path_or_obj) is not None
    except Exception:  # unreadable, or pickled code that weights_only refuses
        return False


# --- loading -----------------------------------------------------------------------------------------


def load_hornet_weights(model: nn.Module, path_or_state, verbose: bool = True) -> dict:
    """Copy an official HorNet checkpoint into the HorNet rows of `model`; return a report.

    `model` is a Model (or an nn.Sequential of rows); `path_or_state` a checkpoint path or an object
    as `official_state_dict` takes. GF `complex_weight` filters whose h x w differ from the YAML's are
    resized bilinearly (as the layer itself would); `norm.*` / `head.*` are ignored.

    The report is a dict:
      loaded       number of tensors copied          loaded_keys   their official names
      rows         {row index: official slots it took}
      not_covered  model HorNet rows/blocks the checkpoint has nothing for
      unused       official slots the model has no place for (e.g. the model has fewer blocks)
      mismatched   (official key, model key, checkpoint shape, model shape), the shapes may be None
                   when a tensor exists on one side only
      resized      (official key, checkpoint shape, model shape) of resized GF filters
      ignored      number of classifier tensors skipped
    If anything mismatches, nothing in the model changes and a HorNetWeightsError (a ValueError: the
    report as text, the dict as `.report`) is raised; a checkpoint that covers none of the model's rows
    raises too, as do a checkpoint without official keys and a model without HorNet rows. With
    `verbose` the report is logged.
    """
    source = str(path_or_state) if isinstance(path_or_state, (str, Path)) else "checkpoint"
    try:
        sd = official_state_dict(path_or_state)
    except OSError as e:  # a missing file
        raise HorNetWeightsError(f"{source}: cannot be read: {e}") from e
    except ValueError as e:  # refused (it would run code) or broken: the reader's one line
        raise HorNetWeightsError(str(e)) from None
    if sd is None:
        raise HorNetWeightsError(f"{source}: not an official HorNet checkpoint (no downsample_layers.*/stages.* keys)")
    slots, extra = hornet_slots(model)
    if not slots:
        raise HorNetWeightsError(f"{source}: the model has no HorStem/HorDown/HorBlock/HorNet rows to load into")
    names = {id(m): n for n, m in model.named_modules()}
    tensors = {prefix: row[2].state_dict(keep_vars=True) for prefix, row in slots.items()}  # slot -> its parameters

    report = {"loaded": 0, "loaded_keys": [], "rows": {}, "not_covered": [], "unused": [],
              "mismatched": [], "resized": [], "ignored": 0}  # fmt: skip
    updates = []  # (model tensor, new value): applied only when everything fits
    used, unused = set(), set()
    for key, value in sd.items():
        match = OFFICIAL_KEY.match(key)
        if match is None:
            report["ignored"] += 1
            continue
        prefix, name = match.groups()
        if prefix not in slots:
            unused.add(prefix)
            continue
        used.add(prefix)
        target = tensors[prefix].get(name)
        model_key = f"{names.get(id(slots[prefix][2]), '?')}.{name}"
        if target is None:
            report["mismatched"].append((key, model_key, tuple(value.shape), None))
            continue
        if name.endswith("complex_weight") and value.shape != target.shape and value.ndim == 4 and (
            value.shape[0] == target.shape[0] and value.shape[3] == target.shape[3] == 2
        ):
            report["resized"].append((key, tuple(value.shape), tuple(target.shape)))
            value = resize_filter(value, tuple(target.shape[1:3]))
        if value.shape != target.shape:
            report["mismatched"].append((key, model_key, tuple(value.shape), tuple(target.shape)))
            continue
        updates.append((target, value))
        report["loaded_keys"].append(key)

    # model tensors that a covered slot has and the checkpoint lacks (a 1x1 `proj` of a HorBlock whose
    # input width differs is ours, not official: it keeps its initialization)
    present = set(sd)
    for prefix in sorted(used, key=_slot_order):
        for name, t in tensors[prefix].items():
            if f"{prefix}.{name}" not in present and not name.startswith("proj."):
                model_key = f"{names.get(id(slots[prefix][2]), '?')}.{name}"
                report["mismatched"].append((f"{prefix}.{name}", model_key, None, tuple(t.shape)))

    not_covered = list(extra)
    for prefix, row in slots.items():
        if prefix not in used:
            not_covered.append((row[0], f"row {row[0]} {row[1]} <- {prefix} (not in the checkpoint)"))
        else:
            report["rows"].setdefault(row[0], []).append(prefix)
    report["not_covered"] = [text for _, text in sorted(not_covered, key=lambda t: t[0])]
    report["unused"] = sorted(unused, key=_slot_order)
    report["loaded"] = len(updates)

    if report["mismatched"]:
        why = "HorNet weights do not fit the model, nothing was loaded"
        raise HorNetWeightsError(f"{source}: {why}\n{format_report(report)}", report)
    if not updates:
        why = "the checkpoint covers none of the model's HorNet rows"
        raise HorNetWeightsError(f"{source}: {why}\n{format_report(report)}", report)
    with torch.no_grad():
        for target, value in updates:
            target.copy_(value)
    if verbose:
        LOGGER.info(format_report(report))
    return report


def _slot_order(prefix: str):
    parts = prefix.split(".")
    return (int(parts[1]), parts[0] == "stages", int(parts[2]) if len(parts) > 2 else -1)


def format_report(report: dict, max_lines: int = 20) -> str:
    """A few readable lines for a `load_hornet_weights` report (at most `max_lines` mismatches listed)."""
    n, bad = report["loaded"], report["mismatched"]
    head = f"{n} tensors fit, {len(bad)} do not: nothing loaded" if bad else f"{n} tensors loaded"
    lines = [f"HorNet weights: {head} (rows {sorted(report['rows'])})"
             + (f", {report['ignored']} classifier tensors ignored" if report["ignored"] else "")]  # fmt: skip
    for key, old, new in report["resized"]:
        lines.append(f"  resized GF filter {key}: {list(old)} -> {list(new)}")
    if report["not_covered"]:
        lines.append(f"  model HorNet parts not covered ({len(report['not_covered'])}), left as initialized:")
        lines += [f"    {s}" for s in report["not_covered"]]
    if report["unused"]:
        lines.append(f"  official parts not used ({len(report['unused'])}): {', '.join(report['unused'])}")
    if bad:
        lines.append(f"  mismatches ({len(bad)}): official key -> model key: checkpoint shape, model shape")
        for key, model_key, a, b in bad[:max_lines]:
            a = list(a) if a is not None else "absent"
            b = list(b) if b is not None else "absent"
            lines.append(f"    {key} -> {model_key}: checkpoint {a}, model {b}")
        if len(bad) > max_lines:
            lines.append(f"    ... and {len(bad) - max_lines} more")
        if any(k.endswith("dwconv.weight") for k, *_ in bad) and any("dwconv.complex_weight" in k for k, *_ in bad):
            lines.append("  hint: the checkpoint and the YAML use different gnConv filters (7x7 vs gf) in some stage")
    return "\n".join(lines)


# --- the inverse --------------------------------------------------------------------------------------


def to_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The HorNet rows of `model` as an official state_dict (`downsample_layers.*`, `stages.*`).

    Detached tensors that share storage with the model, as `state_dict()` gives them. No classifier
    keys; a HorBlock's own `proj` (input width != output width) has no official name and is left out.
    `{'model': to_official_state_dict(m)}` loads back with load_hornet_weights.
    """
    slots, _ = hornet_slots(model)
    out = {}
    for prefix in sorted(slots, key=_slot_order):
        for name, t in slots[prefix][2].state_dict().items():
            if not name.startswith("proj."):
                out[f"{prefix}.{name}"] = t.detach()
    return out
