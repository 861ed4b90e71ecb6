"""Fault injection and user mistakes: what train/val/detect/export do when killed, interrupted or given bad input.

- A tiny training (64 px, 8 images this file makes) is SIGKILLed at random instants, some of them while a
  checkpoint is being written; after every kill last.pt loads with weights_only=True and --resume goes on,
  and at the end results.csv holds each epoch exactly once with its time column going forward.
  HORNET_FAULT_KILLS=40 python -m pytest tests/test_faults.py runs a longer version (default: 6 kills, < 1 min).
- Ctrl-C: one line saying where training stopped and what --resume will do, exit 130.
- Every script, given user mistakes: one line naming the file or flag, exit 1, no traceback,
  and no run folder left behind.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import shapes_data_yaml
from models.yolo import read_checkpoint
from utils.runs import ResumeError, increment_run_dir, keep_epochs, lock_run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
KILLS = int(os.environ.get("HORNET_FAULT_KILLS", 6))
EPOCHS = 12


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """8 train + 4 val shapes images at 64 px and their data YAML."""
    return shapes_data_yaml(tmp_path_factory.mktemp("shapes"), n_train=8, n_val=4, imgsz=64, seed=3)


def epochs_in(csv: Path) -> list[int]:
    return [int(float(line.split(",")[0])) for line in csv.read_text().splitlines()[1:]] if csv.is_file() else []


def train_cmd(*args) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def start(cmd) -> subprocess.Popen:
    # SIGINT restored: a shell that started this test in the background may have set it to ignored
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def kill_when(proc: subprocess.Popen, run: Path, rng: random.Random) -> str:
    """SIGKILL `proc` at a random instant of its training; returns when it was: 'checkpoint write' or 'epoch'."""
    tmp, csv = run / "weights" / "last.pt.tmp", run / "results.csv"
    mid_write = rng.random() < 0.5
    rows = len(epochs_in(csv))
    while proc.poll() is None:
        if mid_write and tmp.exists():  # torch.save is writing the next last.pt
            break
        if not mid_write and len(epochs_in(csv)) > rows:  # an epoch row just landed: somewhere after it
            time.sleep(rng.uniform(0.0, 0.4))
            break
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    return "checkpoint write" if mid_write and tmp.exists() else "epoch"


def test_sigkill_at_random_instants_then_resume(tiny_data, tmp_path):
    """last.pt always loads weights_only and results.csv never holds an epoch twice, whenever the kill comes."""
    rng = random.Random(0)
    project = tmp_path / "runs"
    run = project / "exp"
    args = ["--cfg", "cfg/yolov5n.yaml", "--data", str(tiny_data), "--epochs", str(EPOCHS), "--img", "64",
            "--batch-size", "4", "--workers", "0", "--noplots", "--noautoanchor", "--project", str(project)]
    kills, when = 0, []
    proc = start(train_cmd(*args))
    while kills < KILLS:
        when.append(kill_when(proc, run, rng))
        kills += 1
        last = run / "weights" / "last.pt"
        if last.is_file():
            ckpt = torch.load(last, weights_only=True)  # never half a file
            if ckpt.get("optimizer") is None:  # it finished before the kill came: start the count again
                break
            # results.csv is at most one row ahead of last.pt (written first); --resume drops that row
            assert epochs_in(run / "results.csv")[: ckpt["epoch"] + 1] == list(range(1, ckpt["epoch"] + 2))
            proc = start(train_cmd("--resume", str(last)))
        else:  # killed before the first checkpoint: nothing to resume, start again in the same folder
            proc = start(train_cmd(*args, "--exist-ok"))
    if proc.poll() is None:
        proc.wait(timeout=300)
    last = run / "weights" / "last.pt"
    if read_checkpoint(last).get("optimizer") is not None:  # finish what the last kill left
        r = subprocess.run(train_cmd("--resume", str(last)), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    assert epochs_in(run / "results.csv") == list(range(1, EPOCHS + 1)), (when, (run / "results.csv").read_text())
    times = [float(line.split(",")[1]) for line in (run / "results.csv").read_text().splitlines()[1:]]
    assert times == sorted(times)
    assert torch.load(last, weights_only=True)["epoch"] == EPOCHS - 1
    assert kills >= min(KILLS, 3), when


def test_ctrl_c_says_where_it_stopped_and_what_resume_does(tiny_data, tmp_path):
    """Ctrl-C before the first checkpoint: nothing to resume, folder removed; after one: the --resume command."""
    project = tmp_path / "runs"
    args = ["--cfg", "cfg/yolov5n.yaml", "--data", str(tiny_data), "--epochs", "200", "--img", "64", "--batch-size", "4",
            "--workers", "0", "--noplots", "--noautoanchor", "--project", str(project)]
    for name, after_checkpoint in (("early", False), ("late", True)):
        proc = start(train_cmd(*args, "--name", name))
        trigger = project / name / "weights" / "last.pt" if after_checkpoint else project / name / "args.yaml"
        while proc.poll() is None and not trigger.exists():
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
        line = err.strip().splitlines()[-1]
        assert line.startswith("train.py: stopped (Ctrl-C)"), line
        if after_checkpoint:
            assert "in epoch" in line and f"--resume {project / name / 'weights' / 'last.pt'} goes on from epoch" in line
        else:  # during start-up or epoch 1
            assert "nothing to resume" in line and f"{project / name} removed" in line and not (project / name).exists()


def test_sigterm_in_the_first_epoch_says_so_and_removes_the_empty_run_folder(tiny_data, tmp_path):
    """kill (SIGTERM) before the first checkpoint: one line as for Ctrl-C, the folder it made removed, exit 143."""
    project = tmp_path / "runs"
    proc = start(train_cmd("--cfg", "cfg/yolov5n.yaml", "--data", str(tiny_data), "--epochs", "200", "--img", "64",
                           "--batch-size", "4", "--workers", "0", "--noplots", "--noautoanchor", "--project", str(project)))
    while proc.poll() is None and not (project / "exp" / "args.yaml").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("train.py: stopped (SIGTERM)") and f"{project / 'exp'} removed" in line, line
    assert not (project / "exp").exists()


def test_results_csv_trimmed_to_the_checkpoint(tmp_path):
    """keep_epochs drops rows after last.pt's epoch and a torn last row, and keeps the header and the rest."""
    csv = tmp_path / "results.csv"
    csv.write_text("epoch,time,loss\n1,1.0,0.5\n2,2.0,0.4\n3,3.0,0.3\n4,4.")
    assert keep_epochs(csv, 2) == 2
    assert csv.read_text() == "epoch,time,loss\n1,1.0,0.5\n2,2.0,0.4\n"
    assert keep_epochs(csv, 2) == 0


