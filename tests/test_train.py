"""train.py and utils/trainer.py on a tiny generated shapes set (96 px, 64 px training, yolov5n, 1-3 epochs).

Checks: loss goes down, checkpoints load with weights_only=True and hold what resume needs, a run killed after
epoch 1 resumes to the end with every epoch in results.csv, the data's nc wins over the YAML's (said once),
unknown hyp keys and missing data YAMLs are clear errors, weight transfer reports what did not match, the
anchor-free head keeps the ultralytics loss columns, run folders are exp, exp2, and the trainer survives the
way the engine re-creates it in DDP workers.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

import train  # noqa: E402
from conftest import shapes_data_yaml  # noqa: E402
from models.yolo import Model, load_model  # noqa: E402
from utils.hyp import EXTRA_DEFAULTS, HypError, load_hyp  # noqa: E402
from utils.runs import increment_run_dir  # noqa: E402
from utils.trainer import HorNetTrainer  # noqa: E402

NAMES = ["circle", "square", "triangle", "star", "cross", "hexagon"]
FAST = ["--img", "64", "--batch-size", "4", "--workers", "0", "--noplots"]


def read_csv(path: Path) -> list[dict]:
    lines = path.read_text().strip().splitlines()
    keys = [k.strip() for k in lines[0].split(",")]
    return [dict(zip(keys, map(float, line.split(",")))) for line in lines[1:]]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A 20 image shapes set (96 px) and its data YAML; val is the train images (so val loss = training-set loss)."""
    return shapes_data_yaml(tmp_path_factory.mktemp("shapes"), n_train=20, n_val=8, imgsz=96, seed=1, val="images/train")


@pytest.fixture(scope="module")
def fast_hyp(tmp_path_factory) -> Path:
    """An optimizer step every batch (nbs 4), AdamW, no warm-up or augmentation: a few epochs visibly learn."""
    hyp = load_hyp(ROOT / "data/hyps/hyp.scratch-low.yaml")
    hyp.update(nbs=4, warmup_epochs=0.0, lr0=0.005, optimizer="AdamW", mosaic=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0,
               translate=0.0, scale=0.0, fliplr=0.0)
    f = tmp_path_factory.mktemp("hyp") / "hyp.fast.yaml"
    f.write_text(yaml.safe_dump(hyp))
    return f


@pytest.fixture(scope="module")
def trained(data, fast_hyp, tmp_path_factory):
    """One 3-epoch yolov5n run (YAML nc=80, data nc=6); the log lines about nc are collected."""
    project = tmp_path_factory.mktemp("runs")
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("ultralytics")
    logger.addHandler(handler)
    try:
        opt = train.parse_opt(["--cfg", "cfg/yolov5n.yaml", "--data", str(data), "--hyp", str(fast_hyp), "--epochs", "3",
                               "--project", str(project), *FAST])
        trainer = train.main(opt)
    finally:
        logger.removeHandler(handler)
    return trainer, seen


def test_loss_decreases_and_columns(trained):
    trainer, _ = trained
    rows = read_csv(trainer.csv)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train/box_loss", "train/obj_loss", "train/cls_loss"} <= set(rows[0])  # the anchor head's loss names
    # The loss on the (un-augmented) training images, measured by the validator after each epoch
    total = [r["val/box_loss"] + r["val/obj_loss"] + r["val/cls_loss"] for r in rows]
    assert total[2] < total[1] < total[0], f"loss did not decrease: {total}"


def test_run_time_estimate_said_once(trained):
    """After the first batches one line estimates the whole run."""
    _, seen = trained
    lines = [line for line in seen if "estimated: about" in line]
    assert len(lines) == 1 and "for 3 epochs of 5 batches" in lines[0], lines


def test_checkpoint_weights_only(trained):
    trainer, _ = trained
    assert trainer.save_dir.name == "exp"
    for f in (trainer.last, trainer.best):
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
        for key in ("model_yaml", "model", "names", "epoch", "optimizer", "hyp", "train_args", "best_fitness", "updates"):
            assert key in ckpt, f"{f.name} lacks {key}"
        assert ckpt["hyp"]["obj"] == 1.0 and ckpt["hyp"]["anchor_t"] == 4.0
        assert ckpt["train_args"]["epochs"] == 3
        assert ckpt["names"] == dict(enumerate(NAMES))
    assert torch.load(trainer.last, weights_only=True)["epoch"] == 2  # 0-based: the third epoch
    assert not list(trainer.wdir.glob("*.tmp"))  # atomic writes leave no temp files
    model = load_model(trainer.best)
    assert model.names[5] == "hexagon"
    y, _ = model(torch.zeros(1, 3, 64, 64))
    assert y.shape[1] == 4 + 6


