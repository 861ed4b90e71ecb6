"""INT8 post-training quantization of an OpenVINO export with NNCF (`export.py --include openvino --int8`).

Calibrated on the training images of a dataset YAML (the embedded shapes set by default; at most 300 images, all of
them when there are fewer), letterboxed to the export size as the predictor letterboxes them.

What stays in floating point, and why:
- The Global Filter's own operations (in the export form: the DFT matrix products along W and H, the complex
  multiply by the learned filter, the interleave) are frequency-domain arithmetic whose values span orders of
  magnitude: one 8-bit scale per tensor would erase the small coefficients. Its local 3x3 branch and its
  LayerNorms' neighbours are ordinary layers and are quantized. (NNCF would otherwise put FakeQuantize nodes on the
  DFT outputs and on the complex multiply's inputs.)
- The detection head's own operations (the box decode: sigmoid, grid and anchor arithmetic; the anchor-free head's
  DFL), as the engine keeps them; the head's convolutions are quantized.
Activation ranges are each tensor's minimum and maximum over all calibration images (NNCF's default averages the
per-image extremes, which clips every image brighter or darker than the average one): on neu-det that default cost
HorFPN 0.025 mAP50-95 (NNCF's accuracy-aware search traced it to the first convolution, i.e. the image's own
quantizer), the global extremes 0.002, and every style stays within 0.01 of float at the same speed (docs/runtimes.md).

With `--max-drop` NNCF's accuracy control puts layers back in float after quantizing, scoring each candidate with
val.py's own validation on the val split (`val_map`): a model's sensitivity to 8-bit rounding is its own (on BCCD
plain YOLOv5n loses 0.001, a gnConv-rows model 0.011, spread over the whole network; docs/runtimes.md).

The float parts are named by the model's own module paths, which OpenVINO's PyTorch frontend keeps in node names
(`__module.model.5.0.gnconv.dwconv/aten::matmul/MatMul`): a pattern `<module>/.*` takes the module's own operations,
not its sub-modules' (`<module>.dw/...`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch.nn as nn

from models.hornet import GlobalLocalFilter
from utils.export import openvino_xml

MAX_IMAGES = 300  # NNCF's default subset size: more images change the statistics little and cost time


def float_scopes(model: nn.Module) -> list[str]:
    """Node-name patterns of what stays float: each Global Filter's own ops, the head's own ops and its DFL."""
    head = f"model.{len(model.model) - 1}"
    names = [n for n, m in model.named_modules() if isinstance(m, GlobalLocalFilter)] + [head]
    return [rf"__module\.{re.escape(n)}/.*" for n in names] + [rf"__module\.{re.escape(head)}\.dfl/.*"]


def calibration_images(data_yaml, size: tuple[int, int], fraction: float = 1.0, split: str = "train") -> list[np.ndarray]:
    """Images of a split of `data_yaml` (the training images by default) as (1, 3, H, W) float32 RGB arrays in 0-1,
    letterboxed to `size`: `fraction` of them, at most MAX_IMAGES, spread over the set."""
    import cv2
    from ultralytics.data.augment import LetterBox
    from ultralytics.data.utils import IMG_FORMATS

    from utils.data import load_data_config

    data = load_data_config(data_yaml)
    roots = data[split] if isinstance(data[split], list) else [data[split]]
    files = sorted(f for t in roots for f in (Path(t).rglob("*") if Path(t).is_dir() else []) if f.suffix[1:].lower() in IMG_FORMATS)
    if not files:
        raise ValueError(f"--data {data_yaml}: no {split} images to {'calibrate' if split == 'train' else 'validate'} the INT8 export on")
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction {fraction}: must be in (0, 1]")
    n = min(MAX_IMAGES, max(1, round(len(files) * fraction)))
    picked = [files[i * len(files) // n] for i in range(n)]
    letterbox = LetterBox(size, auto=False, stride=32)
    out = []
    for f in picked:
        im = cv2.imread(str(f))
        if im is None:
            continue
        im = letterbox(image=im)[..., ::-1].transpose(2, 0, 1)
        out.append(np.ascontiguousarray(im, dtype=np.float32)[None] / 255)
    return out


def val_map(data_yaml, folder, imgsz: int):
    """NNCF's validation function: (mAP50-95 of a compiled OpenVINO model on the val split of `data_yaml`, its outputs
    on each item NNCF passes). The mAP is val.py's own (batch 1, --img `imgsz`), the model run in the place of the
    export in `folder`; the outputs are what NNCF ranks the layers on (how much each one's 8 bits change them)."""
    import tempfile

    import val

    def validate(compiled, items):
        outputs = [list(compiled(x).values()) for x in items]
        opt = val.parse_opt([])
        opt.data, opt.imgsz, opt.batch_size, opt.workers = str(data_yaml), imgsz, 1, 0
        with tempfile.TemporaryDirectory() as d:
            metrics, _ = val.validate(opt, Path(folder), Path(d) / "val", fmt="openvino", compiled=compiled)
        return metrics["metrics/mAP50-95(B)"], outputs

    return validate


def quantize_openvino(folder, model: nn.Module, data_yaml, size: tuple[int, int], fraction: float, out_folder,
                      max_drop: float | None = None) -> Path:
    """The float OpenVINO export in `folder` quantized to INT8 into `out_folder` (its metadata carried along).

    `max_drop`: NNCF's accuracy control: after quantizing, the layers that change the outputs most go back to float,
    one at a time, until the val split's mAP50-95 (val.py's, at the largest side of `size`) is within `max_drop` of
    the float export's.
    """
    import shutil

    import logging

    import nncf
    import openvino as ov
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    from ultralytics.utils import LOGGER

    nncf.set_log_level(logging.WARNING)  # not a line per operation it leaves out
    images = calibration_images(data_yaml, size, fraction)
    scopes = float_scopes(model)
    gf = " and the Global Filters' frequency-domain operations" if len(scopes) > 2 else ""
    LOGGER.info(f"OpenVINO INT8: calibrating on {len(images)} images of {data_yaml}; kept in float: the detection head's decode{gf}")
    ov_model = ov.Core().read_model(openvino_xml(folder))
    settings = dict(preset=nncf.QuantizationPreset.MIXED, subset_size=len(images),
                    ignored_scope=nncf.IgnoredScope(patterns=scopes, validate=False))
    extremes = nncf.AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    if max_drop is None:
        quantized = nncf.quantize(ov_model, nncf.Dataset(images), advanced_parameters=extremes, **settings)
    else:
        LOGGER.info(f"OpenVINO INT8: accuracy control on the val split of {data_yaml}: at most {max_drop} mAP50-95 below float")
        quantized = nncf.quantize_with_accuracy_control(
            ov_model, nncf.Dataset(images), nncf.Dataset(calibration_images(data_yaml, size, split="val")),
            validation_fn=val_map(data_yaml, folder, max(size)), max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=extremes, **settings)
    kept, total = float_convolutions(quantized)
    named = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
    LOGGER.info(f"OpenVINO INT8: {total - len(kept)} of {total} convolutions in 8 bits" + (f"; kept in float: {named}" if kept else ""))
    out_folder = Path(out_folder)
    tmp = out_folder.with_name(out_folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    stem = out_folder.name.removesuffix("_openvino_model").removesuffix("_int8")  # <stem>_int8_openvino_model/<stem>.xml, the engine's layout
    ov.save_model(quantized, tmp / f"{stem}.xml", compress_to_fp16=False)
    meta = Path(folder) / "metadata.yaml"
    if meta.is_file():
        from ultralytics.utils import YAML

        metadata = YAML.load(meta)
        metadata.setdefault("args", {})["int8"] = True
        YAML.save(tmp / "metadata.yaml", metadata)
    shutil.rmtree(out_folder, ignore_errors=True)
    tmp.rename(out_folder)
    return out_folder


def float_convolutions(ov_model) -> tuple[list[str], int]:
    """(the modules of the convolutions whose weights stayed float, the number of convolutions) of an OpenVINO model.

    A quantized convolution's weights reach it as 8-bit constants (or through a FakeQuantize, before saving): a few
    nodes up its weight input. Its activations may be quantized further up (before a Concat), so they do not tell."""
    convs = [op for op in ov_model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]

    def eight_bit(op) -> bool:
        node = op.input_value(1).get_node()
        for _ in range(4):  # Constant(i8) -> Convert -> Subtract -> Multiply at most
            kind = node.get_type_name()
            if kind == "FakeQuantize" or (kind == "Constant" and node.get_element_type().bitwidth == 8):
                return True
            if kind == "Constant" or not node.inputs():
                return False
            node = node.input_value(0).get_node()
        return False

    return [op.get_friendly_name().split("/")[0].removeprefix("__module.") for op in convs if not eight_bit(op)], len(convs)
