"""Engine glue: our model, loss, hyps and weights_only checkpoints on the ultralytics DetectionTrainer/Validator.

In: the ultralytics trainer args (`overrides`, a dict of its own keys) plus the YOLOv5-only keys in
`utils.hyp.EXTRA_DEFAULTS` (obj, anchor_t, fl_gamma, label_smoothing, drop_path, autoanchor, weights, ...), which
ride on the same args namespace (so DDP workers and checkpoints carry them) but are kept away from the
engine's key check. Out: runs under `save_dir` with results.csv and `weights/last.pt`, `best.pt` written
by `models.yolo.save_checkpoint` (plain tensors and dicts: `torch.load(..., weights_only=True)` works).

    trainer = HorNetTrainer(overrides={"model": "cfg/yolov5n-hornet.yaml", "data": "data/shapes.yaml", ...})
    trainer.train()

What differs from the stock DetectionTrainer:
- `get_model` builds `models.yolo.Model`; `nc` comes from the data (the Model says once when it overrides
  the YAML's); `--weights` transfers matching tensors from our checkpoints or loads official HorNet ones.
- `save_model`, `check_resume`, `setup_model`, `_load_checkpoint_state`, `final_eval` use our checkpoint
  format instead of pickling the model.
- Autoanchor (`utils.autoanchor.check_anchors`) runs once the training labels are loaded, before the EMA.
- For the anchor-free head the YOLOv5 loss gains (box 0.05) do not fit the ultralytics loss, so its own
  defaults (box 7.5, cls 0.5, dfl 1.5) are used unless the hyp gives `dfl`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from copy import copy
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist

from models.heads import AnchorDetect
from models.hornet import HORNET_LAYERS, set_drop_path, set_layer_scale
from models.hornet_weights import format_report, load_hornet_weights
from models.checkpoints import OFFICIAL_HORNET, OURS, Weights, plain, read_weights, weights_format
from models.yolo import Model, checkpoint_dict, checkpoint_yaml_errors, load_model, load_own_state, read_checkpoint, save_checkpoint, transfer_weights, weights_yaml, write_checkpoint
from utils import ddp
from utils.autoanchor import check_anchors
from utils.data import EpochSampler, build_yolo_dataset, load_data_config
from utils.hyp import EXTRA_DEFAULTS, HYP_KEYS, NO_EFFECT
from utils.validator import HorNetValidator
from utils.runs import RESUME_ARGS, DiskFullError, ResumeError, keep_epochs, lock_run, other_run, training_state, warn_overwrite
from ultralytics import __version__
from ultralytics.cfg import get_cfg
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT, LOCAL_RANK, LOGGER, RANK, colorstr
from ultralytics.utils.files import get_latest_run
from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

# ultralytics' own loss gains for its anchor-free head (cfg/default.yaml)
ANCHOR_FREE_GAINS = {k: DEFAULT_CFG_DICT[k] for k in ("box", "cls", "dfl")}



def _head(model) -> torch.nn.Module:
    return unwrap_model(model).model[-1]


class HorNetTrainer(DetectionTrainer):
    """DetectionTrainer for `models.yolo.Model` with YOLOv5's hyps, autoanchor and weights_only checkpoints.

    In: `overrides` as the ultralytics trainer takes them (`model` is a model YAML, or a checkpoint of ours
    to build from), plus any of `EXTRA_DEFAULTS`. Out: `train()` writes the run; `self.best`, `self.last`.
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None):
        overrides = dict(overrides or {})
        # Our keys would fail the engine's key check: set them aside, put them on args in check_resume
        self._extras = {k: overrides.pop(k) for k in list(overrides) if k in EXTRA_DEFAULTS}
        self._anchors_checked = False
        self._final_only = False  # --resume of a run whose training is done but whose final validation is not
        self._lock = None
        if RANK == -1 and overrides.get("save_dir") and not overrides.get("resume"):
            # before the engine's constructor, which rewrites args.yaml and deletes results.csv in that folder
            self._lock = lock_run(overrides["save_dir"])
            if overrides.get("exist_ok"):
                warn_overwrite(overrides["save_dir"])
        try:
            super().__init__(cfg, overrides, _callbacks)
        except BaseException:
            self.release_lock()
            raise
        if RANK == -1 and self._lock is None:  # a DDP launch's workers run under the parent's lock
            self._lock = lock_run(self.save_dir)
        self._batch_ends = []
        self.add_callback("on_train_batch_end", HorNetTrainer.say_run_time)
        if LOCAL_RANK != -1 and os.environ.get("WORLD_SIZE"):
            # started by torchrun (several machines): the process group spans all nodes, not just this one's devices
            self.world_size = int(os.environ["WORLD_SIZE"])

    def train(self):
        """The engine's training (or, for several GPUs, our launch of their processes: utils/ddp.py); the run
        folder's lock is let go when it ends, however it ends."""
        try:
            if self.ddp:
                if self.args.rect:
                    LOGGER.warning("--rect: rectangular batches do not split over several GPUs; training without")
                    self.args.rect = False
                LOGGER.info(f"DDP: {self.world_size} processes on devices {self.args.device}")
                return ddp.launch(self.world_size, ddp.plain_args(self.args), self.save_dir)
            if self._final_only:
                return self.final_validation_only()
            return super().train()
        finally:
            self.release_lock()

    def release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def say_run_time(self) -> None:
        """After the first few batches, one line with the whole run's training time; on a CPU, a quick command."""
        nb = len(self.train_loader)
        self._batch_ends.append(time.time())  # from the first batch's end: the first batch pays for warm-up
        n = len(self._batch_ends)
        if n != min(6, nb) or n == 1 or RANK not in {-1, 0}:
            return
        epochs = self.epochs - self.start_epoch
        seconds = (self._batch_ends[-1] - self._batch_ends[0]) / (n - 1) * nb * epochs
        took = f"{seconds / 3600:.1f} hours" if seconds > 5400 else f"{seconds / 60:.0f} min" if seconds > 60 else "a minute or less"
        line = f"\nestimated: about {took} for {epochs} epochs of {nb} batches, plus validation"
        if self.device.type == "cpu" and seconds > 1800 and str(self.args.model).endswith((".yaml", ".yml")):
            line += f"; on a CPU, try a quick run first: python train.py --cfg {self.args.model} --img 160 --epochs 15"
        LOGGER.info(line)

    # --- args, resume ----------------------------------------------------------------------------------

    def check_resume(self, overrides: dict):
        """Put our extra keys on args; when resuming, take all args from the checkpoint (weights_only load)."""
        resume = self.args.resume
        if not resume:
            for k, v in {**EXTRA_DEFAULTS, **self._extras}.items():
                setattr(self.args, k, v)
            self.args.run_id = self.args.run_id or uuid.uuid4().hex[:12]
            self.resume = False
            return
        last = Path(resume) if isinstance(resume, (str, Path)) and str(resume) not in {"True", "true"} else None
        if last is None:
            project = self.args.project or "runs/train"
            found = get_latest_run(project)
            if not found:
                raise FileNotFoundError(f"--resume: no last.pt under {project}; give the checkpoint: --resume path/to/last.pt")
            last = Path(found)
        if last.is_dir():  # a run folder
            last = last / "weights" / "last.pt"
        ckpt = read_checkpoint(last)
        args = dict(ckpt.get("train_args") or {})
        if not args:
            raise ResumeError(f"{last}: has no training args to resume with (not a last.pt of train.py?)")
        state = training_state(ckpt)
        self._final_only = state == "final validation"  # killed after its last epoch's checkpoint: goes on with that
        if state == "finished":
            raise ResumeError(f"--resume {last}: that run is finished (epoch {ckpt.get('epoch', -1) + 1} of {args.get('epochs')}), "
                              f"nothing to resume; to train on from its weights: python train.py --weights {last} --epochs N")
        if RANK == -1:
            self._lock = lock_run(last.resolve().parent.parent)
            problem = other_run(last, ckpt)
            if problem:
                self.release_lock()
                raise ResumeError(problem)
        extras = {k: args.pop(k) for k in list(args) if k in EXTRA_DEFAULTS}
        for k in set(NO_EFFECT) - set(DEFAULT_CFG_DICT):  # a checkpoint may carry YOLOv5's iou_t, which the engine refuses
            args.pop(k, None)
        args["save_dir"] = str(last.resolve().parent.parent)  # the run folder, wherever it is now
        for k in set(RESUME_ARGS) & set(overrides):
            args[k] = overrides[k]
        if extras.get("albumentations"):  # the checkpoint holds the transforms as text: made again from their file
            from utils.augment import load_albumentations

            args["augmentations"] = load_albumentations(extras["albumentations"])
        self.args = get_cfg(args)
        for k, v in {**EXTRA_DEFAULTS, **extras}.items():
            setattr(self.args, k, v)
        self.args.run_id = self.args.run_id or uuid.uuid4().hex[:12]  # a checkpoint from before run ids
        self.args.model = self.args.resume = str(last)
        self.resume = True
        if self._final_only:
            LOGGER.info(f"Resuming {last}: training is done, its final validation did not complete: validating now")
        else:
            LOGGER.info(f"Resuming {last} with the arguments it was started with")

    # --- data ------------------------------------------------------------------------------------------

    def get_dataset(self):
        """The data dict, through `utils.data.load_data_config`: errors that name the YAML, the embedded set built
        when missing, and a relative `--data` found from the repository root when not from the working directory."""
        if self.args.data and str(self.args.data).endswith((".yaml", ".yml")):
            self.args.data = load_data_config(self.args.data)["yaml_file"]
        return super().get_dataset()

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        gs = max(int(unwrap_model(self.model).stride.max()), 32)
        return build_yolo_dataset(self.args, img_path, batch, self.data, mode=mode, rect=mode == "val" or self.args.rect, stride=gs)

    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        """The engine's loader; in a one-process run the training order and augmentation are a function of (seed,
        epoch), so that epoch k of a resumed run is epoch k of the run that was not interrupted (see EpochSampler)."""
        loader = super().get_dataloader(dataset_path, batch_size, rank, mode)
        batches = getattr(getattr(loader, "batch_sampler", None), "sampler", None)  # the engine's _RepeatSampler
        if mode == "train" and rank == -1 and isinstance(getattr(batches, "sampler", None), torch.utils.data.RandomSampler):
            batches.sampler = EpochSampler(len(loader.dataset), self.args.seed, epoch=getattr(self, "epoch", 0) or 0)
            loader.dataset.sample_seed = int(self.args.seed)
        return loader

    def train_sampler(self) -> EpochSampler | None:
        batches = getattr(getattr(getattr(self, "train_loader", None), "batch_sampler", None), "sampler", None)
        sampler = getattr(batches, "sampler", None)
        return sampler if isinstance(sampler, EpochSampler) else None

    def _close_dataloader_mosaic(self):
        """The engine's; the loader's iterator is made anew after it, so its next pass is this epoch's order."""
        super()._close_dataloader_mosaic()
        if self.train_sampler() is not None:
            self.train_sampler().epoch = self.epoch

    # --- model -----------------------------------------------------------------------------------------

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """Our Model from a YAML path or dict, nc from the data; `weights` a path (ours or official HorNet)."""
        model = Model(cfg, ch=self.data.get("channels", 3), nc=self.data["nc"], verbose=verbose and RANK == -1)
        self.set_model_names_for_load(model)
        layer_scale = float(getattr(self.args, "layer_scale", EXTRA_DEFAULTS["layer_scale"]))
        if layer_scale != EXTRA_DEFAULTS["layer_scale"] and set_layer_scale(model, layer_scale):  # the blocks' own init is 1e-6
            LOGGER.info(f"layer scale: HorBlocks start at {layer_scale:g} (the paper's: 1e-6)")
        if weights and isinstance(weights, (str, Path)):
            self.load_weights(model, weights, verbose=bool(getattr(self.args, "verbose_transfer", False)))
        elif isinstance(weights, torch.nn.Module):
            model.load_state_dict(weights.state_dict(), strict=False)
        if getattr(self.args, "drop_path", 0):
            set_drop_path(model, float(self.args.drop_path))
            LOGGER.info(f"drop path: up to {self.args.drop_path} over the HorBlocks")
        return model

    @staticmethod
    def load_weights(model, path, exclude=("anchors",), verbose: bool = False):
        """Official HorNet ImageNet weights into the HorNet rows, or what fits of any detector's checkpoint (rows
        aligned, see models.transfer); one summary line, every tensor with `verbose`. `path` may be read already."""
        weights = path if isinstance(path, Weights) else read_weights(path)
        path = weights.path
        if weights.source == OFFICIAL_HORNET:
            report = load_hornet_weights(model, weights.state, verbose=False)
            LOGGER.info(f"HorNet ImageNet weights from {path}:\n{format_report(report)}")
            return report
        report = transfer_weights(model, weights, exclude)
        LOGGER.info(report.summary())
        if verbose:
            LOGGER.info("\n".join(report.details()))
        if not report.transferred:
            LOGGER.warning(f"--weights {path}: nothing fits this model (another scale or another kind of model?): it trains from scratch")
        return report

    def setup_model(self):
        """Build the model: from the resume checkpoint, from a checkpoint of ours, or from the YAML + weights."""
        if isinstance(self.model, torch.nn.Module):  # given beforehand (DDP worker, Python API)
            return None
        if self.resume:
            ckpt = read_checkpoint(self.args.resume)
            with checkpoint_yaml_errors(self.args.resume, ckpt["model_yaml"]):
                self.model = self.get_model(cfg=ckpt["model_yaml"], verbose=RANK in {-1, 0})
            load_own_state(self.model, ckpt["model"], self.args.resume)
            return ckpt
        cfg, weights = self.args.model, self.args.weights or None
        if weights_format(cfg) == "checkpoint":  # --weights FILE without --cfg: the file's own model, its anchors
            source = read_weights(cfg)
            d = weights_yaml(source)
            with checkpoint_yaml_errors(cfg, d) if source.source == OURS else contextlib.nullcontext():
                self.model = self.get_model(cfg=d, verbose=RANK in {-1, 0})
            self.load_weights(self.model, source, exclude=(), verbose=bool(getattr(self.args, "verbose_transfer", False)))
            return None
        self.model = self.get_model(cfg=cfg, weights=weights, verbose=RANK in {-1, 0})
        return None

    def set_model_attributes(self):
        """nc, names, args onto the model; the anchor-free head gets the ultralytics loss gains; --sync-bn."""
        super().set_model_attributes()
        if getattr(self.args, "sync_bn", False) and self.world_size > 1:  # before the engine wraps the model in DDP
            n = ddp.sync_batchnorm(self.model, self.device)
            LOGGER.info(f"--sync-bn: {n} BatchNorms synchronised over the {self.world_size} processes" if n else
                        "--sync-bn: torch's SyncBatchNorm computes on GPUs only: the CPU processes keep their own BatchNorms")
        if not isinstance(_head(self.model), AnchorDetect):
            if self.args.box < 1:
                # box 0.05 is YOLOv5's gain for its CIoU loss; the ultralytics loss is scaled for 7.5
                LOGGER.info(f"anchor-free head: ultralytics loss gains {ANCHOR_FREE_GAINS} instead of the hyp's box/cls")
                for k, v in ANCHOR_FREE_GAINS.items():
                    setattr(self.args, k, v)

    def _build_train_pipeline(self):
        """Dataloaders, then autoanchor once (before the EMA copy is made, after the labels are loaded)."""
        head = _head(self.model)
        if not hasattr(head, "max_det"):
            head.max_det = self.args.max_det  # the engine sets it on the head and warns when it has none
        super()._build_train_pipeline()
        if self._anchors_checked or self.resume:
            return
        self._anchors_checked = True
        if not isinstance(_head(self.model), AnchorDetect):
            return
        if not self.args.autoanchor:
            LOGGER.info(f"{colorstr('AutoAnchor: ')}skipped (--noautoanchor)")
            return
        if RANK in {-1, 0}:
            check_anchors(self.train_loader.dataset, unwrap_model(self.model), thr=self.args.anchor_t, imgsz=self.args.imgsz)
        if self.world_size > 1:  # the other ranks take rank 0's anchors
            dist.broadcast(_head(self.model).anchors, src=0)

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """The engine's optimizer, with every 1-D parameter (HorBlock layer scales) moved out of weight decay, and
        the HorNet layers' parameters at `hornet_lr_scale` x the learning rate.

        The official HorNet code decays no 1-D parameter; the engine decays everything that is neither a bias
        nor inside a *Norm module. Norm weights and biases are already in the engine's decay-free groups.
        Split groups keep their `param_group` name, so the engine's warm-up and weight-decay updates treat them
        as it treats the group they came from; the schedule scales every group's own initial lr.
        """
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        decayed = next((g for g in optimizer.param_groups if g.get("param_group") == "weight"), {"params": []})
        one_d = [p for p in decayed["params"] if p.ndim <= 1]
        if one_d:
            ids = {id(p) for p in one_d}
            decayed["params"] = [p for p in decayed["params"] if id(p) not in ids]
            optimizer.add_param_group({**{k: v for k, v in decayed.items() if k != "params"}, "params": one_d,
                                       "weight_decay": 0.0, "param_group": "no_decay"})
            LOGGER.info(f"optimizer: {len(one_d)} 1-D weights (layer scales) without weight decay")
        scale = float(getattr(self.args, "hornet_lr_scale", 1.0))
        if scale != 1.0:  # each group's HorNet-layer parameters become a group of their own at scale x its lr
            hornet = {id(p) for m in unwrap_model(model).modules() if isinstance(m, HORNET_LAYERS) for p in m.parameters()}
            for group in list(optimizer.param_groups):
                slow = [p for p in group["params"] if id(p) in hornet]
                if slow:
                    group["params"] = [p for p in group["params"] if id(p) not in hornet]
                    optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": slow, "lr": group["lr"] * scale})
            optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
            LOGGER.info(f"optimizer: the HorNet layers' {len(hornet)} tensors at {scale:g} x lr0")
        return optimizer

    def get_validator(self):
        self.loss_names = ()  # named by the criterion's dict on the first batch
        return HorNetValidator(self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks)

    # --- checkpoints -----------------------------------------------------------------------------------

    def checkpoint_extras(self) -> dict:
        """Everything but the model that last.pt holds, as plain data."""
        return plain(
            {
                "epoch": self.epoch,
                "best_fitness": self.best_fitness,
                "fitness": self.fitness,
                "updates": self.ema.updates,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "stopper": {"best_fitness": self.stopper.best_fitness, "best_epoch": self.stopper.best_epoch},
                "hyp": {k: getattr(self.args, k, None) for k in HYP_KEYS},
                "train_args": vars(self.args),
                "train_metrics": {**(self.metrics or {}), "fitness": self.fitness},
                "train_time": time.time() - self.train_time_start,  # so a resumed run's time column continues
                "date": datetime.now().astimezone().isoformat(),
                "version": f"ultralytics {__version__}",
            }
        )

    def save_model(self) -> bool:
        """last.pt (and best.pt, epochN.pt) via models.yolo.save_checkpoint: atomic, weights_only loadable (the
        engine's pickles the model)."""
        ema, live = self.ema.ema.state_dict(), unwrap_model(self.model).state_dict()
        for k, v in ema.items():  # as the engine does: a transient NaN/Inf must not poison the EMA for good
            if v.is_floating_point() and not torch.isfinite(v).all() and torch.isfinite(live[k]).all():
                v.copy_(live[k])
        self.wdir.mkdir(parents=True, exist_ok=True)
        extras = self.checkpoint_extras()
        copies = []
        if self.best_fitness == self.fitness:
            copies.append(self.best)
        if self.save_period > 0 and self.epoch % self.save_period == 0:
            copies.append(self.wdir / f"epoch{self.epoch}.pt")
        target = self.last
        try:
            save_checkpoint(self.last, self.ema.ema, **extras)
            for target in copies:  # copy then rename, so a kill never leaves half a file
                tmp = target.with_name(target.name + ".tmp")
                shutil.copyfile(self.last, tmp)
                os.replace(tmp, target)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError of its zip writer
            self.saving_failed(target, e, extras)
            raise
        return True

    def saving_failed(self, target: Path, error: Exception, extras: dict) -> None:
        """A checkpoint that could not be written: its temp file removed, results.csv cut back to what last.pt holds;
        DiskFullError naming the folder and the space needed when the disk is full, else back to the caller."""
        tmp = target.with_name(target.name + ".tmp")
        partial = tmp.stat().st_size if tmp.is_file() else 0
        free = shutil.disk_usage(self.wdir).free + partial  # the space the half-written file holds comes back
        if target == self.last:
            import io

            buffer = io.BytesIO()
            torch.save(checkpoint_dict(self.ema.ema, **extras), buffer)
            needed = buffer.tell()
        else:
            needed = self.last.stat().st_size
        full = (isinstance(error, OSError) and error.errno == errno.ENOSPC) or needed >= free
        if full:
            e = error
            while e is not None:  # the frames of the chain hold the half-written file open, and so its space
                e.__traceback__, e = None, e.__context__
        tmp.unlink(missing_ok=True)
        held = read_checkpoint(self.last).get("epoch", -1) + 1 if self.last.is_file() else 0
        try:
            keep_epochs(self.csv, held)
        except OSError as e:
            LOGGER.warning(f"{self.csv}: could not drop the row(s) after epoch {held}, which last.pt does not hold ({e})")
        if not full:
            return
        then = (f"python train.py --resume {self.last} goes on from epoch {held + 1}" if held
                else "no checkpoint was saved, nothing to resume")
        raise DiskFullError(f"{self.wdir}: no space left to save {target.name} (epoch {self.epoch + 1}): it needs "
                            f"{needed / 1e6:.1f} MB, {free / 1e6:.1f} MB are free there; {then}") from None

    def _setup_ddp(self):
        """Join the process group: the engine's for GPUs, gloo for CPU ranks (torchrun ... --device cpu)."""
        if self.device.type != "cpu":
            return super()._setup_ddp()
        backend = ddp.setup_process_group(RANK, self.world_size, self.device)
        LOGGER.info(f"DDP: rank {RANK} of {self.world_size} on the CPU ({backend})")

    def _setup_train(self):
        """The engine's setup (its DDP wrapper taking CPU modules), the weight EMA's decay ramp set from the hyps."""
        with ddp.cpu_ddp() if self.world_size > 1 and self.device.type == "cpu" else contextlib.nullcontext():
            super()._setup_train()
        self.ema.decay = self.ema_ramp()

    def ema_ramp(self):
        """The engine's EMA decay ramp at this run's ema_decay and ema_tau (that of a ModelEMA of an empty module)."""
        return ModelEMA(torch.nn.Module(), decay=float(self.args.ema_decay), tau=float(self.args.ema_tau)).decay

    def _load_checkpoint_state(self, ckpt: dict):
        """Optimizer, scaler, EMA, best fitness and early-stopping state from our checkpoint."""
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.ema.load_state_dict(ckpt["model"])
            self.ema.updates = ckpt.get("updates", 0)
        self.best_fitness = ckpt.get("best_fitness")
        self.stopper.__dict__.update(ckpt.get("stopper") or {})

    def _handle_nan_recovery(self, epoch: int) -> bool:
        """NaN/Inf loss or fitness: go back to last.pt and redo the epoch (the engine's own reload unpickles)."""
        bad = (self.loss is not None and not torch.isfinite(self.loss).all()) or (
            self.fitness is not None and not np.isfinite(self.fitness)
        )
        flag = [bool(bad) if RANK in {-1, 0} else None]
        if RANK != -1:
            dist.broadcast_object_list(flag, 0)  # every rank must take the same branch
        if not flag[0]:
            return False
        if epoch == self.start_epoch or not self.last.is_file():
            LOGGER.warning("NaN/Inf loss or fitness in the first epoch: no checkpoint to go back to, going on")
            return False
        self.nan_recovery_attempts += 1
        if self.nan_recovery_attempts > 3:
            raise RuntimeError(f"training failed: NaN/Inf for {self.nan_recovery_attempts} epochs in a row")
        LOGGER.warning(f"NaN/Inf loss or fitness: back to {self.last} (attempt {self.nan_recovery_attempts}/3)")
        ckpt = read_checkpoint(self.last)
        self._model_train()
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self._load_checkpoint_state(ckpt)
        self.scheduler.last_epoch = epoch - 1
        return True

    def resume_training(self, ckpt):
        """Continue at the epoch after the checkpoint's; results.csv's time column goes on from where it stopped."""
        super().resume_training(ckpt)
        if ckpt is not None and self.resume:
            if self.train_sampler() is not None:
                self.train_sampler().epoch = self.start_epoch
            dropped = keep_epochs(self.csv, self.start_epoch)
            if dropped:
                LOGGER.info(f"results.csv: dropped {dropped} row(s) after epoch {self.start_epoch}, which last.pt does not hold "
                            "(the run stopped between writing the two)")
            done = float(ckpt.get("train_time") or 0.0)
            self.add_callback("on_train_start", lambda t: setattr(t, "train_time_start", t.train_time_start - done))

    def final_validation_only(self):
        """The final validation of a run whose training ended before it completed (what final_eval does after the
        last epoch), on this process's device."""
        self.strip_optimizers()  # as final_eval leaves them
        if not self.best.is_file():
            raise ResumeError(f"--resume {self.last}: training is done but {self.best} is missing: nothing to validate")
        self.validator = HorNetValidator(save_dir=self.save_dir, args={**vars(self.args), "mode": "val", "compile": False},
                                         _callbacks=self.callbacks)
        LOGGER.info(f"\nValidating {self.best}...")
        self.metrics = self.validator(model=load_model(self.best, device=self.device))
        self.mark_final_val_done()
        return self.metrics

    def strip_optimizers(self) -> None:
        """last.pt and best.pt without their optimizer state (as YOLOv5 leaves them), last.pt marked as awaiting its
        final validation (--resume runs it when it did not complete). On a full disk a file stays whole, as it was."""
        if RANK not in {-1, 0}:
            return
        for f in (self.last, self.best):
            if not f.is_file():
                continue
            ckpt = read_checkpoint(f)
            try:
                write_checkpoint(f, {**ckpt, "optimizer": None, **({"final_val": "pending"} if f == self.last else {})})
            except (OSError, RuntimeError) as e:
                f.with_name(f.name + ".tmp").unlink(missing_ok=True)
                LOGGER.warning(f"{f}: kept with its optimizer state, the smaller copy could not be written ({str(e).splitlines()[0][:120]})")

    def mark_final_val_done(self) -> None:
        if RANK in {-1, 0} and self.last.is_file():
            write_checkpoint(self.last, {**read_checkpoint(self.last), "final_val": "done"})

    def final_eval(self):
        """Drop the optimizer from last.pt/best.pt (as YOLOv5 does), then validate best.pt.

        In a DDP run every rank validates its share of the images with best.pt's weights in its EMA, as after each
        epoch: the engine's stand-alone validator would put any DDP rank on a CUDA device, CPU ranks included.
        """
        self.strip_optimizers()
        if self.world_size > 1:
            dist.barrier()  # best.pt is written
        if not self.best.is_file():
            self.mark_final_val_done()
            return
        LOGGER.info(f"\nValidating {self.best}...")
        self.validator.args.plots = self.args.plots
        self.validator.args.compile = False
        if self.world_size > 1:
            self.ema.ema.load_state_dict(read_checkpoint(self.best)["model"])
            self.metrics = self.validator(trainer=self)
        else:
            self.metrics = self.validator(model=load_model(self.best, device=self.device))
        self.mark_final_val_done()
        if RANK not in {-1, 0}:
            return  # the metrics are rank 0's
        self.metrics.pop("fitness", None)
        self.epoch += 1  # log best metrics at step epochs+1, not overwriting the last epoch
        self.run_callbacks("on_fit_epoch_end")
        self.epoch -= 1
