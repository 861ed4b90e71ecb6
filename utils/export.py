"""Export helpers: an exportable form of the model, ultralytics-style metadata, ONNX/TorchScript/OpenVINO writers, checks.

The ONNX file is written by the ultralytics exporter's own `torch2onnx` (the TorchScript-based
`torch.onnx.export`), the TorchScript file by its `torch2torchscript`, the OpenVINO folder by its
`torch2openvino`. All carry the metadata that ultralytics' `AutoBackend` reads back (stride, names,
imgsz, task, batch, args...), so the exported models run in `detect.py`, `val.py` and any ultralytics
predictor/validator as they are.

OpenVINO runs a model in the precision it is compiled with, and its CPU plugin picks bfloat16 by itself on
CPUs that have it (AVX512-BF16, AMX); ultralytics' backend compiles without a precision hint. So the
precision asked for at export (float32, or the CPU's reduced precision with --half) is recorded in the
metadata (`args.half`), and `run_in_export_precision` recompiles a loaded float32 export with the f32 hint.

The Global Filter (GF) computes `irfft2(rfft2(x) * filter)`, and the TorchScript-based ONNX exporter
refuses `aten::fft_rfft2`. For a fixed input size that whole step is a linear map, so `MatmulGlobalFilter`
computes it with real matrix products (the DFT matrices) built from the layer's own weights: the same
numbers, in operators every runtime has.
"""

from __future__ import annotations

import math
import shutil
from copy import deepcopy
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from models.heads import AnchorDetect
from models.hornet import GlobalLocalFilter
from ultralytics import __version__ as ULTRALYTICS_VERSION
from ultralytics.nn.modules import Detect
from ultralytics.utils import LOGGER


def filter_along_h(xr, xi, ch, sh, gr, gi):
    """The middle of the Global Filter as real matrix products: the FFT along H of a spectrum that is already
    transformed along W (real part xr, imaginary xi), times the complex filter (gr + i gi), and the inverse FFT
    along H. `ch`, `sh` are the (H, H) cosine and sine DFT matrices, normalised. Returns (real, imaginary)."""
    yr = torch.matmul(ch, xr) + torch.matmul(sh, xi)
    yi = torch.matmul(ch, xi) - torch.matmul(sh, xr)
    zr = yr * gr - yi * gi
    zi = yr * gi + yi * gr
    return torch.matmul(ch, zr) - torch.matmul(sh, zi), torch.matmul(ch, zi) + torch.matmul(sh, zr)


