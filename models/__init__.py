"""HorNet-YOLOv5 models: the YAML parser (`models.yolo`), HorNet layers (`models.hornet`), heads."""

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # never wait on a network time-out: this project works offline
