"""export.py: ONNX, TorchScript and OpenVINO exports match PyTorch (HorNet and HorNet-GF models, square and
non-square sizes, dynamic axes; OpenVINO in float32 and in the CPU's reduced precision), carry the metadata
ultralytics' AutoBackend reads, run in detect.py, and give val.py the same mAP as the .pt.

Models are tiny and untrained (yolov5n-hornet / yolov5n-hornet-gf, nc=3, 64-96 px inputs). Outputs are
compared on fresh random inputs, not only on the one export.py checks itself with.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import export
from models.hornet import GlobalLocalFilter
from models.yolo import Model, load_model_yaml, save_checkpoint
from models.exportable import DynamicGlobalFilter, MatmulGlobalFilter
from utils.export import (
    max_diffs,
    onnx_output,
    openvino_output,
    openvino_reduced_precision,
    read_metadata,
    reference_output,
    torchscript_output,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "circle", 1: "square", 2: "triangle"}
TOL = 1e-3
try:
    import openvino  # noqa: F401

    NO_OPENVINO = ""
except ImportError as e:  # a platform without openvino wheels
    NO_OPENVINO = f"the openvino package cannot be imported here ({e}): OpenVINO export is not tested"
needs_openvino = pytest.mark.skipif(bool(NO_OPENVINO), reason=NO_OPENVINO)

STYLES = ["cfg/yolov5n.yaml", "cfg/yolov5n-gnconv.yaml", "cfg/yolov5n-horblock.yaml", "cfg/yolov5n-hornet.yaml",
          "cfg/yolov5n-hornet-gf.yaml", "cfg/yolov5n-horfpn.yaml"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{'hornet': path, 'gf': path} of untrained nc=3 checkpoints, and the models themselves."""
    d = tmp_path_factory.mktemp("export")
    out = {}
    for key, cfg in (("hornet", "cfg/yolov5n-hornet.yaml"), ("gf", "cfg/yolov5n-hornet-gf.yaml")):
        torch.manual_seed(1)
        model = Model(ROOT / cfg, nc=3, verbose=False).eval()
        model.names = dict(NAMES)
        out[key] = (save_checkpoint(d / f"{key}.pt", model), model)
    return out


def copy_to(tmp_path: Path, src: Path) -> Path:
    """A private copy of a checkpoint, so that each test's exports land in its own folder."""
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes())
    return dst


@pytest.mark.parametrize("key", ["hornet", "gf"])
@pytest.mark.parametrize("imgsz", [[64], [64, 96]], ids=["square", "non-square"])
def test_onnx_and_torchscript_match_pytorch(checkpoints, tmp_path, key, imgsz):
    path, model = checkpoints[key]
    weights = copy_to(tmp_path, path)
    results = export.run(weights=weights, include=["onnx", "torchscript"], imgsz=imgsz)
    h, w = imgsz * 2 if len(imgsz) == 1 else imgsz
    assert results["onnx"]["file"] == weights.with_suffix(".onnx") and results["onnx"]["max_diff"] < TOL
    assert results["torchscript"]["file"] == weights.with_suffix(".torchscript")
    for seed in (0, 1):  # fresh inputs, not export.py's own check input
        im = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
        want = reference_output(model, im)
        for got in (onnx_output(weights.with_suffix(".onnx"), im), torchscript_output(weights.with_suffix(".torchscript"), im)):
            assert got.shape == want.shape
            assert np.abs(got - want).max() < TOL, max_diffs(got, want)
    meta = read_metadata(weights.with_suffix(".onnx"))
    assert meta["task"] == "detect" and meta["imgsz"] == str([h, w]) and meta["stride"] == "32" and meta["batch"] == "1"
    assert eval(meta["names"]) == NAMES  # noqa: S307 (a test reading back what it wrote)
    ts_meta = read_metadata(weights.with_suffix(".torchscript"))
    assert ts_meta["imgsz"] == [h, w] and ts_meta["task"] == "detect"


