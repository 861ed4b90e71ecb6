"""Weights of one detector into another: by name and shape as YOLOv5 does, and beyond it by aligning rows.

    from models.checkpoints import read_weights
    report = transfer(model, read_weights("yolov5s.pt"), exclude=("anchors",))
    print(report.summary())   # Transferred 330/358 tensors from yolov5s.pt (YOLOv5 checkpoint): rows 0-9, 11-24; new: row 10 (gnConv)

Why rows. A style that replaces the backbone shifts every later row (the HorNet-backbone style's PAN head sits
one row later than YOLOv5's), so matching by name (`model.13.cv1.conv.weight`) finds almost nothing, and what
it finds is wrong. Here each model is read as a sequence of *units* (a row, or each member of a row that is a
stack such as `[-1, 2, HorBlock, ...]` or the two Convs of `ConvStem`), each with its module kind, and the two
sequences are aligned (`difflib.SequenceMatcher`, longest common runs first). Aligned units exchange the tensors
whose names inside the unit and shapes agree; where a run of units was replaced by as many others (`C3` by `C3HB`)
they are paired in order and exchange what fits (C3HB keeps C3's cv1, cv2, cv3). Whichever of the two matchings
moves more tensors is used, so the result is never less than YOLOv5's.

A new class count keeps the anchor head's box and objectness outputs: only its class outputs start anew.
`num_batches_tracked` counters are neither moved nor counted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from models.checkpoints import StandIn, Weights


def _children(obj) -> dict:
    return dict((vars(obj).get("_modules") or {}) if hasattr(obj, "__dict__") else {})


def _kind(module) -> str:
    """A unit's module kind for alignment: the YAML name a row was built from, else its class name; lower case."""
    name = getattr(module, "type", None) if isinstance(getattr(module, "type", None), str) else None
    if name is None:
        name = type(module).source if isinstance(module, StandIn) else type(module).__name__
    return name.rpartition(".")[2].lower()


def _is_stack(module) -> bool:
    name = type(module).source if isinstance(module, StandIn) else None
    return isinstance(module, nn.Sequential) or (name or "").endswith(".Sequential")


def units(model) -> list[tuple[str, str, int]]:
    """(state-dict prefix, kind, row) of each unit of a detector (ours, or a stand-in of a foreign one)."""
    rows = _children(_children(model).get("model"))
    out = []
    for i, row in rows.items():
        if _is_stack(row) and _children(row):
            out += [(f"model.{i}.{c}.", _kind(child), int(i)) for c, child in _children(row).items()]
        else:
            out.append((f"model.{i}.", _kind(row), int(i)))
    return out


ANCHOR_KEYS = ("anchors", "anchor_grid")


def _counted(key: str) -> bool:
    """Learned tensors: not the BatchNorm step counters, the head's strides (measured when a model is built) or its
    anchors (moved or not as a whole, and reported on their own)."""
    last = key.rpartition(".")[2]
    return last != "num_batches_tracked" and last != "stride" and last not in ANCHOR_KEYS


NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def tensor_groups(model: nn.Module) -> dict:
    """{tensor key: group} where a group is what must move whole: a layer, or, when the layer is a norm, the module
    holding it with everything inside (a Conv's conv and BatchNorm together, a HorBlock with its layer scales)."""
    roots = {name.rpartition(".")[0] for name, m in model.named_modules() if isinstance(m, NORMS) and "." in name}
    groups = {}
    for key in model.state_dict():
        owner = key.rpartition(".")[0]
        held = [r for r in roots if owner == r or owner.startswith(r + ".") or key.startswith(r + ".")]
        groups[key] = max(held, key=len) if held else owner
    return groups


def _whole_modules(mapping: dict, groups: dict) -> dict:
    """`mapping` without the tensors of groups that did not come across whole (a BatchNorm without its conv)."""
    incomplete = {g for k, g in groups.items() if _counted(k) and k not in mapping}
    return {k: s for k, s in mapping.items() if groups.get(k) not in incomplete}


def _row_of(key: str) -> int | None:
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "model" and parts[1].isdigit() else None


@dataclass
class TransferReport:
    """What a transfer moved: `moved` {model key: file key}, `partial` {model key: why}, counts and row lists."""

    label: str
    total: int
    moved: dict = field(default_factory=dict)
    partial: dict = field(default_factory=dict)
    rows_full: list = field(default_factory=list)
    rows_partial: list = field(default_factory=list)  # (row, kind, note)
    rows_new: list = field(default_factory=list)  # (row, kind)
    skipped: list = field(default_factory=list)  # (model key, file shape, model shape) for same-named misfits
    unused: int = 0  # tensors of the file that went nowhere
    anchors: str = ""  # where an anchor head's anchors come from: 'from the file' or "the model's"

    @property
    def transferred(self) -> int:
        return len(self.moved) + len(self.partial)

    def summary(self) -> str:
        parts = [f"Transferred {self.transferred}/{self.total} tensors from {self.label}"]
        rows = []
        if self.rows_full:
            rows.append(f"rows {row_ranges(self.rows_full)}")
        if self.rows_partial:
            rows.append("partly: " + ", ".join(f"row {i} ({k}{': ' + n if n else ''})" for i, k, n in self.rows_partial))
        if self.rows_new:
            rows.append("new: " + ", ".join(f"row {i} ({k})" for i, k in self.rows_new))
        if self.anchors:
            rows.append(f"anchors: {self.anchors}")
        return parts[0] + (": " + "; ".join(rows) if rows else "")

    def details(self) -> list[str]:
        """One line per tensor: where each came from, or why it did not."""
        lines = [f"  {k} <- {v}" for k, v in self.moved.items()]
        lines += [f"  {k}: {why}" for k, why in self.partial.items()]
        lines += [f"  {k}: not transferred (shape {a} in the file, {b} in the model)" for k, a, b in self.skipped]
        return lines