def test_run_lock_names_the_live_process(tmp_path):
    """A second lock on a run folder (a --resume of a run that still trains) fails naming the holder's pid."""
    held = lock_run(tmp_path)
    try:
        with pytest.raises(ResumeError, match=f"still training in process {os.getpid()}"):
            lock_run(tmp_path)
    finally:
        held.close()
    lock_run(tmp_path).close()  # free again once the holder is gone


def test_concurrent_run_folders_are_distinct(tmp_path):
    """Runs started together (detect.py, train.py, val.py all use increment_run_dir) each get their own folder."""
    barrier = threading.Barrier(8)

    def make(_):
        barrier.wait()
        return increment_run_dir(tmp_path, "exp")

    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(make, range(8)))
    assert len(set(folders)) == 8 and all(f.is_dir() for f in folders)


@pytest.fixture(scope="module")
def mistakes(tiny_data, tmp_path_factory) -> dict:
    """Files for the user-mistake table: a finished run, truncated/pickled/text .pt, corrupt .onnx, OpenVINO and images."""
    d = tmp_path_factory.mktemp("mistakes")
    r = subprocess.run(train_cmd("--cfg", "cfg/yolov5n.yaml", "--data", str(tiny_data), "--epochs", "1", "--img", "64",
                                 "--workers", "0", "--noplots", "--project", str(d / "runs")), cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    best = d / "runs" / "exp" / "weights" / "best.pt"
    (d / "truncated.pt").write_bytes(best.read_bytes()[:5000])
    torch.save({"model": torch.nn.Linear(2, 2)}, d / "pickled.pt")
    (d / "notes.pt").write_text("not weights")

    class RunsCode:  # a checkpoint whose pickle calls os.system when it is loaded
        def __reduce__(self):
            return (os.system, (f"touch {d / 'MARKER'}",))

    for name in ("code.PT", "code.Pt", "code.pth"):
        torch.save({"model": RunsCode(), "epoch": 1, "optimizer": {}}, d / name)
    (d / "corrupt.onnx").write_bytes(os.urandom(4000))
    (d / "corrupt_openvino_model").mkdir()
    (d / "corrupt_openvino_model" / "corrupt.xml").write_text("<net><layers>")
    (d / "corrupt_openvino_model" / "corrupt.bin").write_bytes(os.urandom(400))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(200))
    (d / "empty.jpg").write_bytes(b"")
    (d / "bad.yaml").write_text("nc: 3\nbackbone: [[-1, 1, Conv, [16, 3, 2]]]\nhead: [[-1, 1, Detectt, [nc]]]\n")
    (d / "bad_from.yaml").write_text("nc: 3\nbackbone: [[-1, 1, Conv, [16, 3, 2]]]\nhead: [[5, 1, Detect, [nc]]]\n")
    (d / "no_head.yaml").write_text("nc: 3\nbackbone: [[-1, 1, Conv, [16, 3, 2]]]\n")
    (d / "broken.yaml").write_text("nc: 3\nbackbone: [[-1, 1, Conv, [16, 3, 2]]\nhead: [\n")
    (d / "row_list.yaml").write_text("nc: 3\nbackbone: [[-1, 1, [Conv], [16, 3, 2]]]\nhead: [[-1, 1, Detect, [nc]]]\n")
    (d / "row_class.yaml").write_text("nc: 3\nbackbone: [[-1, 1, Conv, [16, 3, 2]]]\nhead: [[-1, 1, nn.__class__, []], [-1, 1, Detect, [nc]]]\n")
    ckpt = torch.load(best, weights_only=True)
    torch.save({**ckpt, "model_yaml": {**ckpt["model_yaml"], "width_multiple": 0.5}}, d / "misfit.pt")
    head = [list(r) for r in ckpt["model_yaml"]["head"]]
    head[-1][2] = "Detectt"
    torch.save({**ckpt, "model_yaml": {**ckpt["model_yaml"], "head": head}}, d / "badrow.pt")
    bomb = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(10))
    (d / "bomb.yaml").write_text(bomb + "nc: 3\nbackbone: [[-1, 1, Conv, [16, 3, 2]]]\nhead: [[-1, 1, Detect, [nc]]]\n")
    (d / "bomb-hyp.yaml").write_text(bomb)
    (d / "bomb-data.yaml").write_text(bomb + f"path: {tiny_data.parent}\ntrain: images/train\nval: images/val\nnames: [a]\n")
    cfg = (ROOT / "cfg" / "yolov5n.yaml").read_text()
    (d / "depth-negative.yaml").write_text(re.sub(r"(?m)^depth_multiple:.*$", "depth_multiple: -1", cfg))
    (d / "depth-word.yaml").write_text(re.sub(r"(?m)^depth_multiple:.*$", "depth_multiple: big", cfg))
    (d / "depths.yaml").write_text("nc: 3\nbackbone: [[-1, 1, HorNet, [64, 0, 3, [100000, 3, 18, 2], 64]]]\nhead: [[-1, 1, Detect, [nc]]]\n")
    data = (d / "data")
    data.mkdir()
    base = f"path: {tiny_data.parent}\ntrain: images/train\nval: images/val\n"
    for name, text in DATA_YAMLS.items():
        (data / f"{name}.yaml").write_text(text.format(base=base))
    return {"dir": d, "best": best, "last": best.with_name("last.pt"), "data": tiny_data, "images": tiny_data.parent / "images" / "val"}