@pytest.mark.parametrize("key", ["hornet", "gf"])
def test_dynamic_export_runs_other_sizes_and_batches(checkpoints, tmp_path, key):
    """--dynamic: one file for every input size; GF models included (their DFT is built in the graph)."""
    import onnx

    path, model = checkpoints[key]
    weights = copy_to(tmp_path, path)
    export.run(weights=weights, include=["onnx", "torchscript"], imgsz=[64], dynamic=True)
    dims = onnx.load(str(weights.with_suffix(".onnx"))).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    for shape in [(2, 3, 96, 64), (1, 3, 128, 160)]:
        im = torch.rand(*shape)
        want = reference_output(model, im)
        for got in (onnx_output(weights.with_suffix(".onnx"), im), torchscript_output(weights.with_suffix(".torchscript"), im)):
            assert got.shape == want.shape and np.abs(got - want).max() < TOL, shape


@pytest.mark.parametrize("cfg", ["yolov5n-gnconv", "yolov5n-horblock", "yolov5n-hornet", "yolov5n-hornet-gf", "yolov5n-horfpn"])
def test_export_forms_equal_the_model(cfg):
    """exportable_model's (B, C, H, W) forms (ChannelNorm, ExportHorBlock, the GF's matmuls) compute the model's
    predictions, fixed-size and dynamic, with layer scales far from 1e-6 so that every branch counts."""
    from models.exportable import exportable_model
    from models.hornet import HorBlock, LayerNorm2d

    torch.manual_seed(0)
    model = Model(ROOT / "cfg" / f"{cfg}.yaml", nc=3, verbose=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, HorBlock):
                m.gamma1.uniform_(0.2, 1.0)
                m.gamma2.uniform_(0.2, 1.0)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        want = model(x)[0]
        for dynamic in (False, True):
            em = exportable_model(model, x, dynamic=dynamic)
            assert not any(type(m) in (HorBlock, LayerNorm2d) for m in em.modules())  # every block in its export form
            got = em(x)
            assert ((got - want).abs().max() / want.abs().max()).item() < 1e-5, dynamic
    assert any(type(m) is HorBlock for m in model.modules()) == (cfg != "yolov5n-gnconv")  # the original is untouched


@pytest.mark.parametrize("size", [(14, 14), (10, 7), (5, 9), (4, 4), (1, 1), (2, 3)])
def test_matmul_global_filter_equals_fft(size):
    torch.manual_seed(0)
    gf = GlobalLocalFilter(16, 7, 4).eval()
    with torch.no_grad():
        gf.complex_weight.normal_()  # far from the 0.02 init, so the filter matters
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        assert (MatmulGlobalFilter(gf, *size)(x) - gf(x)).abs().max() < 1e-4
        assert (DynamicGlobalFilter(gf)(x) - gf(x)).abs().max() < 1e-4


@needs_openvino
@pytest.mark.parametrize("key", ["hornet", "gf"])
@pytest.mark.parametrize("half", [False, True], ids=["f32", "reduced"])
def test_openvino_matches_pytorch(checkpoints, tmp_path, key, half):
    """An OpenVINO folder per export, float32 to TOL; with --half the CPU's reduced precision (bf16 where it has it)."""
    path, model = checkpoints[key]
    weights = copy_to(tmp_path, path)
    results = export.run(weights=weights, include=["openvino"], imgsz=[64, 96], half=half)
    folder = tmp_path / f"{key}_openvino_model"
    assert results["openvino"]["file"] == folder and {p.name for p in folder.iterdir()} == {f"{key}.xml", f"{key}.bin", "metadata.yaml"}
    meta = read_metadata(folder)
    assert meta["imgsz"] == [64, 96] and meta["names"] == NAMES and meta["args"]["half"] is half and meta["args"]["format"] == "openvino"
    tol = export.TOLERANCE_BF16 if half and openvino_reduced_precision() else TOL
    for seed in (0, 1):
        im = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(seed))
        want = reference_output(model, im)
        got = openvino_output(folder, im, half=half)
        diff_boxes, diff_scores = max_diffs(got, want)
        assert got.shape == want.shape and diff_scores < tol and diff_boxes < tol * 96, (diff_boxes, diff_scores)
    if half and openvino_reduced_precision():  # the reduced precision is really used: float32 would match to 1e-4
        assert max_diffs(openvino_output(folder, im, half=True), want)[0] > 1e-3


