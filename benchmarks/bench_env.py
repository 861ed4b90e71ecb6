"""Process setup shared by the benchmarks; import it first (before torch).

The project root on sys.path, the project's process settings (importing `models`: offline mode, safe loading), and
`--passive`: OpenMP threads sleep instead of spinning while they wait. On a machine shared with other jobs, spinning threads are descheduled mid-barrier: yolov5n inference
at 320 measured 2200 ms that way against 29 ms with passive waiting. On a quiet machine the default is the fair
setting: passive waiting costs a wake-up per parallel region, which hurts code with many small ops (the plain
form) more than ours. It must be set before torch loads.
"""

import os
import sys
from pathlib import Path

if "--passive" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401
