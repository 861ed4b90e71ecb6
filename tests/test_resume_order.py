"""Resuming is the run that was not interrupted: epoch k's order and augmentation, and its final validation."""

from __future__ import annotations

import pytest

from conftest import shapes_data_yaml


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return shapes_data_yaml(tmp_path_factory.mktemp("shapes"), n_train=8, n_val=4, imgsz=64, seed=5)


def args(data, project, name, epochs, *more):
    import train

    return train.parse_opt(["--cfg", "cfg/yolov5n.yaml", "--data", str(data), "--epochs", str(epochs), "--img", "64",
                            "--batch-size", "4", "--workers", "0", "--noplots", "--noautoanchor", "--project", str(project),
                            "--name", name, *more])


def recorded(monkeypatch):
    """(epoch, image files, pixel sum) of every training batch."""
    from utils.trainer import HorNetTrainer

    seen = []
    original = HorNetTrainer.preprocess_batch

    def record(self, batch):
        seen.append((self.epoch, tuple(batch["im_file"]), float(batch["img"].float().sum())))
        return original(self, batch)

    monkeypatch.setattr(HorNetTrainer, "preprocess_batch", record)
    return seen


def test_a_resumed_epoch_is_the_uninterrupted_runs_epoch(tiny, tmp_path, monkeypatch):
    """Epoch 2 after a stop at the end of epoch 1 sees the images, in the order and with the augmentation (the
    engine's and an albumentations pipeline's), of epoch 2 of a run that went through; not epoch 1's again (mosaic
    off: its partners come from an image buffer)."""
    import albumentations as A

    import train

    seen = recorded(monkeypatch)
    hyp = {"mosaic": 0.0}
    pipeline = tmp_path / "albumentations.yaml"
    A.save(A.Compose([A.RandomBrightnessContrast(p=0.5)]), str(pipeline), data_format="yaml")
    more = ("--albumentations", str(pipeline))
    train.main(args(tiny, tmp_path, "through", 2, *more), hyp=hyp)
    through = list(seen)
    seen.clear()

    def stop_after_first_checkpoint(trainer):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.main(args(tiny, tmp_path, "stopped", 2, *more), hyp=hyp, callbacks={**_callbacks(), "on_model_save": [stop_after_first_checkpoint]})
    first = list(seen)
    seen.clear()
    train.main(train.parse_opt(["--resume", str(tmp_path / "stopped" / "weights" / "last.pt")]))
    resumed = list(seen)
    assert first == [b for b in through if b[0] == 0]
    assert [b[0] for b in resumed] == [1, 1]
    assert resumed == [b for b in through if b[0] == 1]
    assert [b[1] for b in resumed] != [b[1] for b in first] or [b[2] for b in resumed] != [b[2] for b in first]


def _callbacks():
    from ultralytics.utils import callbacks

    return callbacks.get_default_callbacks()


def test_a_run_stopped_in_its_final_validation_finishes_it_on_resume(tiny, tmp_path):
    """Stopped during the final validation: last.pt says it is pending, --resume runs that validation (and only
    that), and a second --resume says the run is finished."""
    import train
    from models.yolo import read_checkpoint
    from utils.runs import ResumeError

    finals = []

    def stop_in_final_validation(validator):
        if not validator.training:
            finals.append(validator)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stop:
        train.main(args(tiny, tmp_path, "exp", 1), callbacks={**_callbacks(), "on_val_start": [stop_in_final_validation]})
    last = tmp_path / "exp" / "weights" / "last.pt"
    assert str(stop.value) == f"stopped (Ctrl-C) in the final validation; python train.py --resume {last} runs it"
    assert len(finals) == 1 and read_checkpoint(last)["final_val"] == "pending"
    trainer = train.main(train.parse_opt(["--resume", str(last)]))
    assert read_checkpoint(last)["final_val"] == "done"
    assert trainer.metrics and "metrics/mAP50(B)" in trainer.metrics
    with pytest.raises(ResumeError, match="that run is finished"):
        train.main(train.parse_opt(["--resume", str(last)]))
