"""How much of each source's checkpoint comes across into each style: the README's "Start from pretrained weights" table.

    python benchmarks/transfer_table.py            # needs ../shared/fixtures/peer_checkpoints (YOLOv5's and YOLOAir's files)

Sources: the peer files written by YOLOv5's and YOLOAir's own code, and ultralytics checkpoints that the pinned
package writes here (untrained: the counts depend on shapes only). Each goes into every style of its own scale with
3 classes (a new data set), as `train.py --weights FILE --cfg STYLE` does; a cell is tensors moved / tensors the
model has (BatchNorm counters, strides and anchors not counted), then the rows that start new.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.checkpoints import read_weights  # noqa: E402
from models.transfer import row_ranges  # noqa: E402
from models.yolo import Model, transfer_weights  # noqa: E402

PEERS = ROOT.parent / "shared" / "fixtures" / "peer_checkpoints"
STYLES = {"n": ["yolov5n", "yolov5n-gnconv", "yolov5n-horblock", "yolov5n-hornet", "yolov5n-hornet-gf", "yolov5n-horfpn", "yolo11n-horfpn"],
          "s": ["yolov5s", "yolov5s-gnconv", "yolov5s-horblock", "yolov5s-hornet", "yolov5s-hornet-gf", "yolov5s-horfpn", "yolo11s-horfpn"]}


def sources(folder: Path) -> list[tuple[str, Path, str]]:
    """(label, file, scale) of every source; the ultralytics files are written into `folder`."""
    from ultralytics import YOLO

    found = [(f"YOLOv5 `{name}`", PEERS / name, scale) for name, scale in [("yolov5n_raccoon.pt", "n")]]
    found += [(f"YOLOAir `{name}`", PEERS / name, scale) for name, scale in
              [("yoloair_yolov5n_C3HB.pt", "n"), ("yoloair_yolo_hornet_n_backbone.pt", "n"), ("yoloair_yolov5_gnconv.pt", "s")]]
    missing = [f for _, f, _ in found if not f.is_file()]
    if missing:
        sys.exit(f"error: {missing[0]} not found: this table reads the peer checkpoints in {PEERS}")
    for name in ("yolov5nu", "yolo11n", "yolov5su", "yolo11s"):
        YOLO(f"{name}.yaml").save(folder / f"{name}.pt")
        found.append((f"ultralytics `{name}.pt`", folder / f"{name}.pt", name[-2] if name.endswith("u") else name[-1]))
    return found


def cell(model: Model, report) -> str:
    new = row_ranges([i for i, _ in report.rows_new])
    return f"{report.transferred}/{report.total}" + (f" (new: {new})" if new else "")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for label, path, scale in sources(Path(tmp)):
            weights = read_weights(path)
            cells = []
            for style in STYLES[scale]:
                model = Model(ROOT / "cfg" / f"{style}.yaml", nc=3, verbose=False)
                cells.append(cell(model, transfer_weights(model, weights, exclude=("anchors",))))
            rows.append((label, scale, cells))
    print("| source | " + " | ".join(s.replace("yolov5n", "").replace("yolo11n", "yolo11").strip("-") or "yolov5" for s in STYLES["n"]) + " |")
    print("|---|" + "---:|" * len(STYLES["n"]))
    for label, scale, cells in rows:
        print(f"| {label} ({scale}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