@needs_openvino
def test_openvino_dynamic_runs_other_sizes(checkpoints, tmp_path):
    path, model = checkpoints["gf"]
    weights = copy_to(tmp_path, path)
    export.run(weights=weights, include=["openvino"], imgsz=[64], dynamic=True)
    for shape in [(2, 3, 96, 64), (1, 3, 128, 160)]:
        im = torch.rand(*shape)
        got, want = openvino_output(tmp_path / "gf_openvino_model", im), reference_output(model, im)
        assert got.shape == want.shape and np.abs(got - want).max() < TOL, shape


def test_exported_files_run_in_detect(checkpoints, tmp_path):
    """detect.py takes each export as it takes the .pt; an OpenVINO export computes in the precision it was made for."""
    import detect

    weights = copy_to(tmp_path, checkpoints["gf"][0])
    formats = ["onnx", "torchscript"] + ([] if NO_OPENVINO else ["openvino"])
    files = export.run(weights=weights, include=formats, imgsz=[64, 96])
    import cv2

    image = tmp_path / "img.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    for fmt in formats:
        p = detect.run(weights=files[fmt]["file"], source=image, project=tmp_path / "runs", device="cpu", imgsz=[64, 96])
        assert p.model.names == NAMES and list(p.imgsz) == [64, 96]
        assert (p.save_dir / "img.jpg").is_file()
    if not NO_OPENVINO:
        xml = files["openvino"]["file"] / "gf.xml"  # the .xml inside the folder is taken too
        for half, want in ((False, "f32"), (True, openvino_reduced_precision() or "f32")):
            p = detect.run(weights=xml, source=image, project=tmp_path / "runs", device="cpu", imgsz=[64, 96], half=half, nosave=True)
            assert p.model.backend.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name() == want


def test_half_on_cpu_exports_float32(checkpoints, tmp_path):
    import onnx

    weights = copy_to(tmp_path, checkpoints["hornet"][0])
    export.run(weights=weights, include=["onnx"], imgsz=[64], half=True)
    elem = onnx.load(str(weights.with_suffix(".onnx"))).graph.input[0].type.tensor_type.elem_type
    assert elem == onnx.TensorProto.FLOAT


def test_bad_weights_and_formats(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        export.run(weights=junk, include=["onnx"], imgsz=[64])
    with pytest.raises(ValueError, match="tflite"):
        export.run(weights=junk, include=["tflite"], imgsz=[64])
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "export.py"), "--weights", str(tmp_path / "none.pt")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "none.pt" in r.stdout + r.stderr


def pseudo_labelled(tmp_path, cfg, conf: float = 0.6):
    """A model whose confident head gives the 6 val images of a generated set its own detections as labels.

    An untrained model scores near 0 mAP on real labels, which would make a comparison empty: with the .pt model's
    own detections (detect.py --save-txt) as labels the .pt scores a high mAP, which an export must reproduce.
    Returns (weights, data YAML)."""
    import shutil

    import yaml

    import detect
    from utils.shapes import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "shapes", n_train=1, n_val=6, imgsz=96, seed=3)
    torch.manual_seed(2)
    # The paper's stem: with it the random backbone behind this confident head gives pseudo-labels that val scores
    # above 0.25 mAP50 (with ConvStem's BatchNorm at init, detect's and val's paddings disagree more); the export of
    # ConvStem itself is checked by the output comparisons above.
    d = load_model_yaml(ROOT / cfg)
    if d["backbone"][0][2] == "ConvStem":
        d["backbone"][0][2] = "HorStem"
    model = Model(d, nc=3, verbose=False)
    model.names = dict(NAMES)
    with torch.no_grad():  # objectness ~1, class scores spread over 0.15..0.8 by the image content
        head = model.model[-1]
        for conv in head.m:
            conv.weight.mul_(30.0)
            b = conv.bias.view(head.na, head.no)
            b[:, 4], b[:, 5:] = 6.0, 0.0
    weights = save_checkpoint(tmp_path / "model.pt", model)
    p = detect.run(weights=weights, source=root / "images" / "val", imgsz=[96], conf_thres=conf, max_det=30,
                   save_txt=True, nosave=True, project=tmp_path / "runs", device="cpu")
    labels = root / "labels" / "val"
    shutil.rmtree(labels)
    shutil.copytree(p.save_dir / "labels", labels)
    assert len(list(labels.glob("*.txt"))) == 6
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/val", "val": "images/val", "names": dict(NAMES)}))
    return weights, data



