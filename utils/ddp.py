"""Training on several processes (DDP): GPUs with NCCL, CPU processes with gloo, one code path for both launches.

- `torchrun --nproc-per-node N train.py ... [--device cpu | --device 0,1,...]`: each process is one rank and runs
  train.py as it is (HorNetTrainer reads RANK, LOCAL_RANK and WORLD_SIZE from the environment).
- `train.py --device 0,1,2,3` (and `YOLO(...).train(device="0,1")`): the parent writes the run's arguments as plain
  YAML and starts `torch.distributed.run` on this module, whose processes build the same HorNetTrainer from them.
  The engine's own launcher pickles the trainer into a file that its workers unpickle; this project reads no
  pickle (models/__init__.py forces weights_only loading), and that launcher also empties the run folder first.

CPU ranks use gloo (`setup_process_group`); the engine wraps the model with `device_ids=[device.index]`, which
DistributedDataParallel refuses for a CPU module, so `cpu_ddp` hands the engine a DDP class that drops them there.
torch's SyncBatchNorm runs on GPUs only: `--sync-bn` converts the BatchNorms of a GPU run and says so on CPUs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = timedelta(minutes=10)  # a rank that does not answer a collective for this long fails the run (not 3 hours)


def setup_process_group(rank: int, world_size: int, device: torch.device) -> str:
    """Join the process group: NCCL for CUDA devices, gloo for CPU processes; returns the backend's name."""
    backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT, rank=rank, world_size=world_size)
    return backend


class CPUDistributedDataParallel(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that takes a CPU module with the device_ids the engine passes (it needs none)."""

    def __init__(self, module: nn.Module, device_ids=None, output_device=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = output_device = None
        super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)


@contextlib.contextmanager
def cpu_ddp():
    """While the engine sets training up, its `nn.parallel.DistributedDataParallel(...)` is CPUDistributedDataParallel
    (a subclass: the engine's isinstance checks still hold)."""
    original = nn.parallel.DistributedDataParallel
    nn.parallel.DistributedDataParallel = CPUDistributedDataParallel
    try:
        yield
    finally:
        nn.parallel.DistributedDataParallel = original


def sync_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Convert every BatchNorm to SyncBatchNorm (as YOLOv5's --sync-bn does; LayerNorms stay); returns how many.
    torch's SyncBatchNorm computes on GPUs only, so CPU runs keep their BatchNorms (0)."""
    if device.type != "cuda":
        return 0
    count = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return count


def plain_args(args) -> dict:
    """A trainer's args as plain YAML data: what a worker needs to build the same trainer (transform objects are
    rebuilt from their file, `albumentations`)."""
    out = {}
    for k, v in vars(args).items():
        if k == "augmentations":
            continue
        out[k] = str(v) if isinstance(v, Path) else v
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world_size: int, args: dict, save_dir: Path, script: Path | None = None) -> None:
    """Run `world_size` processes of `script` (this module by default) on `args` through torch.distributed.run.

    Each failing rank leaves `save_dir/.rank<N>.failed` with its one-line reason; RuntimeError names them.
    """
    save_dir = Path(save_dir)
    args_file = save_dir / ".ddp_args.yaml"
    args_file.write_text(yaml.safe_dump(args))
    for f in save_dir.glob(".rank*.failed"):
        f.unlink()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world_size), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script or Path(__file__)), str(args_file)]
    try:
        code = subprocess.run(cmd, cwd=ROOT).returncode
    finally:
        args_file.unlink(missing_ok=True)
    failed = sorted(save_dir.glob(".rank*.failed"))
    reasons = [f"rank {f.name[5:-7]}: {f.read_text().strip()}" for f in failed]
    for f in failed:
        f.unlink()
    if code != 0 or reasons:
        raise RuntimeError(f"DDP training failed ({'; '.join(reasons) or f'torch.distributed.run exited with {code}'})")


def report_failure(save_dir, e: BaseException) -> None:
    """In a worker: leave the reason this rank failed for the launcher to name."""
    rank = os.environ.get("RANK", "?")
    line = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    with contextlib.suppress(OSError):
        (Path(save_dir) / f".rank{rank}.failed").write_text(line)


def worker(args_file: str) -> None:
    """One rank of a launch: the trainer from the parent's arguments, trained."""
    sys.path.insert(0, str(ROOT))
    from utils.trainer import HorNetTrainer

    args = yaml.safe_load(Path(args_file).read_text())
    if args.get("albumentations"):
        from utils.augment import load_albumentations

        args["augmentations"] = load_albumentations(args["albumentations"])
    try:
        HorNetTrainer(overrides=args).train()
    except BaseException as e:
        report_failure(args.get("save_dir") or ".", e)
        raise


if __name__ == "__main__":
    worker(sys.argv[1])