class MatmulGlobalFilter(nn.Module):
    """The Global Filter of a GlobalLocalFilter for one fixed input size, with the 2-D DFT as matrix products.

    In: (B, C, H, W) with the (H, W) it was built for. Out: (B, C, H, W), equal (to float32 rounding) to
    the GlobalLocalFilter it was built from. `dw`, `pre_norm` and `post_norm` are that layer's modules;
    the spectral filter (resized to H x W as the layer does) and the DFT matrices are fixed buffers.
    """

    def __init__(self, gf: GlobalLocalFilter, height: int, width: int):
        super().__init__()
        self.dw, self.pre_norm, self.post_norm = gf.dw, gf.pre_norm, gf.post_norm
        self.size = (height, width)
        with torch.no_grad():
            filt = gf.spectral_filter(height, width).detach().to(torch.complex128).cpu()  # (C, H, W//2 + 1)
        device = gf.complex_weight.device
        wr = width // 2 + 1
        h, m = torch.arange(height, dtype=torch.float64), torch.arange(height, dtype=torch.float64)
        angle_h = 2 * math.pi * torch.outer(h, m) / height
        n, k = torch.arange(width, dtype=torch.float64), torch.arange(wr, dtype=torch.float64)
        angle_w = 2 * math.pi * torch.outer(n, k) / width  # (W, Wr)
        # irfft weights: the bins between DC and Nyquist stand for two conjugate bins of the full spectrum
        twice = torch.full((wr,), 2.0, dtype=torch.float64)
        twice[0] = 1.0
        if width % 2 == 0:
            twice[-1] = 1.0
        norm_h, norm_w = 1 / math.sqrt(height), 1 / math.sqrt(width)  # norm="ortho" both ways
        buffers = {
            "ch": torch.cos(angle_h) * norm_h,  # (H, H), symmetric
            "sh": torch.sin(angle_h) * norm_h,
            "fw": torch.cat((torch.cos(angle_w), -torch.sin(angle_w)), 1) * norm_w,  # (W, 2 Wr): real | imag of rfft
            "bc": (torch.cos(angle_w) * twice).T * norm_w,  # (Wr, W)
            "bs": (torch.sin(angle_w) * twice).T * norm_w,
            "gr": filt.real,  # (C, H, Wr)
            "gi": filt.imag,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float().contiguous().to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_norm(x)
        local, glob = x.chunk(2, dim=1)
        local = self.dw(local)
        B, C, H, W = glob.shape
        if not torch.jit.is_tracing() and (H, W) != self.size:  # while tracing, shapes are the example's
            raise ValueError(f"this exported Global Filter was built for a {self.size} input, got {(H, W)}")
        # float32 throughout, as the FFT form runs it (buffers may have been halved with the model)
        ch, sh, fw, bc, bs, gr, gi = (t.float() for t in (self.ch, self.sh, self.fw, self.bc, self.bs, self.gr, self.gi))
        xr, xi = torch.matmul(glob.float(), fw).chunk(2, dim=-1)  # rfft along W
        ur, ui = filter_along_h(xr, xi, ch, sh, gr, gi)
        glob = torch.matmul(ur, bc) - torch.matmul(ui, bs)  # inverse rfft along W
        x = torch.stack((local, glob.to(local.dtype)), dim=2).reshape(B, 2 * C, H, W)
        return self.post_norm(x)


class DynamicGlobalFilter(nn.Module):
    """The Global Filter of a GlobalLocalFilter for any input size, with the DFT and the filter resize as matrix products.

    In: (B, C, H, W), any H and W. Out: (B, C, H, W), equal (to float32 rounding) to the GlobalLocalFilter
    it was built from. The DFT matrices and the bilinear (align_corners=True) resize of the complex filter
    are built in the graph from the input's shape with arange/cos/sin, so a traced export (ONNX with
    dynamic axes, TorchScript) keeps working at every size. Slower than MatmulGlobalFilter, which has them
    as constants for one size.
    """

    def __init__(self, gf: GlobalLocalFilter):
        super().__init__()
        self.dw, self.pre_norm, self.post_norm = gf.dw, gf.pre_norm, gf.post_norm
        self.register_buffer("weight", gf.complex_weight.detach().float().permute(3, 0, 1, 2).contiguous(), persistent=False)

    @staticmethod
    def resize_matrix(n_out: torch.Tensor, n_in: int) -> torch.Tensor:
        """(n_out, n_in) bilinear weights with align_corners=True: output i samples input i * (n_in-1)/(n_out-1)."""
        i = torch.arange(n_out, dtype=torch.float32) if not isinstance(n_out, torch.Tensor) else n_out
        last = (i[-1:]).clamp(min=1.0)  # n_out - 1, at least 1 (a single output row samples input 0)
        pos = i[:, None] * ((n_in - 1) / last)
        j = torch.arange(n_in, dtype=torch.float32)[None, :]
        return (1 - (pos - j).abs()).clamp(min=0.0)

    @staticmethod
    def dft(a: torch.Tensor, b: torch.Tensor, n: torch.Tensor):
        """(cos, sin) of 2 pi a b / n for integer index vectors a, b; the product is reduced mod n first (exact angles)."""
        k = torch.remainder(a[:, None] * b[None, :], n).to(torch.float32)
        angle = k * (2 * math.pi) / n.to(torch.float32)
        return torch.cos(angle), torch.sin(angle)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_norm(x)
        local, glob = x.chunk(2, dim=1)
        local = self.dw(local)
        B, C, H, W = glob.shape
        hh = torch.arange(H, device=x.device)  # index vectors: their lengths carry the (dynamic) sizes
        ww = torch.arange(W, device=x.device)
        kk = ww[: W // 2 + 1]  # rfft bins 0..W//2
        n_h, n_w = hh[-1:] + 1, ww[-1:] + 1
        # the complex filter resized to (H, W//2 + 1), as GlobalLocalFilter.spectral_filter does
        rh = self.resize_matrix(hh.to(torch.float32), self.weight.shape[2])  # (H, h)
        rw = self.resize_matrix(kk.to(torch.float32), self.weight.shape[3])  # (Wr, w)
        filt = torch.matmul(torch.matmul(rh, self.weight.float()), rw.T)  # (2, C, H, Wr), float32 as the FFT form
        gr, gi = filt[0], filt[1]
        ch, sh = self.dft(hh, hh, n_h)
        cw, sw = self.dft(ww, kk, n_w)  # (W, Wr)
        norm_h, norm_w = torch.rsqrt(n_h.to(torch.float32)), torch.rsqrt(n_w.to(torch.float32))
        ch, sh, cw, sw = ch * norm_h, sh * norm_h, cw * norm_w, sw * norm_w
        twice = torch.where((kk == 0) | (2 * kk == n_w), 1.0, 2.0).to(torch.float32)  # irfft: conjugate pairs count twice
        g = glob.to(torch.float32)
        xr, xi = torch.matmul(g, cw), -torch.matmul(g, sw)  # rfft along W
        ur, ui = filter_along_h(xr, xi, ch, sh, gr, gi)
        glob = torch.matmul(ur, (cw * twice).T) - torch.matmul(ui, (sw * twice).T)  # inverse rfft along W
        x = torch.stack((local, glob.to(local.dtype)), dim=2).reshape(B, 2 * C, H, W)
        return self.post_norm(x)


def has_global_filter(model: nn.Module) -> bool:
    """True when the model holds a Global Filter (its export size is then fixed)."""
    return any(isinstance(m, GlobalLocalFilter) for m in model.modules())


def exportable_model(model: nn.Module, im: torch.Tensor, dynamic: bool = False) -> nn.Module:
    """A copy of `model` ready to trace on inputs shaped like `im`: eval, fused, head in export mode, GF as matmuls.

    In: a detection Model, an example input (B, 3, H, W), and whether the export takes any input size.
    Out: a new module whose forward returns only the predictions (B, 4 + nc, N); the original model is
    not touched. Global Filters become MatmulGlobalFilter (fixed to the sizes `im` gives them) or, when
    `dynamic`, DynamicGlobalFilter (any size).
    """
    model = deepcopy(model).float().eval()
    if hasattr(model, "fuse"):
        model = model.fuse(verbose=False)
    for p in model.parameters():
        p.requires_grad = False
    for m in model.modules():
        if isinstance(m, (AnchorDetect, Detect)):
            m.export = True  # instance attribute: other models in this process keep returning (y, raw)
            m.format = "onnx"
    sizes = {}
    gfs = [m for m in model.modules() if isinstance(m, GlobalLocalFilter)]
    if gfs and dynamic:
        replace = {m: DynamicGlobalFilter(m) for m in gfs}
    elif gfs:  # learn each Global Filter's input size at this export size
        hooks = [m.register_forward_pre_hook(lambda m, x: sizes.__setitem__(m, tuple(x[0].shape[-2:]))) for m in gfs]
        with torch.no_grad():
            model(im)
        for h in hooks:
            h.remove()
        replace = {m: MatmulGlobalFilter(m, *sizes[m]) for m in gfs}
    if gfs:
        for parent in list(model.modules()):
            for name, child in parent.named_children():
                if child in replace:
                    setattr(parent, name, replace[child])
    return model


def export_metadata(model: nn.Module, imgsz, batch: int, dynamic: bool, half: bool, fmt: str, weights) -> dict:
    """The metadata ultralytics' exporter writes and AutoBackend reads (stride, task, names, imgsz, batch, args...)."""
    names = dict(getattr(model, "names", {}) or {})
    return {
        "description": f"HorNet-YOLOv5 {Path(str(getattr(model, 'yaml', {}).get('yaml_file', weights))).stem} exported from {Path(weights).name}",
        "author": "HorNet-YOLOv5",
        "date": datetime.now().astimezone().isoformat(),
        "version": ULTRALYTICS_VERSION,
        "stride": int(max(int(model.stride.max()), 32)),
        "task": "detect",
        "head": type(model.model[-1]).__name__,
        "batch": int(batch),
        "imgsz": [int(imgsz[0]), int(imgsz[1])],
        "names": {int(k): str(v) for k, v in names.items()},
        "args": {"batch": int(batch), "half": bool(half), "dynamic": bool(dynamic), "nms": False, "format": fmt},
        "channels": int(getattr(model, "yaml", {}).get("channels", 3)),
        "end2end": False,
    }


def export_torchscript(model: nn.Module, im: torch.Tensor, file, metadata: dict) -> Path:
    """Trace `model` (an exportable_model) on `im` and write it with the metadata as `extra/config.txt`."""
    from ultralytics.utils.export.torchscript import torch2torchscript

    return Path(torch2torchscript(model, im, file, metadata=metadata))


def export_onnx(model: nn.Module, im: torch.Tensor, file, metadata: dict, opset: int | None = None,
                dynamic: bool = False, simplify: bool = False) -> Path:
    """Write `model` (an exportable_model) as ONNX with the metadata in `metadata_props`.

    `dynamic`: batch, height and width dynamic (a Global Filter model must then come from
    exportable_model(..., dynamic=True)). `simplify` runs onnxslim, or onnxsim if that is what is installed.
    """
    import onnx
    from ultralytics.utils.export.engine import best_onnx_opset, torch2onnx

    opset = opset or best_onnx_opset(onnx)
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}}
    LOGGER.info(f"ONNX: exporting with torch {torch.__version__}, onnx {onnx.__version__}, opset {opset}...")
    torch2onnx(model, im, str(file), opset=opset, input_names=["images"], output_names=["output0"], dynamic=axes)
    proto = onnx.load(str(file))
    onnx.checker.check_model(proto)
    if simplify:
        proto = simplify_onnx(proto)
    for k, v in metadata.items():  # str() of dicts/lists: AutoBackend parses them back with literal_eval
        meta = proto.metadata_props.add()
        meta.key, meta.value = k, str(v)
    if getattr(proto, "ir_version", 0) > 10:  # what the ultralytics exporter does, for older onnxruntime builds
        proto.ir_version = 10
    onnx.save(proto, str(file))
    return Path(file)


