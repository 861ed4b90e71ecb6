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


def calibration_images(data_yaml, size: tuple[int, int], fraction: float = 1.0) -> list[np.ndarray]:
    """The training images of `data_yaml` as (1, 3, H, W) float32 RGB arrays in 0-1, letterboxed to `size`."""
    import cv2
    from ultralytics.data.augment import LetterBox
    from ultralytics.data.utils import IMG_FORMATS

    from utils.data import load_data_config

    data = load_data_config(data_yaml)
    train = data["train"] if isinstance(data["train"], list) else [data["train"]]
    files = sorted(f for t in train for f in (Path(t).rglob("*") if Path(t).is_dir() else []) if f.suffix[1:].lower() in IMG_FORMATS)
    if not files:
        raise ValueError(f"--data {data_yaml}: no training images to calibrate the INT8 export on")
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction {fraction}: must be in (0, 1]")
    n = min(MAX_IMAGES, max(1, round(len(files) * fraction)))
    picked = [files[i * len(files) // n] for i in range(n)]  # spread over the set
    letterbox = LetterBox(size, auto=False, stride=32)
    out = []
    for f in picked:
        im = cv2.imread(str(f))
        if im is None:
            continue
        im = letterbox(image=im)[..., ::-1].transpose(2, 0, 1)
        out.append(np.ascontiguousarray(im, dtype=np.float32)[None] / 255)
    return out


def quantize_openvino(folder, model: nn.Module, data_yaml, size: tuple[int, int], fraction: float, out_folder) -> Path:
    """The float OpenVINO export in `folder` quantized to INT8 into `out_folder` (its metadata carried along)."""
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
    extremes = nncf.AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    quantized = nncf.quantize(ov_model, nncf.Dataset(images), preset=nncf.QuantizationPreset.MIXED, subset_size=len(images),
                              ignored_scope=nncf.IgnoredScope(patterns=scopes, validate=False), advanced_parameters=extremes)
    out_folder = Path(out_folder)
    tmp = out_folder.with_name(out_folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ov.save_model(quantized, tmp / openvino_xml(folder).name.replace("_openvino_model", ""), compress_to_fp16=False)
    meta = Path(folder) / "metadata.yaml"
    if meta.is_file():
        from ultralytics.utils import YAML

        metadata = YAML.load(meta)
        metadata.setdefault("args", {})["int8"] = True
        YAML.save(tmp / "metadata.yaml", metadata)
    shutil.rmtree(out_folder, ignore_errors=True)
    tmp.rename(out_folder)
    return out_folder
