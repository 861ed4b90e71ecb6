"""Albumentations pipelines from files, for `train.py --albumentations FILE`.

A pipeline is written in albumentations' own serialization format (`A.save(pipeline, path,
data_format="yaml")`, see `data/hyps/albumentations.yaml`). `load_albumentations(path)` returns its
transforms as the list the ultralytics `augmentations` training argument takes: the engine's
`Albumentations` step composes them itself with YOLO-format bbox parameters whenever a transform moves
pixels (flips, crops, affine...), so the boxes follow the image. Any `bbox_params` stored in the file
are therefore not used.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network


class AlbumentationsFileError(ValueError):
    """A file given as an albumentations pipeline that is not one (the message names the file)."""


def load_albumentations(path) -> list:
    """Transforms of a pipeline saved with `A.save(..., data_format="yaml")` (or "json" for .json files).

    In: path to the file. Out: a list of albumentations transforms for the ultralytics `augmentations`
    argument. A saved `Compose` gives its transforms; when the Compose has p < 1 they come back wrapped in
    one `A.Sequential` with that p, so the whole pipeline still runs with that probability. A file holding
    a single transform (or `OneOf`, `SomeOf`...) gives a list of that one item.
    Raises FileNotFoundError for a missing file and AlbumentationsFileError (a ValueError) for a file
    that albumentations cannot read as a serialized pipeline; both name the file.
    """
    import albumentations as A

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"albumentations pipeline file not found: {path}")
    data_format = "json" if path.suffix.lower() == ".json" else "yaml"
    if data_format == "yaml":  # albumentations builds the whole file with PyYAML: the alias bound first
        import yaml

        from models.safe_yaml import YAMLTooLarge, load_yaml

        try:
            load_yaml(path.read_text(), path)
        except YAMLTooLarge as e:
            raise AlbumentationsFileError(str(e)) from None
        except (yaml.YAMLError, UnicodeDecodeError):
            pass  # albumentations' own message says what is wrong
    try:
        pipeline = A.load(str(path), data_format=data_format)
    except Exception as e:  # YAML syntax errors, missing 'transform' key, unknown transform names...
        raise AlbumentationsFileError(
            f"{path}: not an albumentations pipeline saved with A.save(..., data_format='{data_format}'): "
            f"{type(e).__name__}: {e}"
        ) from e
    if not isinstance(pipeline, A.BasicTransform | A.BaseCompose):
        raise AlbumentationsFileError(f"{path}: holds a {type(pipeline).__name__}, not an albumentations transform")

    if type(pipeline) is A.Compose:
        transforms = list(pipeline.transforms)
        if pipeline.p < 1.0:  # the engine composes with p=1: keep the file's probability for the whole list
            return [A.Sequential(transforms, p=pipeline.p)]
        return transforms
    return [pipeline]