def export_openvino(model: nn.Module, im: torch.Tensor, folder, metadata: dict, dynamic: bool = False) -> Path:
    """Write `model` (an exportable_model) as an OpenVINO folder: `<name>.xml` and `.bin` (float32 weights) and
    `metadata.yaml`, the layout ultralytics' exporter writes. A previous folder of that name is replaced whole.

    `dynamic`: any batch and image size (a Global Filter model must then come from exportable_model(..., dynamic=True)).
    """
    import openvino as ov
    from ultralytics.utils import YAML
    from ultralytics.utils.export.openvino import torch2openvino

    folder = Path(folder)
    ov_model = torch2openvino(model, im, dynamic=dynamic, prefix="OpenVINO:")
    tmp = folder.with_name(folder.name + ".tmp")  # written aside, swapped in whole: a failed export leaves the old one
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ov.save_model(ov_model, tmp / f"{folder.name.removesuffix('_openvino_model')}.xml", compress_to_fp16=False)
    YAML.save(tmp / "metadata.yaml", metadata)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def runtime_reason(e: BaseException) -> str:
    """One line saying why a runtime refused a model: its first line that is not an 'Exception from <source file>' frame."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith("Exception from ")]
    return (reasons or lines or [type(e).__name__])[0][:200]


def export_path(weights) -> Path:
    """The path AutoBackend takes for `weights`: an OpenVINO export's folder when given the .xml inside it."""
    path = Path(weights)
    return path.parent if path.suffix == ".xml" and path.parent.name.endswith("_openvino_model") else path


