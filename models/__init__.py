"""HorNet-YOLOv5 models: the YAML parser (`models.yolo`), HorNet layers (`models.hornet`), heads, checkpoints.

Importing this package sets, before the ultralytics engine loads, the process-wide settings every entry point
needs: offline mode (never wait on a network time-out) and safe loading. `TORCH_FORCE_WEIGHTS_ONLY_LOAD` makes
every `torch.load` in the process, the engine's included, read data only (no pickled code runs, whatever a caller
asks for), and `ULTRALYTICS_SAFE_LOAD` switches the engine's own checkpoint loader to its restricted mode.
"""

import os
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # torch refuses to load with both set
for _name in ("ultralytics.utils", "ultralytics.nn.tasks"):  # imported before this package: they read the flag already
    if hasattr(sys.modules.get(_name), "SAFE_LOAD"):
        sys.modules[_name].SAFE_LOAD = True
