"""Training on several processes, proven on CPU processes over gloo (the GPU path is the same code with NCCL).

- every style under DistributedDataParallel on 2 processes: every parameter gets the same all-reduced gradient on
  both ranks (the Global Filter's complex weights and the layer scales included), equal to one process's on the
  combined batch within 1e-4 of its scale, and both ranks hold identical weights after the step;
- `torchrun --nproc-per-node 2 train.py ... --device cpu` trains a run;
- the launcher `train.py --device 0,1` uses (utils/ddp.py `launch`, here on CPU ranks) trains the same run from the
  parent's arguments, and a rank that fails ends the launch with one line naming it instead of a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, shapes_data_yaml
from utils.ddp import free_port

STYLES = ["yolov5n", "yolov5n-gnconv", "yolov5n-horblock", "yolov5n-hornet", "yolov5n-hornet-gf", "yolov5n-horfpn", "yolo11n-horfpn"]
ENV = {**os.environ, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def torchrun(*args, timeout=600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_every_style_trains_the_same_on_two_processes_as_on_one(tmp_path):
    r = torchrun(ROOT / "tests" / "ddp" / "parity.py", tmp_path, *STYLES)
    assert r.returncode == 0, r.stderr[-3000:]
    for style in STYLES:
        ranks = [torch.load(tmp_path / f"{style}-rank{i}.pt", weights_only=True) for i in (0, 1)]
        one = torch.load(tmp_path / f"{style}-one-process.pt", weights_only=True)
        for k, g in ranks[0]["grads"].items():
            assert g is not None and ranks[1]["grads"][k] is not None, f"{style}: {k} got no gradient"
            assert torch.equal(g, ranks[1]["grads"][k]), f"{style}: {k}'s gradient differs between the ranks"
            scale = max(float(one["grads"][k].abs().max()), 1e-12)
            assert float((g - one["grads"][k]).abs().max()) <= 1e-4 * scale, f"{style}: {k}'s gradient differs from one process"
        for k, v in ranks[0]["state"].items():
            assert torch.equal(v, ranks[1]["state"][k]), f"{style}: {k} differs between the ranks after the step"
        if style == "yolov5n-hornet-gf":  # the Global Filter's complex weights are among the all-reduced gradients
            assert any(k.endswith("complex_weight") for k in ranks[0]["grads"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return shapes_data_yaml(tmp_path_factory.mktemp("ddp"), n_train=8, n_val=4, imgsz=64, seed=5)


def test_torchrun_train_py_on_cpu_processes(tiny, tmp_path):
    r = torchrun("train.py", "--cfg", "cfg/yolov5n-hornet-gf.yaml", "--data", tiny, "--epochs", "1", "--img", "64",
                 "--batch-size", "4", "--workers", "0", "--noplots", "--noautoanchor", "--device", "cpu", "--sync-bn",
                 "--project", tmp_path, "--name", "ddp")
    said = r.stdout + r.stderr
    assert r.returncode == 0, said[-3000:]
    assert "DDP: rank 0 of 2 on the CPU (gloo)" in said and "SyncBatchNorm computes on GPUs only" in said
    rows = (tmp_path / "ddp" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and (tmp_path / "ddp" / "weights" / "last.pt").is_file()


def test_the_launcher_trains_from_the_parents_arguments(tiny, tmp_path):
    """`train.py --device 0,1` writes the run's arguments as plain YAML and starts the processes on them (no pickle):
    here the same launch on CPU ranks."""
    import train
    from utils import ddp
    from utils.trainer import HorNetTrainer

    opt = train.parse_opt(["--cfg", "cfg/yolov5n-gnconv.yaml", "--data", str(tiny), "--epochs", "1", "--img", "64",
                           "--batch-size", "4", "--workers", "0", "--noplots", "--noautoanchor", "--device", "cpu",
                           "--project", str(tmp_path)])
    trainer = HorNetTrainer(overrides=train.overrides_from(opt))
    trainer._lock.close()  # the parent would hold it during the launch; the test's processes are the parent's children
    ddp.launch(2, ddp.plain_args(trainer.args), trainer.save_dir)
    assert len((trainer.save_dir / "results.csv").read_text().splitlines()) == 2
    assert not list(trainer.save_dir.glob(".ddp_args.yaml")) and (trainer.save_dir / "weights" / "best.pt").is_file()


def test_a_failing_rank_ends_the_launch_naming_it(tmp_path):
    from utils import ddp

    start = time.time()
    with pytest.raises(RuntimeError, match="rank 1: ValueError: out of memory on purpose"):
        ddp.launch(2, {"save_dir": str(tmp_path)}, tmp_path, script=ROOT / "tests" / "ddp" / "fails_on_rank_1.py")
    assert time.time() - start < 120  # the other rank, waiting in a collective, is stopped: no hang
    assert not list(tmp_path.glob(".rank*"))


def test_gpu_check_runs_in_its_cpu_dry_mode(tmp_path):
    """benchmarks/gpu_check.py (the one command for a CUDA machine) in --dry mode: a row per style, finite bf16
    losses, the Global Filter's FFT in float32 under autocast, channels_last and a traced model agreeing."""
    out = tmp_path / "check.md"
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry", "--styles", "yolov5n-hornet-gf", "yolo11n-horfpn",
                        "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| yolo")}
    assert set(rows) == {"yolov5n-hornet-gf", "yolo11n-horfpn"}
    assert rows["yolov5n-hornet-gf"][3] == "yes"
    for cells in rows.values():
        first, last = (float(v) for v in cells[2].split(" -> "))  # bf16 loss: finite numbers
        assert first > 0 and last > 0 and float(cells[4]) < 1e-3 and float(cells[5]) < 1e-3