# Data YAMLs that describe no dataset ({base}: path, train and val of the tiny set); each is one line in train.py and val.py
DATA_YAMLS = {
    "no-names": ("{base}", "no 'names:'"),
    "names-empty": ("{base}names: []\n", "'names' is empty"),
    "names-word": ("{base}names: circle\n", "'names' must be a list"),
    "names-gap": ("{base}names: {{0: a, 2: b}}\n", "no gap, got [0, 2]"),
    "nc-names": ("{base}nc: 5\nnames: [a, b]\n", "nc: 5 disagrees with its 2 names"),
    "syntax": ("{base}names: [a, b\n", "not valid YAML (line"),
    "top-list": ("- images/train\n- images/val\n", "must be a mapping"),
    "no-train": ("val: images/val\nnames: [a]\n", "no 'train:' key"),
}
DATA_YAMLS, DATA_SAYS = {k: v[0] for k, v in DATA_YAMLS.items()}, {k: v[1] for k, v in DATA_YAMLS.items()}


# script, arguments ({dir}, {best}, {last}, {data} filled in), what the one error line must say
MISTAKES = {
    "train-bad-yaml": ("train.py", "--cfg {dir}/bad.yaml", "unknown module 'Detectt'"),
    "train-bad-from": ("train.py", "--cfg {dir}/bad_from.yaml", "'from' index 5 is out of range"),
    "train-no-head": ("train.py", "--cfg {dir}/no_head.yaml", "missing 'head'"),
    "train-broken-yaml": ("train.py", "--cfg {dir}/broken.yaml", "not valid YAML (line 3"),
    "train-truncated": ("train.py", "--weights {dir}/truncated.pt", "truncated"),
    "train-pickled": ("train.py", "--weights {dir}/pickled.pt", "holds weights but no model"),
    "train-code": ("train.py", "--weights {dir}/code.PT", "refused, nothing in it was run: it needs posix.system"),
    "train-code-cfg": ("train.py", "--weights {dir}/code.Pt --cfg cfg/yolov5n.yaml", "refused, nothing in it was run"),
    "train-resume-code": ("train.py", "--resume {dir}/code.PT", "refused, nothing in it was run"),
    "train-missing-name": ("train.py", "--weights yolov5s.pt", "nothing is downloaded here"),
    "train-text": ("train.py", "--weights {dir}/notes.pt", "not a torch file"),
    "train-onnx": ("train.py", "--weights {dir}/corrupt.onnx", "cannot seed training"),
    "train-device": ("train.py", "--device 99", "--device 99"),
    "train-finished": ("train.py", "--resume {last}", "that run is finished"),
    "train-data": ("train.py", "--data nosuch.yaml", "data/shapes.yaml"),
    "train-package-data": ("train.py", "--data coco128.yaml", "download: step is not run here"),
    "val-onnx": ("val.py", "--weights {dir}/corrupt.onnx --data {data}", "corrupt.onnx: cannot be loaded"),
    "val-openvino": ("val.py", "--weights {dir}/corrupt_openvino_model --data {data}", "corrupt_openvino_model: cannot be loaded"),
    "val-text": ("val.py", "--weights {dir}/notes.pt --data {data}", "not a torch file"),
    "val-code": ("val.py", "--weights {dir}/code.PT --data {data}", "refused, nothing in it was run"),
    "val-data": ("val.py", "--weights {best} --data nosuch.yaml", "data YAML not found"),
    "val-device": ("val.py", "--weights {best} --data {data} --device 99", "--device 99"),
    "detect-corrupt-image": ("detect.py", "--weights {best} --source {dir}/corrupt.jpg", "no image or video frame could be read"),
    "detect-empty-image": ("detect.py", "--weights {best} --source {dir}/empty.jpg", "no image or video frame could be read"),
    "detect-onnx": ("detect.py", "--weights {dir}/corrupt.onnx --source {dir}/corrupt.jpg", "corrupt.onnx"),
    "detect-openvino": ("detect.py", "--weights {dir}/corrupt_openvino_model/corrupt.xml --source {dir}/corrupt.jpg", "corrupt_openvino_model"),
    "detect-code": ("detect.py", "--weights {dir}/code.Pt --source {dir}/corrupt.jpg", "refused, nothing in it was run"),
    "detect-device": ("detect.py", "--weights {best} --source {dir}/corrupt.jpg --device 99", "--device 99"),
    "export-text": ("export.py", "--weights {dir}/notes.pt", "not a torch file"),
    "export-onnx": ("export.py", "--weights {dir}/corrupt.onnx", "an exported model"),
    "export-code": ("export.py", "--weights {dir}/code.pth", "refused, nothing in it was run"),
    "export-device": ("export.py", "--weights {best} --device 99", "--device 99: "),
    "export-format": ("export.py", "--weights {best} --include tflite", "supported formats are"),
    "train-epochs-0": ("train.py", "--cfg cfg/yolov5n.yaml --data {data} --epochs 0", "--epochs 0: must be 1 or more"),
    "train-project-file": ("train.py", "--cfg cfg/yolov5n.yaml --data {data} --project {dir}/notes.pt", "notes.pt is a file, not a folder"),
    "val-project-file": ("val.py", "--weights {best} --data {data} --project {dir}/notes.pt", "notes.pt is a file, not a folder"),
    "detect-project-file": ("detect.py", "--weights {best} --source {dir}/corrupt.jpg --project {dir}/notes.pt", "notes.pt is a file, not a folder"),
    "train-row-list": ("train.py", "--cfg {dir}/row_list.yaml --data {data}", "row 0 [-1, 1, ['Conv'], [16, 3, 2]]: module must be a name"),
    "train-row-class": ("train.py", "--cfg {dir}/row_class.yaml --data {data}", "torch.nn has no layer class '__class__'"),
    "detect-misfit": ("detect.py", "--weights {dir}/misfit.pt --source {dir}/corrupt.jpg", "misfit.pt: its weights do not fit its own model YAML"),
    "val-misfit": ("val.py", "--weights {dir}/misfit.pt --data {data}", "misfit.pt: its weights do not fit its own model YAML"),
    "export-misfit": ("export.py", "--weights {dir}/misfit.pt", "misfit.pt: its weights do not fit its own model YAML"),
    "train-badrow": ("train.py", "--weights {dir}/badrow.pt --data {data}", "badrow.pt: its model YAML (made from "),
    "val-badrow": ("val.py", "--weights {dir}/badrow.pt --data {data}", "badrow.pt: its model YAML (made from "),
    "export-badrow": ("export.py", "--weights {dir}/badrow.pt", "badrow.pt: its model YAML (made from "),
    "train-bomb-cfg": ("train.py", "--cfg {dir}/bomb.yaml --data {data}", "bomb.yaml: refused: it expands to more than 1,000,000 values"),
    "train-bomb-hyp": ("train.py", "--cfg cfg/yolov5n.yaml --data {data} --hyp {dir}/bomb-hyp.yaml", "bomb-hyp.yaml: refused: it expands to more than"),
    "train-bomb-data": ("train.py", "--cfg cfg/yolov5n.yaml --data {dir}/bomb-data.yaml", "bomb-data.yaml: refused: it expands to more than"),
    "val-bomb-data": ("val.py", "--weights {best} --data {dir}/bomb-data.yaml", "bomb-data.yaml: refused: it expands to more than"),
    "train-depth-negative": ("train.py", "--cfg {dir}/depth-negative.yaml --data {data}", "depth-negative.yaml: depth_multiple: must be a number in (0, 16], got -1"),
    "train-depth-word": ("train.py", "--cfg {dir}/depth-word.yaml --data {data}", "depth-word.yaml: depth_multiple: must be a number in (0, 16], got 'big'"),
    "train-hornet-depths": ("train.py", "--cfg {dir}/depths.yaml --data {data}", "HorNet depths[0] is 100000: a stage may have at most 1000 blocks"),
    "detect-bomb-data": ("detect.py", "--weights {best} --source {images} --data {dir}/bomb-data.yaml", "bomb-data.yaml: refused: it expands to more than"),
    "detect-classes": ("detect.py", "--weights {best} --source {images} --classes 2 99", "--classes 99: best.pt has 6 classes (0..5"),
    **({"train-mps": ("train.py", "--cfg cfg/yolov5n.yaml --data {data} --device mps", "--device mps: Apple's MPS is not available")}
       if not torch.backends.mps.is_available() else {}),
    **{f"train-data-{k}": ("train.py", f"--cfg cfg/yolov5n.yaml --data {{dir}}/data/{k}.yaml", DATA_SAYS[k])
       for k in ("names-gap", "nc-names", "top-list", "no-train")},
    **{f"val-data-{k}": ("val.py", f"--weights {{best}} --data {{dir}}/data/{k}.yaml", DATA_SAYS[k])
       for k in ("no-names", "names-empty", "names-word", "syntax")},
}