def test_data_nc_wins_once(trained):
    trainer, seen = trained
    ckpt = torch.load(trainer.last, weights_only=True)
    assert ckpt["model_yaml"]["nc"] == 6  # the YAML says 80
    assert ckpt["model"]["model.24.m.0.weight"].shape[0] == 3 * (5 + 6)
    said = [m for m in seen if "nc=80" in m and "nc=6" in m]
    assert len(said) == 1, said


def test_resume_after_kill(data, fast_hyp, tmp_path):
    """A run killed (os._exit) right after epoch 1's checkpoint resumes at epoch 2 and ends with both in results.csv."""
    script = tmp_path / "killed_run.py"
    script.write_text(
        f"import os, sys\nsys.path.insert(0, {str(ROOT)!r})\nimport train\nfrom utils.trainer import HorNetTrainer\n"
        "t = HorNetTrainer(overrides=train.overrides_from(train.parse_opt(sys.argv[1:])))\n"
        "t.add_callback('on_model_save', lambda tr: os._exit(9) if tr.epoch == 0 else None)\n"
        "t.train()\n"
    )
    project = tmp_path / "runs"
    args = ["--cfg", "cfg/yolov5n.yaml", "--data", str(data), "--hyp", str(fast_hyp), "--epochs", "2",
            "--project", str(project), "--noautoanchor", *FAST]
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr[-2000:]
    run = project / "exp"
    assert [row["epoch"] for row in read_csv(run / "results.csv")] == [1]
    assert torch.load(run / "weights/last.pt", weights_only=True)["epoch"] == 0

    trainer = train.run(resume=True, project=str(project))  # bare --resume: the newest run under --project
    assert trainer.save_dir == run and trainer.start_epoch == 1
    rows = read_csv(run / "results.csv")
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1]["time"] > rows[0]["time"]  # the time column continues
    assert trainer.args.anchor_t == 4.0 and trainer.args.autoanchor is False  # the killed run's args
    assert not (project / "exp2").exists()


def test_unknown_hyp_key_names_key_and_file(tmp_path):
    f = tmp_path / "hyp.bad.yaml"
    f.write_text("lr0: 0.01\nmomentun: 0.9\n")
    with pytest.raises(HypError, match=r"hyp\.bad\.yaml.*'momentun'.*did you mean 'momentum'"):
        load_hyp(f)
    f.write_text("lr0: fast\n")
    with pytest.raises(HypError, match="'lr0' must be a number"):
        load_hyp(f)
    typo = tmp_path / "hyp.typo.yaml"
    typo.write_text("momentun: 0.9\n")
    with pytest.raises(HypError, match="hyp.typo.yaml.*momentun"):  # train.py checks --hyp before anything runs
        train.overrides_from(train.parse_opt(["--hyp", str(typo), "--project", str(tmp_path)]))
    for name in ("hyp.scratch-low.yaml", "hyp.hornet.yaml", "hyp.hornet-finetune.yaml"):
        assert load_hyp(ROOT / "data/hyps" / name)["lr0"] > 0  # the shipped ones are valid


def test_missing_data_yaml_is_clear(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=r"nope.yaml' \(looked in .*\)\. Dataset YAMLs in .*data: data/shapes.yaml"):
        train.overrides_from(train.parse_opt(["--data", str(missing), "--project", str(tmp_path)]))
    with pytest.raises(FileNotFoundError, match="data YAML not found.*nope.yaml"):  # the trainer itself, too
        HorNetTrainer(overrides={"model": "cfg/yolov5n.yaml", "data": str(missing), "project": str(tmp_path), "name": "x"})


def test_flags_map_to_engine_args(tmp_path, data):
    o = train.overrides_from(train.parse_opt(["--data", str(data), "--freeze", "4", "--hyp", "data/hyps/hyp.hornet.yaml",
                                              "--label-smoothing", "0.1", "--multi-scale", "--nosave", "--noval",
                                              "--noautoanchor", "--project", str(tmp_path)]))
    assert o["freeze"] == 4 and o["optimizer"] == "AdamW" and o["drop_path"] == 0.1 and o["label_smoothing"] == 0.1
    assert o["multi_scale"] == 0.5 and o["save"] is False and o["val"] is False and o["autoanchor"] is False
    assert o["model"] == "cfg/yolov5s-hornet.yaml" and "cls_pw" not in o  # YOLOv5's cls_pw is not the engine's
    o = train.overrides_from(train.parse_opt(["--data", str(data), "--freeze", "0", "1", "2", "--optimizer", "SGD",
                                              "--hyp", "data/hyps/hyp.hornet.yaml", "--project", str(tmp_path)]))
    assert o["freeze"] == [0, 1, 2] and o["optimizer"] == "SGD"
    assert o["save_dir"].endswith("exp2")  # the first call made exp