def openvino_xml(path) -> Path:
    """The model file of an OpenVINO export: `path` itself if it is the .xml, else the one .xml in the folder."""
    path = Path(path)
    found = [path] if path.suffix == ".xml" else sorted(path.glob("*.xml"))
    if not found:
        raise FileNotFoundError(f"{path}: no OpenVINO model (.xml) in this folder")
    return found[0]


def openvino_reduced_precision() -> str | None:
    """The precision OpenVINO's CPU plugin runs in by default here ('bf16', 'f16'), or None when that is float32."""
    import openvino as ov

    precision = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    return None if precision == "f32" else precision


def compile_openvino(path, half: bool = False, device: str = "CPU", threads: int | None = None):
    """The OpenVINO export at `path` compiled for latency: in float32, or with `half` in the device's default
    (reduced where the hardware has it) precision; on `threads` CPU threads when given."""
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if not half:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(core.read_model(openvino_xml(path)), device, config)


def run_in_export_precision(model, weights, half: bool = False) -> None:
    """Make an AutoBackend that runs an OpenVINO export on the CPU compute in float32, unless the export was made
    with --half or `half` is asked for now; other formats and devices are left as they are.

    ultralytics' backend compiles without a precision hint, which on a CPU with bfloat16 means bfloat16.
    """
    backend = getattr(model, "backend", None)
    if type(backend).__name__ != "OpenVINOBackend" or not hasattr(backend, "ov_compiled_model"):
        return
    if half or (backend.metadata.get("args") or {}).get("half"):
        return
    if list(backend.ov_compiled_model.get_property("EXECUTION_DEVICES")) == ["CPU"]:
        backend.ov_compiled_model = compile_openvino(weights, half=False)


