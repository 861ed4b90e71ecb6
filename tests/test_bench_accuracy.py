"""benchmarks/bench_accuracy.py without training: run keys, skipping finished runs, the tables' means and ratios."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_accuracy as bench  # noqa: E402


def store(opt, model, seed, tag, map50, map5095, hyp_changes=None):
    recipe = yaml.safe_load((ROOT / "data/hyps/hyp.hornet.yaml").read_text()) if "-" in model else \
        yaml.safe_load((ROOT / "data/hyps/hyp.scratch-adamw.yaml").read_text())
    f = bench.result_file(opt, model, seed, tag)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"mAP50": map50, "mAP50-95": map5095, "s_per_epoch": 5.0, "epochs": 40,
                             "hyp": {**recipe, **(hyp_changes or {})}}))


@pytest.fixture
def opt(tmp_path):
    data = tmp_path / "raccoon" / "data.yaml"
    data.parent.mkdir()
    data.write_text("train: images\nval: images\nnames: {0: raccoon}\n")
    return bench.parse_opt(["--data", str(data), "--seeds", "0", "1", "--results", str(tmp_path / "results"),
                            "--project", str(tmp_path / "runs"), "--report"])


def test_run_key_names_data_budget_variant_seed(opt):
    assert str(bench.run_key(opt, "yolov5s-hornet", 1)) == "raccoon/e40-i160/yolov5s-hornet/seed1"
    assert str(bench.run_key(opt, "cfg/yolov5s.yaml", 0, tag="lr2e-3")) == "raccoon/e40-i160/yolov5s-lr2e-3/seed0"


def test_finished_run_is_skipped(opt):
    store(opt, "yolov5s", 0, "", 0.5, 0.2)
    assert bench.train_one(opt, "yolov5s", 0, threads=1).startswith("done before")


def test_table_means_spans_and_ratio_to_plain_yolov5(opt):
    store(opt, "yolov5s", 0, "", 0.50, 0.20)
    store(opt, "yolov5s", 1, "", 0.40, 0.10)
    store(opt, "yolov5s-horfpn", 0, "", 0.70, 0.30)
    store(opt, "yolov5s-horfpn", 1, "", 0.60, 0.15)
    lines = bench.table(opt, ["yolov5s", "yolov5s-horfpn", "yolov5s-gnconv"]).splitlines()
    assert "| yolov5s | 2 | 0.450 (0.400-0.500) | 0.150 (0.100-0.200) | 1.00x | 5.0 |" in lines
    assert "| yolov5s-horfpn | 2 | 0.650 (0.600-0.700) | 0.225 (0.150-0.300) | 1.50x | 5.0 |" in lines
    assert "| yolov5s-gnconv | 0 | | | | |" in lines  # not run yet: listed, no numbers


def test_all_variants_split_model_and_tag_and_name_the_changes(opt):
    store(opt, "yolov5s", 0, "", 0.5, 0.2)
    store(opt, "yolov5s-hornet-gf", 0, "lr2e-3", 0.6, 0.3, {"lr0": 0.002})
    store(opt, "yolov5s", 0, "ema", 0.5, 0.2, {"ema_decay": 0.99, "ema_tau": 2000})  # keys the recipe file leaves out
    opt.all = True
    text = bench.table(opt, [])
    assert "| yolov5s-hornet-gf | lr2e-3 | lr0 0.002 | 1 | 0.600 (0.600-0.600) | 0.300 (0.300-0.300) | 1.50x | 5.0 |" in text
    assert "| yolov5s | ema | ema_decay 0.99 | 1 |" in text  # ema_tau 2000 is the default: not a change
    assert "| yolov5s | (recipe) | - | 1 |" in text


def test_set_needs_a_tag(opt):
    opt.report, opt.set = False, ["lr0=0.002"]
    with pytest.raises(SystemExit, match="--tag"):
        bench.main(opt)


def test_ablation_yaml_is_named_as_the_change(opt):
    store(opt, "yolov5n", 0, "", 0.5, 0.2)
    store(opt, "benchmarks/ablations/yolov5n-hornet-ln.yaml", 0, "", 0.6, 0.1)
    opt.all = True
    text = bench.table(opt, [])
    assert "| yolov5n-hornet | ln | benchmarks/ablations/yolov5n-hornet-ln.yaml | 1 | 0.600 (0.600-0.600) | 0.100 (0.100-0.100) | 0.50x |" in text


@pytest.mark.parametrize("cfg", sorted((ROOT / "benchmarks/ablations").glob("*.yaml")), ids=lambda p: p.stem)
def test_ablation_yamls_build_and_change_rows_of_their_cfg_model(cfg):
    import torch

    from models.yolo import Model

    base = ROOT / "cfg" / f"{'-'.join(cfg.stem.split('-')[:-1])}.yaml"  # yolov5n-hornet-ln -> cfg/yolov5n-hornet.yaml
    model, plain = Model(cfg, nc=1, verbose=False), Model(base, nc=1, verbose=False)
    out = model.eval()(torch.rand(1, 3, 64, 96))
    assert out[0].shape[1] == plain.eval()(torch.rand(1, 3, 64, 96))[0].shape[1]  # same head, same candidates
    assert [type(m).__name__ for m in model.model] != [type(m).__name__ for m in plain.model]


def test_summary_spans_sets_and_compares_each_style_at_equal_cost(opt, tmp_path):
    store(opt, "yolov5n", 0, "", 0.5, 0.20)
    store(opt, "yolov5n", 1, "", 0.5, 0.30)
    store(opt, "yolov5n-w29", 0, "", 0.5, 0.20)
    store(opt, "yolov5n-hornet", 0, "", 0.5, 0.30)
    other = bench.parse_opt(["--data", str(tmp_path / "bccd" / "data.yaml"), "--results", opt.results, "--epochs", "20", "--img", "224"])
    store(other, "yolov5n", 0, "", 0.5, 0.40)
    opt.summary, opt.runs, opt.models = ["raccoon/e40-i160", "bccd/e20-i224"], 1, ["yolov5n", "yolov5n-d45", "yolov5n-w29", "yolov5n-hornet"]
    lines = bench.summary(opt).splitlines()
    row = next(line for line in lines if line.startswith("| yolov5n | 1.87M | 4.6 |"))
    assert row.endswith("| 0.250 (0.200-0.300, 2) | 0.400 (0.400-0.400, 1) |")
    assert any(line.startswith("| yolov5n-d45 | 1.92M |") and line.endswith("| - | - |") for line in lines)  # not run: no numbers
    # the 7x7 backbone (2.65M) is compared with the wider yolov5n (2.64M), not the deeper one (1.92M)
    assert "| yolov5n-hornet | yolov5n-w29 | 1.20x / 1.50x | - / - |" in lines


def test_summary_of_a_set_never_run_is_one_line(opt):
    opt.summary = ["neu-det/e20-i160"]
    with pytest.raises(SystemExit, match="--summary neu-det/e20-i160: no stored runs"):
        bench.main(opt)


def test_exports_are_scored_once_and_only_where_the_weights_are(opt):
    store(opt, "yolov5n", 0, "", 0.5, 0.2)
    opt.exports = True
    assert bench.train_one(opt, "yolov5n", 0, threads=1).endswith("is not on this machine")  # best.pt of another session
    f = bench.result_file(opt, "yolov5n", 0)
    f.write_text(json.dumps({**json.loads(f.read_text()), "exports": {".pt": 0.2}}))
    assert bench.train_one(opt, "yolov5n", 0, threads=1).endswith("exports scored before")


def test_summary_reports_what_bf16_and_int8_exports_lose(opt):
    for seed, (bf16, int8) in enumerate([(0.200, 0.196), (0.300, 0.290)]):
        store(opt, "yolov5n", seed, "", 0.5, 0.2)
        f = bench.result_file(opt, "yolov5n", seed)
        exports = {".pt": 0.2 + 0.1 * seed, "ONNX Runtime": 0.2, "OpenVINO f32": 0.2, "OpenVINO reduced": bf16, "OpenVINO INT8": int8}
        f.write_text(json.dumps({**json.loads(f.read_text()), "exports": exports}))
    opt.summary, opt.runs, opt.models = ["raccoon/e40-i160"], 1, ["yolov5n", "yolov5n-gnconv"]
    lines = bench.summary(opt).splitlines()
    assert "| yolov5n | +0.000 / -0.007 (2) |" in lines  # INT8: mean of -0.004 and -0.010
    assert "| yolov5n-gnconv | - |" in lines
    opt.runs = 0  # on a busy machine: no times, the rest as before
    lines = bench.summary(opt).splitlines()
    assert "CPU ms not measured (--runs 0)" in lines[0] and any(line.startswith("| yolov5n | 1.87M | 4.6 | - | 0.200 (0.200-0.200, 2)") for line in lines)


def test_a_run_stopped_between_its_last_checkpoint_and_its_result_is_not_trained_again(opt, monkeypatch):
    """The bench stopped after train.py finished but before it wrote the run's JSON: the next start writes the JSON from
    the run folder (train.py --resume would refuse a finished run); a run stopped mid-training resumes."""
    from models.yolo import Model, save_checkpoint

    folder = Path(opt.project) / bench.run_key(opt, "yolov5n", 0)
    model = Model(ROOT / "cfg" / "yolov5n.yaml", nc=1, verbose=False)
    metrics = {"metrics/mAP50(B)": 0.5, "metrics/mAP50-95(B)": 0.25}
    (folder / "weights").mkdir(parents=True)
    save_checkpoint(folder / "weights" / "best.pt", model, train_metrics=metrics)
    save_checkpoint(folder / "weights" / "last.pt", model, epoch=1, optimizer=None, train_args={"epochs": 2})
    (folder / "results.csv").write_text("epoch,time\n1,10.0\n2,20.0\n")
    (folder / "hyp.yaml").write_text("lr0: 0.001\n")
    calls = []
    monkeypatch.setattr(bench.subprocess, "call", lambda args, **kw: calls.append(args) or 0)
    assert bench.train_one(opt, "yolov5n", 0, threads=1).startswith("trained:") and not calls
    assert json.loads(bench.result_file(opt, "yolov5n", 0).read_text())["mAP50-95"] == 0.25
    # the same folder stopped after epoch 1 of 2 (its optimizer state kept): resumed, not restarted
    bench.result_file(opt, "yolov5n", 0).unlink()
    save_checkpoint(folder / "weights" / "last.pt", model, epoch=0, optimizer={"state": {}}, train_args={"epochs": 2})
    bench.train_one(opt, "yolov5n", 0, threads=1)
    assert calls and calls[0][2:4] == ["--resume", str(folder / "weights" / "last.pt")]
