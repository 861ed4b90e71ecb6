"""Run by tests/test_ddp.py under torch.distributed.run: rank 1 fails after joining, rank 0 waits for it in a
collective. The launch must end (not hang) and name rank 1."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from utils.ddp import report_failure, setup_process_group  # noqa: E402

if __name__ == "__main__":
    save_dir = Path(sys.argv[1]).parent  # launch() passes its args file, which sits in the run folder
    rank = int(os.environ["RANK"])
    setup_process_group(rank, int(os.environ["WORLD_SIZE"]), torch.device("cpu"))
    if rank == 1:
        error = ValueError("out of memory on purpose")
        report_failure(save_dir, error)
        raise error
    dist.barrier()