def simplify_onnx(proto):
    """The graph simplified by onnxslim or onnxsim, whichever is installed; unchanged (with a message) if neither."""
    try:
        import onnxslim

        LOGGER.info(f"ONNX: simplifying with onnxslim {onnxslim.__version__}...")
        return onnxslim.slim(proto)
    except ImportError:
        pass
    try:
        import onnxsim

        LOGGER.info(f"ONNX: simplifying with onnxsim {onnxsim.__version__}...")
        simplified, ok = onnxsim.simplify(proto)
        if ok:
            return simplified
        LOGGER.warning("ONNX: onnxsim could not validate the simplified model, keeping the original graph")
        return proto
    except ImportError:
        LOGGER.warning("ONNX: --simplify needs onnxslim or onnxsim (pip install onnxslim); exporting without simplifying")
        return proto


def onnx_output(file, im: torch.Tensor) -> np.ndarray:
    """onnxruntime's output (B, 4 + nc, N) for `file` on `im` (CPU provider), float32 numpy."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    x = im.detach().cpu().numpy()
    return session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float32)


def openvino_output(path, im: torch.Tensor, half: bool = False) -> np.ndarray:
    """The OpenVINO export's output (B, 4 + nc, N) on `im` (CPU, float32 or with `half` the reduced precision)."""
    compiled = compile_openvino(path, half=half)
    return np.asarray(compiled(im.detach().cpu().float().numpy())[0], dtype=np.float32)


def torchscript_output(file, im: torch.Tensor) -> np.ndarray:
    """The TorchScript `file`'s output (B, 4 + nc, N) on `im`, float32 numpy."""
    ts = torch.jit.load(str(file), map_location=im.device)
    with torch.no_grad():
        y = ts(im)
    return (y[0] if isinstance(y, (list, tuple)) else y).float().cpu().numpy()


def max_diffs(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max |diff| over the 4 box rows, in pixels; max |diff| over the score rows) of two (B, 4 + nc, N) arrays."""
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return float(d[:, :4].max()), float(d[:, 4:].max())


def reference_output(model: nn.Module, im: torch.Tensor) -> np.ndarray:
    """The original model's predictions (B, 4 + nc, N) on `im`, float32, as numpy."""
    model = deepcopy(model).float().cpu().eval()
    with torch.no_grad():
        y = model(im.cpu().float())
    return (y[0] if isinstance(y, (list, tuple)) else y).numpy()


def read_metadata(file) -> dict:
    """The metadata of an exported file as AutoBackend reads it (for checks and tests)."""
    from ultralytics.nn.backends.base import BaseBackend

    return BaseBackend.read_metadata(file)


__all__ = (
    "DynamicGlobalFilter",
    "MatmulGlobalFilter",
    "exportable_model",
    "export_path",
    "runtime_reason",
    "export_metadata",
    "compile_openvino",
    "export_onnx",
    "export_openvino",
    "export_torchscript",
    "has_global_filter",
    "max_diffs",
    "onnx_output",
    "openvino_output",
    "openvino_reduced_precision",
    "openvino_xml",
    "run_in_export_precision",
    "reference_output",
    "torchscript_output",
    "read_metadata",
)
