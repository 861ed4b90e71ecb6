"""Run by tests/test_ddp.py under torch.distributed.run (2 CPU processes, gloo); not a test file itself.

For each style: the same model (seed 0, layer scales 1 so every HorNet weight gets real gradients, BatchNorms in
eval so that no statistic depends on how the batch is split) takes one backward pass and one SGD step under
DistributedDataParallel, each rank on half of a batch of 4, with a loss that is a mean over images (of the squared
outputs' sums). Each rank writes its gradients (all-reduced by DDP) and its weights after the step; rank 0 also
writes the same on the whole batch in one process.
"""

import os
import sys
from copy import deepcopy
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401
from models.hornet import set_layer_scale  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.ddp import CPUDistributedDataParallel, setup_process_group  # noqa: E402


def tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for item in x for t in tensors(item)] if isinstance(x, (list, tuple)) else []


def step(model, x, named) -> dict:
    """One backward and SGD step; the gradients by name (None where a parameter got none)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    optimizer.zero_grad()
    loss = sum(t.float().pow(2).sum() for t in tensors(model(x))) / len(x)  # a mean over images
    loss.backward()
    grads = {k: (p.grad.clone() if p.grad is not None else None) for k, p in named.named_parameters() if p.requires_grad}
    optimizer.step()
    return grads


def main(out: Path, styles: list[str]):
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    setup_process_group(rank, world, torch.device("cpu"))
    for style in styles:
        torch.manual_seed(0)
        model = Model(ROOT / "cfg" / f"{style}.yaml", nc=2, verbose=False).train()
        set_layer_scale(model, 1.0)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        reference = deepcopy(model)
        grads = step(CPUDistributedDataParallel(model, find_unused_parameters=True), x[2 * rank:2 * rank + 2], model)
        torch.save({"grads": grads, "state": model.state_dict()}, out / f"{style}-rank{rank}.pt")
        if rank == 0:
            grads = step(reference, x, reference)
            torch.save({"grads": grads, "state": reference.state_dict()}, out / f"{style}-one-process.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