@pytest.mark.skipif(not (ROOT / "val.py").is_file(), reason="val.py is not in this checkout")
@pytest.mark.parametrize("cfg", ["cfg/yolov5n-hornet.yaml", "cfg/yolov5n-hornet-gf.yaml"])
def test_val_map_of_exports_equals_pt(tmp_path, cfg):
    """val.py gives the same mAP (within 0.01) on the .pt and on each of its exports (dynamic: the same input tensors),
    on labels that are the .pt model's own detections (pseudo_labelled)."""
    import val

    weights, data = pseudo_labelled(tmp_path, cfg)
    # --dynamic: val.py validates .pt models on rectangular batches padded to the stride (96 px images run
    # at 128x128); a dynamic export gets those same input tensors, a fixed-size one is letterboxed to its size
    formats = ["onnx", "torchscript"] + ([] if NO_OPENVINO else ["openvino"])
    files = export.run(weights=weights, include=formats, imgsz=[96], dynamic=True)
    keys = ("metrics/mAP50(B)", "metrics/mAP50-95(B)")
    m_pt = val.run(weights=str(weights), data=str(data), imgsz=96, batch_size=1, workers=0, project=str(tmp_path / "val"))
    assert m_pt["metrics/mAP50(B)"] > 0.25  # a comparison worth making (val's padded batches differ from detect's)
    for fmt in formats:
        m = val.run(weights=str(files[fmt]["file"]), data=str(data), imgsz=96, batch_size=1, workers=0, project=str(tmp_path / "val"))
        for k in keys:
            assert abs(m[k] - m_pt[k]) <= 0.01, (fmt, k, m_pt[k], m[k])


@needs_openvino
@pytest.mark.parametrize("cfg", STYLES)
def test_int8_export_keeps_the_map_and_the_global_filter_float(tmp_path, cfg):
    """export.py --int8 for every style: no FakeQuantize feeds a Global Filter's own operations (DFT products, complex
    multiply) or the head's decode, the convolutions are quantized, the image's quantizer spans the calibration images, and the INT8 folder validates in val.py: on the
    float export's own detections (both at the 96x96 input) it keeps mAP50 above 0.1.

    Not asserted here: INT8 within 0.02 mAP of float. These are untrained networks with a head scaled 30x to make
    confident pseudo-labels, which amplifies quantization error: measured from +0.05 to -0.59 mAP50 depending on the
    style (docs/export.md#int8). That target belongs to trained models (benchmarks/bench_runtimes.py)."""
    import val
    from utils.export import openvino_xml
    from utils.quantize import calibration_images

    weights, data = pseudo_labelled(tmp_path, cfg, conf=0.3)
    folder = export.run(weights=weights, include=["openvino"], imgsz=[96], int8=True, data=data)["openvino"]["file"]
    assert folder.name == "model_int8_openvino_model" and openvino_xml(folder).name == "model.xml"
    fed = fake_quantized_inputs(openvino_xml(folder))
    assert any("aten::_convolution" in name for name in fed)
    head = f"__module.model.{len(load_model_yaml(ROOT / cfg)['backbone']) + len(load_model_yaml(ROOT / cfg)['head']) - 1}/"
    fed = {n: v for n, v in fed.items() if "ShapeOf" not in n}  # reading a tensor's shape is no arithmetic on it
    assert not [n for n in fed if re.search(r"gnconv\.dwconv/", n) and "gf" in cfg] and not [n for n in fed if n.startswith(head)]
    images = calibration_images(data, (96, 96))  # the image's quantizer spans all of them, not the average image
    low, high = image_quantizer_range(openvino_xml(folder))
    assert abs(low - min(i.min() for i in images)) < 0.01 and abs(high - max(i.max() for i in images)) < 0.01, (low, high)
    args = dict(data=str(data), imgsz=96, batch_size=1, workers=0, project=str(tmp_path / "val"))
    square = export.run(weights=weights, include=["openvino"], imgsz=[96])["openvino"]["file"]  # float, same input
    m_float = val.run(weights=str(square), **args)
    m_int8 = val.run(weights=str(folder), **args)
    assert m_float["metrics/mAP50(B)"] > 0.25, m_float
    assert m_int8["metrics/mAP50(B)"] > 0.1, (m_float["metrics/mAP50(B)"], m_int8["metrics/mAP50(B)"])