def test_user_mistakes_are_one_line_errors_in_every_script(mistakes):
    """Each mistake: exit 1, no traceback, one line naming the file or flag, and no run folder left behind."""
    d = mistakes["dir"]

    def attempt(case):
        script, args, expected = MISTAKES[case]
        project = d / "projects" / case
        argv = [] if script == "export.py" else ["--project", str(project)]
        if script == "train.py":
            argv += ["--epochs", "1", "--img", "64", "--workers", "0"]
        argv += args.format(**mistakes).split()  # after the defaults: a case's own flags win
        r = subprocess.run([sys.executable, script, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        return case, script, r, expected.format(**mistakes), project

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, MISTAKES))
    failures = []
    for case, script, r, expected, project in results:
        said = r.stdout + r.stderr  # detect.py and export.py report through the ultralytics logger (stdout)
        lines = [line for line in said.splitlines() if expected in line]
        left = [p for p in project.glob("*") if p.is_dir()] if project.is_dir() else []
        saved_then_removed = script == "detect.py" and "Results saved to" in said  # the folder is gone
        if r.returncode != 1 or "Traceback" in said or not lines or left or saved_then_removed or max(map(len, lines), default=0) > 1000:
            failures.append(f"{case}: exit {r.returncode}, left {left}, output tail:\n{said[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert not (d / "MARKER").exists(), "a checkpoint ran code"


def test_resume_names_the_flags_it_ignores():
    """--resume with --epochs/--img: named as ignored; --device/--workers/--cache may change and are not named."""
    import train

    opt = train.parse_opt(["--resume", "--epochs", "5", "--img", "128", "--device", "cpu", "--workers", "2", "--cache"])
    assert train.ignored_by_resume(opt) == ["--epochs", "--imgsz"]
    assert train.ignored_by_resume(train.parse_opt(["--resume", "runs/train/exp/weights/last.pt"])) == []


def test_resume_passes_on_what_the_trainer_lets_it_change(monkeypatch):
    """train.py --resume hands the trainer every flag of utils.runs.RESUME_ARGS that was given, and only those."""
    import train
    from utils.runs import RESUME_ARGS

    assert set(train.run_args(train.parse_opt([]))) == set(RESUME_ARGS)
    monkeypatch.setattr(train, "check_device", lambda device: None)
    opt = train.parse_opt(["--resume", "--workers", "2", "--cache", "--noplots", "--save-period", "3", "--patience", "7",
                           "--device", "cpu", "--epochs", "5"])
    got = train.overrides_from(opt)
    assert {k: got[k] for k in RESUME_ARGS} == {"device": "cpu", "workers": 2, "cache": "ram", "plots": False,
                                                "save_period": 3, "patience": 7}
    assert "epochs" not in got
    assert train.ignored_by_resume(opt) == ["--epochs"]


def test_exist_ok_names_what_it_overwrites(tmp_path, said):
    from utils.runs import warn_overwrite

    warn_overwrite(tmp_path / "exp")  # no earlier run: nothing to say
    (tmp_path / "exp" / "weights").mkdir(parents=True)
    (tmp_path / "exp" / "results.csv").write_text("epoch\n1\n")
    (tmp_path / "exp" / "weights" / "last.pt").write_bytes(b"")
    warn_overwrite(tmp_path / "exp")
    assert len(said) == 1
    assert said[0].endswith(f"--exist-ok: {tmp_path / 'exp'} holds an earlier run; its results.csv, weights/last.pt will be overwritten")


def test_val_without_weights_takes_the_newest_best(mistakes, monkeypatch, tmp_path):
    """val.py with no --weights validates the newest runs/train/*/weights/best.pt (as detect.py and export.py do)."""
    import shutil

    import val
    from utils.predict import newest_weights

    runs = tmp_path / "train"
    for age, name in ((100, "exp"), (10, "exp2")):  # exp2's file is the newer one
        (runs / name / "weights").mkdir(parents=True)
        shutil.copy(mistakes["best"], runs / name / "weights" / "best.pt")
        os.utime(runs / name / "weights" / "best.pt", (time.time() - age, time.time() - age))
    monkeypatch.setattr(val, "newest_weights", lambda: newest_weights(runs))
    picked = []
    monkeypatch.setattr(val, "validate", lambda opt, weights, save_dir, fmt, model: picked.append(weights) or ({}, {"preprocess": 0, "inference": 0, "postprocess": 0}))
    val.run(data=str(mistakes["data"]), project=str(tmp_path / "val"))
    assert picked == [runs / "exp2" / "weights" / "best.pt"]


def test_detect_runs_started_together_get_their_own_folders(mistakes, tmp_path):
    """Two detect.py runs at once: exp and exp2, each with its own annotated image."""
    image = next((mistakes["data"].parent / "images" / "val").glob("*.jpg"))
    cmd = [sys.executable, "detect.py", "--weights", str(mistakes["best"]), "--source", str(image), "--img", "64",
           "--project", str(tmp_path / "detect")]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    assert sorted(p.name for p in (tmp_path / "detect").iterdir()) == ["exp", "exp2"]
    assert all((tmp_path / "detect" / name / image.name).is_file() for name in ("exp", "exp2"))


def test_a_finished_run_lets_go_of_its_lock(tiny_data, tmp_path):
    """In one process (the Python API), a run that ended does not hold its folder against the next one."""
    import train

    args = dict(cfg="cfg/yolov5n.yaml", data=str(tiny_data), epochs=1, imgsz=64, workers=0, noplots=True,
                noautoanchor=True, project=str(tmp_path), batch_size=4)
    first = train.run(**args)
    assert first._lock is None
    lock_run(first.save_dir).close()  # free
    second = train.run(**args, exist_ok=True)  # the same folder again
    assert second.save_dir == first.save_dir


def test_resume_takes_workers_and_cache_and_names_the_rest():
    import train

    opt = train.parse_opt(["--resume", "runs/train/exp/weights/last.pt", "--workers", "2", "--cache", "--epochs", "3"])
    overrides = train.overrides_from(opt)
    assert overrides["workers"] == 2 and overrides["cache"] == "ram" and "epochs" not in overrides
    assert "workers" not in train.overrides_from(train.parse_opt(["--resume", "x/last.pt"]))  # not given: the run's own


def test_exist_ok_is_refused_before_anything_touches_the_live_run(tiny_data, tmp_path):
    """--exist-ok into a folder that still trains: refused before the engine starts (no args.yaml rewritten, no
    results.csv deleted), naming the process that trains there."""
    project = tmp_path / "runs"
    args = ["--cfg", "cfg/yolov5n.yaml", "--data", str(tiny_data), "--img", "64", "--batch-size", "4", "--workers", "0",
            "--noplots", "--noautoanchor", "--project", str(project), "--name", "ex"]
    live = start(train_cmd(*args, "--epochs", "500"))
    run = project / "ex"
    try:
        while live.poll() is None and not epochs_in(run / "results.csv"):
            time.sleep(0.05)
        assert live.poll() is None, live.stderr.read()[-3000:]
        before = {f: (run / f).read_bytes() for f in ("args.yaml", "results.csv")}
        r = subprocess.run(train_cmd(*args, "--epochs", "3", "--exist-ok"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        said = r.stdout + r.stderr
        assert r.returncode == 1 and "Traceback" not in said, said[-3000:]
        assert said.strip().splitlines()[-1] == f"error: {run} is still training in process {live.pid}: wait for it to finish or stop it (kill {live.pid}) first"
        assert "engine/trainer:" not in said and "will be overwritten" not in said  # refused before the engine started
        assert (run / "args.yaml").read_bytes() == before["args.yaml"]
        assert (run / "results.csv").read_bytes().startswith(before["results.csv"])  # the live run only appended
    finally:
        live.kill()
        live.wait()


def test_resume_refuses_a_last_pt_of_another_run(mistakes, tiny_data, tmp_path):
    """Another run's unfinished last.pt (another head) in a finished run's folder: --resume names both and changes
    nothing; the same run moved to another folder resumes."""
    import shutil

    import yaml

    from models.yolo import load_model_yaml
    from utils.runs import other_run

    cfg = load_model_yaml(ROOT / "cfg" / "yolov5n.yaml")  # the same rows with the anchor-free head
    cfg.pop("anchors")
    cfg["head"][-1][3] = ["nc"]
    (tmp_path / "yolov5n-af.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "yaml_file"}))
    theirs = tmp_path / "a" / "exp"
    proc = start(train_cmd("--cfg", str(tmp_path / "yolov5n-af.yaml"), "--data", str(tiny_data), "--epochs", "50", "--img", "64",
                           "--batch-size", "4", "--workers", "0", "--noplots", "--project", str(tmp_path / "a")))
    while proc.poll() is None and not (theirs / "weights" / "last.pt").is_file():
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert (theirs / "weights" / "last.pt").is_file(), proc.stderr.read()[-3000:]
    ours = tmp_path / "b" / "exp"
    shutil.copytree(mistakes["last"].parent.parent, ours)  # a finished yolov5n run (anchor head)
    shutil.copy(theirs / "weights" / "last.pt", ours / "weights" / "last.pt")
    before = {f: (ours / f).read_bytes() for f in ("args.yaml", "results.csv")}
    r = subprocess.run(train_cmd("--resume", str(ours / "weights" / "last.pt")), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    said = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in said, said[-3000:]
    line = said.strip().splitlines()[-1]
    assert "this last.pt is from another run" in line and f"started in {theirs}" in line and f"the one {ours} holds" in line, line
    assert all((ours / f).read_bytes() == b for f, b in before.items())
    shutil.move(theirs, tmp_path / "moved")  # a run folder moved whole is the same run
    last = tmp_path / "moved" / "weights" / "last.pt"
    assert other_run(last, read_checkpoint(last)) is None


def in_private_mounts(script: str, what: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`script` run by sh in a mount namespace of its own (root): its mounts vanish with it and touch nothing else.
    Skips where unshare or mount is not permitted."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{what} needs a private mount namespace (unshare -m, mount as root): {probe.stderr.strip()[:200]}")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_a_full_disk_while_saving_is_one_line_with_nothing_left_half_written(tiny_data, tmp_path):
    """Training on a real full disk (a small tmpfs): one line naming the folder and the space a checkpoint needs, no
    *.tmp left, and results.csv holding exactly the epochs last.pt holds (none: the run folder goes)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    train = " ".join(train_cmd("--cfg", "cfg/yolov5n.yaml", "--data", str(tiny_data), "--img", "64", "--batch-size", "4",
                               "--workers", "0", "--noplots", "--noautoanchor", "--epochs", "3", "--project", f"{mnt}/runs"))
    # a yolov5n last.pt with its AdamW state is about 22 MB: 2 MB takes no checkpoint, 50 MB last.pt and best.pt of epoch 1
    script = "; ".join(f"mount -t tmpfs -o size={size} tmpfs {mnt} && {{ {train} 2>{tmp_path}/{size}.err >/dev/null; "
                       f"echo @@ {size} rc=$?; find {mnt} -type f; cat {mnt}/runs/exp/results.csv 2>/dev/null; umount {mnt}; }}"
                       for size in ("2m", "50m"))
    r = in_private_mounts(script, "a full disk")
    runs = {}
    for block in r.stdout.split("@@ ")[1:]:
        size, rc, *rest = block.split()
        runs[size] = (rc, rest)
    assert set(runs) == {"2m", "50m"}, r.stdout + r.stderr
    for size, (rc, rest) in runs.items():
        err = (tmp_path / f"{size}.err").read_text()
        assert rc == "rc=1" and "Traceback" not in err, err[-3000:]
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"error: {mnt}/runs/exp/weights: no space left to save "), line
        assert re.search(r"it needs \d+\.\d MB, \d+\.\d MB are free there", line), line
        assert not [f for f in rest if f.endswith(".tmp")], rest
    assert runs["2m"][1] == [] and "last.pt (epoch 1)" in (tmp_path / "2m.err").read_text()  # nothing left: no run, no folder
    files, csv = [f for f in runs["50m"][1] if f.startswith("/")], [f for f in runs["50m"][1] if not f.startswith("/")]
    assert f"{mnt}/runs/exp/weights/last.pt" in files and len(csv) == 2 and csv[1].startswith("1,"), runs["50m"]
    assert "goes on from epoch 2" in (tmp_path / "50m.err").read_text()


def test_read_only_project_and_weights_folder(mistakes, tmp_path):
    """A read-only --project (train, val, detect) and read-only weights to export: one line naming the folder (and
    --output for exports); --output DIR exports there."""
    import shutil

    ro, logs, out = tmp_path / "ro", tmp_path / "logs", tmp_path / "out"
    ro.mkdir()
    logs.mkdir()
    shutil.copy(mistakes["best"], ro / "best.pt")
    image = next((mistakes["data"].parent / "images" / "val").glob("*.jpg"))
    py = sys.executable
    cmds = {
        "train": f"{py} train.py --cfg cfg/yolov5n.yaml --data {mistakes['data']} --epochs 1 --img 64 --project {ro}/runs",
        "val": f"{py} val.py --weights {ro}/best.pt --data {mistakes['data']} --img 64 --project {ro}/runs",
        "detect": f"{py} detect.py --weights {ro}/best.pt --source {image} --img 64 --project {ro}/runs",
        "onnx": f"{py} export.py --weights {ro}/best.pt --include onnx --img 64",
        "openvino": f"{py} export.py --weights {ro}/best.pt --include openvino --img 64",
        "output": f"{py} export.py --weights {ro}/best.pt --include onnx --img 64 --output {out}",
    }
    runs = [f"{{ {cmd} >{logs}/{name}.log 2>&1; echo $? >{logs}/{name}.rc; }}" for name, cmd in cmds.items()]
    pairs = " ".join(f"{a} & {b} & wait;" for a, b in zip(runs[::2], runs[1::2]))  # two at a time
    r = in_private_mounts(f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} {ro} && {pairs}", "a read-only mount")
    assert r.returncode == 0, r.stderr
    said = {name: (logs / f"{name}.log").read_text() for name in cmds}
    rcs = {name: (logs / f"{name}.rc").read_text().strip() for name in cmds}
    for name in ("train", "val", "detect"):
        assert rcs[name] == "1" and "Traceback" not in said[name], said[name][-3000:]
        assert f"--project {ro}/runs: cannot make a run folder there (Read-only file system" in said[name], said[name][-3000:]
    for name in ("onnx", "openvino"):
        assert rcs[name] == "1" and "Traceback" not in said[name], said[name][-3000:]
        assert f"{ro}: cannot write the exports next to the weights (Read-only file system): choose a folder with --output DIR" in said[name]
    assert rcs["output"] == "0", said["output"][-3000:]
    assert (out / "best.onnx").is_file() and sorted(p.name for p in ro.iterdir()) == ["best.pt"]


@pytest.mark.parametrize("name", list(DATA_YAMLS))
def test_data_yamls_that_describe_no_dataset(name, tiny_data, tmp_path):
    """Each malformed data YAML is an error that names the file and says what is wrong, before the engine reads it."""
    from utils.data import load_data_config

    f = tmp_path / f"{name}.yaml"
    f.write_text(DATA_YAMLS[name].format(base=f"path: {tiny_data.parent}\ntrain: images/train\nval: images/val\n"))
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        load_data_config(f)
    assert str(e.value).startswith(f"data YAML {f}: ") and DATA_SAYS[name] in str(e.value)


def test_a_row_whose_module_is_a_mapping():
    from models.yolo import ModelConfigError, parse_model

    d = {"nc": 3, "backbone": [[-1, 1, {"Conv": 1}, [16, 3, 2]]], "head": [[-1, 1, "Detect", ["nc"]]], "yaml_file": "m.yaml"}
    with pytest.raises(ModelConfigError, match=r"m.yaml: row 0 .*: module must be a name, got \{'Conv': 1\}"):
        parse_model(d, ch=[3], verbose=False)


def test_resume_tells_runs_apart_without_run_ids(tmp_path):
    """Checkpoints from before run ids: the start folder in args.yaml and results.csv's columns decide."""
    from utils.runs import other_run

    run = tmp_path / "exp"
    (run / "weights").mkdir(parents=True)
    (run / "args.yaml").write_text(f"save_dir: {run}\nmodel: cfg/yolov5n.yaml\n")
    (run / "results.csv").write_text("epoch,time,train/box_loss,val/obj_loss\n1,1.0,0.5,0.4\n")
    last = run / "weights" / "last.pt"
    same = {"train_args": {"save_dir": str(run)}, "train_metrics": {"val/obj_loss": 0.4, "fitness": 0.1}}
    assert other_run(last, same) is None
    copied_in = {**same, "train_args": {"save_dir": str(tmp_path / "elsewhere")}}
    assert "args.yaml is another run's (cfg/yolov5n.yaml, started in" in other_run(last, copied_in)
    anchor_free = {**same, "train_metrics": {"val/dfl_loss": 0.4, "fitness": 0.1}}
    assert "results.csv has no val/dfl_loss column" in other_run(last, anchor_free)


def test_a_stream_server_that_never_answers_is_one_line_within_the_timeout(mistakes, tmp_path):
    """An RTSP server (127.0.0.1) that accepts and sends nothing: detect.py ends within --stream-timeout (default
    10 s, OpenCV's own wait is 30 s and more) with one line naming the URL, and leaves no run folder."""
    import socket

    import detect

    assert detect.parse_opt([]).stream_timeout <= 10
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)], daemon=True).start()
    url = f"rtsp://127.0.0.1:{server.getsockname()[1]}/live"
    start_time = time.time()
    r = subprocess.run([sys.executable, "detect.py", "--weights", str(mistakes["best"]), "--source", url, "--stream-timeout", "2",
                        "--project", str(tmp_path / "detect")], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    took = time.time() - start_time
    server.close()
    said = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in said, said[-3000:]
    assert held, "detect.py never connected"
    assert f"stream {url} did not open within 2s" in said.strip().splitlines()[-1], said[-2000:]
    assert took < 20, took  # start-up plus 2 s, not OpenCV's 30 s
    assert not list((tmp_path / "detect").glob("*"))


def test_huge_values_and_rows_are_refused_quickly_in_short_lines(tmp_path):
    """A 10 MB value in a model, hyp or data YAML: a line of at most a few hundred characters, in seconds; rows that
    would build too much (HorNet depths [2, 3, 100000, 2], a million channels) refused before building."""
    from models.yolo import ModelConfigError, Model
    from utils.data import DataConfigError, read_data_yaml
    from utils.hyp import HypError, load_hyp

    huge = "x" * 10_000_000
    files = {
        "model.yaml": (f"nc: 3\nbackbone: [[-1, 1, Conv, [{huge}, 3, 2]]]\nhead: [[-1, 1, Detect, [nc]]]\n", ModelConfigError, Model),
        "hyp.yaml": (f"lr0: {huge}\n", HypError, load_hyp),
        "data.yaml": (f"train: a\nval: b\nnames: {huge}\n", DataConfigError, read_data_yaml),
    }
    for name, (text, error, read) in files.items():
        (tmp_path / name).write_text(text)
        began = time.time()
        with pytest.raises(error) as e:
            read(str(tmp_path / name))
        assert len(str(e.value)) < 600 and str(tmp_path / name) in str(e.value), (name, str(e.value)[:600])
        assert time.time() - began < 30, name
    stage = [-1, 1, "HorNet", [256, 2, 3, [2, 3, 100000, 2], 64]]
    wide = [-1, 1, "Conv", [1_000_000, 3, 2]]
    heavy = [[-1, 1, "Conv", [8192, 3, 2]], [-1, 1, "Conv", [8192, 7, 1]]]  # 3.3e9 parameters in row 1
    for rows, says in (([stage], "a stage may have at most 1000 blocks"), ([wide], "more than the 8192 channels a row may have"),
                       (heavy, "row 1 [-1, 1, 'Conv', [8192, 7, 1]]: it would hold 3,288,")):
        began = time.time()
        with pytest.raises(ModelConfigError, match=re.escape(says)):
            Model({"nc": 3, "backbone": rows, "head": [[-1, 1, "Detect", ["nc"]]]}, verbose=False)
        assert time.time() - began < 5


def test_an_albumentations_file_that_is_a_yaml_bomb_is_refused_before_albumentations_reads_it(tmp_path):
    from utils.augment import AlbumentationsFileError, load_albumentations

    f = tmp_path / "bomb.yaml"
    f.write_text("".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(10)))
    began = time.time()
    with pytest.raises(AlbumentationsFileError, match=re.escape(f"{f}: refused: it expands to more than 1,000,000 values")):
        load_albumentations(f)
    assert time.time() - began < 5