def test_defaults_work_from_any_directory(tmp_path, monkeypatch):
    """python /path/to/train.py from elsewhere: the default cfg, data and hyp are found in the repo."""
    monkeypatch.chdir(tmp_path)
    o = train.overrides_from(train.parse_opt(["--project", str(tmp_path)]))
    assert Path(o["model"]) == ROOT / "cfg/yolov5s-hornet.yaml" and Path(o["data"]) == ROOT / "data/shapes.yaml"
    assert Path(o["hyp"]) == ROOT / "data/hyps/hyp.hornet.yaml"  # the default hyp (see README, Hyperparameter files)
    assert o["optimizer"] == "AdamW" and o["nbs"] == 16 and o["lr0"] == 0.001


def test_run_folders_increment(tmp_path):
    assert [increment_run_dir(tmp_path, "exp").name for _ in range(3)] == ["exp", "exp2", "exp3"]
    (tmp_path / "exp" / "mine.txt").write_text("user file")
    assert increment_run_dir(tmp_path, "exp", exist_ok=True).name == "exp"
    assert (tmp_path / "exp" / "mine.txt").read_text() == "user file"


def test_weight_transfer_to_another_class_count_keeps_all_but_the_class_outputs(trained):
    """Our 6-class run into a 3-class model: every tensor comes across; in the head's convs each anchor keeps its box
    and objectness outputs from the file, and only its class outputs start anew."""
    trainer, _ = trained
    model = Model("cfg/yolov5n.yaml", nc=3, verbose=False)
    new_classes = model.model[24].m[0].weight[5:8].clone()
    report = HorNetTrainer.load_weights(model, trainer.last)
    assert report.transferred == report.total and not report.rows_new
    assert report.rows_partial == [(24, "Detect", "class outputs new")]
    ckpt = torch.load(trainer.last, weights_only=True)["model"]
    assert torch.equal(model.model[0].conv.weight, ckpt["model.0.conv.weight"])
    w, src = model.model[24].m[0].weight, ckpt["model.24.m.0.weight"]  # (3 anchors x 8, ...) from (3 x 11, ...)
    for a in range(3):
        assert torch.equal(w[a * 8:a * 8 + 5], src[a * 11:a * 11 + 5])
    assert torch.equal(w[5:8], new_classes)  # the class outputs are the fresh model's


def test_anchor_free_head_keeps_ultralytics_loss(data, fast_hyp, tmp_path):
    cfg = yaml.safe_load((ROOT / "cfg/yolov5n.yaml").read_text())
    cfg.pop("anchors")
    cfg["head"][-1] = [[17, 20, 23], 1, "Detect", ["nc"]]
    f = tmp_path / "yolov5n-af.yaml"
    f.write_text(yaml.safe_dump(cfg))
    trainer = train.run(cfg=str(f), data=str(data), hyp=str(fast_hyp), epochs=1, imgsz=64, batch_size=4, workers=0,
                        noplots=True, noval=True, project=str(tmp_path / "runs"))
    row = read_csv(trainer.csv)[0]
    assert {"train/box_loss", "train/cls_loss", "train/dfl_loss"} <= set(row) and "train/obj_loss" not in row
    assert trainer.args.box == 7.5  # the ultralytics gain, not YOLOv5's 0.05


def test_trainer_survives_ddp_relaunch(trained, tmp_path):
    """DDP workers get the trainer class by reference and rebuild it from vars(args) (ultralytics/utils/dist.py)."""
    from ultralytics.utils import DEFAULT_CFG_DICT

    trainer, _ = trained
    assert pickle.loads(pickle.dumps(type(trainer))) is HorNetTrainer  # importable by module path
    args = vars(trainer.args).copy()
    assert set(EXTRA_DEFAULTS) <= set(args)  # our keys ride along
    cfg = {**DEFAULT_CFG_DICT, "save_dir": ""}
    worker = HorNetTrainer(cfg=cfg, overrides={**args, "save_dir": str(tmp_path)})  # (the engine re-uses save_dir)
    assert worker.args.anchor_t == trainer.args.anchor_t and worker.args.hyp == trainer.args.hyp
    assert worker.save_dir == tmp_path and worker.args.model == "cfg/yolov5n.yaml"