def row_ranges(rows: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    out, start = [], None
    for i, r in enumerate(rows):
        if start is None:
            start = r
        if i + 1 == len(rows) or rows[i + 1] != r + 1:
            out.append(str(start) if start == r else f"{start}-{r}")
            start = None
    return ", ".join(out)


def _by_name(src: dict, dst: dict, groups: dict, exclude) -> dict:
    moved = {k: k for k, v in dst.items() if _counted(k) and k in src and src[k].shape == v.shape
             and not any(x in k for x in exclude)}
    return _whole_modules(moved, groups)


def _unit_pairs(src_units, dst_units) -> list[tuple[str, str]]:
    """Pairs of (file prefix, model prefix) from aligning the two unit sequences by kind."""
    a, b = [u[1] for u in src_units], [u[1] for u in dst_units]
    pairs = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            pairs += [(src_units[i][0], dst_units[j][0]) for i, j in zip(range(i1, i2), range(j1, j2))]
    return pairs


def _by_rows(src: dict, dst: dict, groups: dict, pairs, exclude) -> dict:
    moved = {}
    for sp, dp in pairs:
        for k, v in dst.items():
            if k.startswith(dp) and _counted(k) and not any(x in k for x in exclude):
                s = sp + k[len(dp):]
                if s in src and src[s].shape == v.shape:
                    moved[k] = s
    return _whole_modules(moved, groups)


def _class_rows(model: nn.Module, src: dict, dst: dict, mapping: dict, pairs, exclude) -> dict:
    """Anchor-head convs whose class count changed: copy each anchor's box and objectness outputs (5 rows)."""
    head = model.model[-1]
    if not hasattr(head, "na") or not hasattr(head, "no") or not isinstance(getattr(head, "m", None), nn.ModuleList):
        return {}
    na, no = head.na, head.no
    prefix = f"model.{len(model.model) - 1}."
    src_prefix = next((sp for sp, dp in pairs if dp == prefix), prefix)
    partial = {}
    for k, v in dst.items():
        s = src_prefix + k[len(prefix):]
        if not k.startswith(prefix + "m.") or k in mapping or s not in src or any(x in k for x in exclude):
            continue
        w = src[s]
        if w.shape[1:] != v.shape[1:] or w.shape[0] % na or w.shape[0] // na < 5:
            continue
        no_src = w.shape[0] // na
        with torch.no_grad():
            for a in range(na):
                v[a * no:a * no + 5] = w[a * no_src:a * no_src + 5]
        partial[k] = f"box and objectness outputs kept, class outputs new ({no_src - 5} classes -> {no - 5})"
    return partial


def pairs_key(key: str, pairs) -> str:
    """The file's name for the model's tensor `key` under the unit pairing (the same name when no unit holds it)."""
    for sp, dp in pairs:
        if key.startswith(dp):
            return sp + key[len(dp):]
    return key


def transfer(model: nn.Module, weights: Weights, exclude=(), source_model: nn.Module | None = None) -> TransferReport:
    """Copy what fits of `weights` into `model` (our Model) and say what was moved.

    `exclude`: substrings of keys never moved (e.g. 'anchors' when the model's YAML brings its own). The file's
    rows come from its own model (`weights.module`, or `source_model`, e.g. ours rebuilt from its YAML).
    """
    src = weights.state
    dst = model.state_dict()
    groups = tensor_groups(model)
    mapping = _by_name(src, dst, groups, exclude)
    pairs = []
    source_model = source_model if source_model is not None else weights.module
    if source_model is not None:
        pairs = _unit_pairs(units(source_model), units(model))
        aligned = _by_rows(src, dst, groups, pairs, exclude)
        if len(aligned) >= len(mapping):
            mapping = aligned
        else:
            pairs = [(p, p) for _, p, _ in units(model)]
    anchors = {k: pairs_key(k, pairs) for k in dst if k.rpartition(".")[2] in ANCHOR_KEYS and not any(x in k for x in exclude)}
    anchors = {k: s for k, s in anchors.items() if s in src and src[s].shape == dst[k].shape}
    with torch.no_grad():
        for k, s in {**mapping, **anchors}.items():
            dst[k].copy_(src[s])
    partial = _class_rows(model, src, dst, mapping, pairs, exclude)
    counted = [k for k in dst if _counted(k)]
    report = TransferReport(weights.label, len(counted), mapping, partial)
    report.anchors = "from the file" if anchors else ("the model's" if any(k.endswith(".anchors") for k in dst) else "")
    report.skipped = [(k, tuple(src[k].shape), tuple(dst[k].shape)) for k in counted
                      if k in src and k not in mapping and k not in partial and src[k].shape != dst[k].shape]
    report.unused = len({k for k in src if _counted(k)} - set(mapping.values()))
    for i, m in enumerate(model.model):
        keys = [k for k in counted if _row_of(k) == i]
        if not keys:
            continue
        got = [k for k in keys if k in mapping]
        part = [k for k in keys if k in partial]
        kind = getattr(m, "type", type(m).__name__)
        if len(got) == len(keys):
            report.rows_full.append(i)
        elif got or part:
            note = "class outputs new" if part and len(got) + len(part) == len(keys) else f"{len(got) + len(part)}/{len(keys)} tensors"
            report.rows_partial.append((i, kind, note))
        else:
            report.rows_new.append((i, kind))
    return report