@needs_openvino
def test_int8_accuracy_control(tmp_path):
    """--max-drop (NNCF's accuracy control).

    Its candidates are scored by val.py's own validation: the validation function, given an INT8 model compiled in
    memory, returns the mAP50-95 val.py reports for that model's folder (not the float export it stands in for), and
    the model's outputs on each item NNCF passes (what it ranks layers on).
    The drop is in mAP50-95 points: allowed just over the plain INT8 export's loss, accuracy control keeps every
    convolution in 8 bits (as a relative drop it would have to revert some) and val.py scores it as the plain one.
    Reverting layers is NNCF's; on pseudo-labelled networks it reverts most of them, slowly (docs/export.md#int8)."""
    import openvino as ov

    import val
    from utils.export import compile_openvino, openvino_xml
    from utils.quantize import calibration_images, float_convolutions, val_map

    weights, data = pseudo_labelled(tmp_path, "cfg/yolov5n-gnconv.yaml", conf=0.3)
    args = dict(data=str(data), imgsz=96, batch_size=1, workers=0, project=str(tmp_path / "val"))

    def exported(**kw):
        folder = export.run(weights=weights, include=["openvino"], imgsz=[96], **kw)["openvino"]["file"]
        return val.run(weights=str(folder), **args)["metrics/mAP50-95(B)"], folder

    m_float, float_folder = exported()
    m_plain, plain = exported(int8=True, data=data, output=tmp_path / "plain")

    items = calibration_images(data, (96, 96), split="val")
    score, outputs = val_map(data, float_folder, 96)(compile_openvino(plain), items)
    assert score == pytest.approx(m_plain, abs=1e-9) and abs(m_plain - m_float) > 1e-3, (score, m_plain, m_float)
    assert len(outputs) == len(items) == 6 and outputs[0][0].shape[:2] == (1, 4 + 3)  # boxes and 3 class scores per anchor

    drop = m_float - m_plain
    assert drop > 0.01, (m_float, m_plain)  # as a fraction of m_float (< 0.5) it is over twice as large
    m_controlled, controlled = exported(int8=True, data=data, output=tmp_path / "controlled", max_drop=drop + 0.002)
    assert m_controlled == pytest.approx(m_plain, abs=1e-9)
    assert float_convolutions(ov.Core().read_model(openvino_xml(controlled))) == ([], 68)


@pytest.mark.parametrize("flags, said", [(["--include", "openvino", "--max-drop", "0.01"], "--max-drop 0.01: is for --int8 exports"),
                                          (["--include", "openvino", "--int8", "--max-drop", "-1"], "--max-drop -1.0: must be 0 or more")])
def test_max_drop_misuse_is_one_line(tmp_path, flags, said):
    weights = save_checkpoint(tmp_path / "x.pt", Model(ROOT / "cfg" / "yolov5n.yaml", nc=2, verbose=False))
    r = subprocess.run([sys.executable, str(ROOT / "export.py"), "--weights", str(weights), *flags],
                       capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out and said in out, out[-500:]
    assert not list(tmp_path.glob("*openvino_model"))  # refused before anything is written


def test_int8_with_another_format_is_one_line(tmp_path):
    weights = save_checkpoint(tmp_path / "x.pt", Model(ROOT / "cfg" / "yolov5n.yaml", nc=2, verbose=False))
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "export.py"), "--weights", str(weights), "--include", "onnx", "--int8"],
                       capture_output=True, text=True, env=env, timeout=120)
    said = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in said and "--int8: INT8 quantization is for OpenVINO exports" in said


def fake_quantized_inputs(xml) -> dict[str, list[str]]:
    """{node name: names of the FakeQuantize nodes feeding it} of an OpenVINO model file."""
    import openvino as ov

    fed = {}
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        for port in op.inputs():
            source = port.get_source_output().get_node()
            if source.get_type_name() == "FakeQuantize":
                fed.setdefault(op.get_friendly_name(), []).append(source.get_friendly_name())
    return fed


def image_quantizer_range(xml) -> tuple[float, float]:
    """(low, high) of the FakeQuantize that reads the model's input image in an OpenVINO model file."""
    import openvino as ov

    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() == "Parameter":
            return float(op.input_value(1).get_node().get_data().min()), float(op.input_value(2).get_node().get_data().max())
    raise AssertionError(f"{xml}: no quantizer on the input image")