def test_nan_recovery_reloads_our_checkpoint(data, fast_hyp, tmp_path):
    """A NaN loss in epoch 2 sends the run back to last.pt (our weights_only format) and epoch 2 is redone once."""
    opt = train.parse_opt(["--cfg", "cfg/yolov5n.yaml", "--data", str(data), "--hyp", str(fast_hyp), "--epochs", "2",
                           "--project", str(tmp_path), "--noautoanchor", "--noval", *FAST])
    trainer = HorNetTrainer(overrides=train.overrides_from(opt))
    poisoned = []

    def poison(t):
        if t.epoch == 1 and not poisoned:
            poisoned.append(t.epoch)
            t.loss = torch.tensor(float("nan"))

    trainer.add_callback("on_train_epoch_end", poison)
    trainer.train()
    assert poisoned == [1]
    assert [r["epoch"] for r in read_csv(trainer.csv)] == [1, 2]  # the poisoned pass left no row


def test_albumentations_flag(tmp_path, data):
    o = train.overrides_from(train.parse_opt(["--data", str(data), "--albumentations", "data/hyps/albumentations.yaml",
                                              "--project", str(tmp_path)]))
    assert o["augmentations"] and o["albumentations"] == "data/hyps/albumentations.yaml"


def test_weights_official_hornet_checkpoint(tmp_path):
    """--weights with an official HorNet ImageNet checkpoint goes to models.hornet_weights (into the HorNet rows)."""
    from models.hornet_weights import to_official_state_dict

    from models.yolo import load_model_yaml

    paper = load_model_yaml("cfg/yolov5n-hornet.yaml")
    paper["backbone"][0][2] = "HorStem"  # the paper's stem, as official weights have it
    src = Model(paper, nc=6, verbose=False)
    f = tmp_path / "hornet_official.pth"
    torch.save({"model": to_official_state_dict(src)}, f)
    dst = Model(paper, nc=6, verbose=False)
    assert not torch.equal(dst.model[1].state_dict()["gnconv.proj_in.weight"], src.model[1].state_dict()["gnconv.proj_in.weight"])
    report = HorNetTrainer.load_weights(dst, f)
    assert report["loaded"] > 0 and 0 in report["rows"]
    for i in range(8):  # stem, stages and downsampling rows of the backbone
        for k, v in src.model[i].state_dict().items():
            assert torch.equal(v, dst.model[i].state_dict()[k]), (i, k)
    # the shipped YAML's ConvStem keeps its own weights; the stages still load, the official stem is reported unused
    ours = Model("cfg/yolov5n-hornet.yaml", nc=6, verbose=False)
    report = HorNetTrainer.load_weights(ours, f)
    assert sorted(report["rows"]) == list(range(1, 8)) and report["unused"] == ["downsample_layers.0"]
    assert any("ConvStem" in why for why in report["not_covered"])


def test_evolve_trains_generations_and_writes_the_fittest_hyp(data, tmp_path):
    """--evolve 2: two trainings in runs/evolve/exp/gen0, gen1; evolve.csv has a row each (the first with the recipe's
    values, the second mutated within the ranges); hyp_evolve.yaml is a hyp file with the fittest generation's values."""
    import csv

    from utils.evolve import SPACE

    folder = train.main(train.parse_opt(["--cfg", "cfg/yolov5n.yaml", "--data", str(data), "--evolve", "2",
                                         "--epochs", "1", "--project", str(tmp_path / "train"), *FAST]))
    assert folder == tmp_path / "evolve" / "exp" and (folder / "gen0" / "weights" / "best.pt").is_file()
    rows = list(csv.DictReader(open(folder / "evolve.csv")))
    assert [r["generation"] for r in rows] == ["0", "1"]
    recipe = {**load_hyp(ROOT / "data/hyps/hyp.scratch-low.yaml"), **load_hyp(ROOT / "data/hyps/hyp.scratch-adamw.yaml")}
    assert all(float(rows[0][k]) == pytest.approx(recipe[k], rel=1e-5) for k in SPACE if k in recipe)
    assert any(float(rows[1][k]) != pytest.approx(float(rows[0][k]), rel=1e-5) for k in SPACE if k in rows[1])
    assert all(SPACE[k][0] <= float(rows[1][k]) <= SPACE[k][1] for k in SPACE if k in rows[1])
    best = max(rows, key=lambda r: float(r["fitness"]))
    evolved = load_hyp(folder / "hyp_evolve.yaml")
    assert all(evolved[k] == pytest.approx(float(best[k]), rel=1e-4) for k in evolved)
