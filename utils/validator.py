"""The validator that val.py and training share: the engine's DetectionValidator with our datasets and exports.

In: the validator's args (the trainer's args too: our extra keys are dropped first), a model, weights or an export.
Out: the engine's metrics (mAP50, mAP50-95, ...). Nothing here imports training code.
"""

from __future__ import annotations

from ultralytics.models.yolo.detect import DetectionValidator

from utils.data import build_yolo_dataset
from utils.export import run_in_export_precision
from utils.hyp import EXTRA_DEFAULTS


class HorNetValidator(DetectionValidator):
    """The ultralytics DetectionValidator, with datasets built by `utils.data.build_yolo_dataset` (bad rows skipped, named).

    Takes the trainer's args too: our extra keys (EXTRA_DEFAULTS) are dropped before the engine checks them.
    `compiled`, when set, is an OpenVINO CompiledModel that runs in place of the export the args name.
    """

    compiled = None

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None):
        args = {k: v for k, v in (vars(args) if not isinstance(args, dict) and args is not None else args or {}).items()
                if k not in EXTRA_DEFAULTS}
        super().__init__(dataloader, save_dir, args, _callbacks)

    def build_dataset(self, img_path: str, mode: str = "val", batch: int | None = None):
        return build_yolo_dataset(self.args, img_path, batch, self.data, mode=mode, stride=self.stride)

    def init_metrics(self, model):
        """The engine's; first an OpenVINO export is set to compute in the precision it was exported for (or swapped
        for `compiled`)."""
        if self.compiled is not None:
            model.backend.ov_compiled_model = self.compiled
        else:
            run_in_export_precision(model, self.args.model, half=self.args.quantize == 16)
        super().init_metrics(model)
