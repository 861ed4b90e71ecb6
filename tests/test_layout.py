"""The code's layout rules that no other test would notice breaking."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_FIRST = {"models", "utils", "bench_env"}  # importing any of them runs models/__init__ (offline, safe loading)


def first_import_lines(path: Path) -> dict[str, int]:
    """The line of the first top-level import of each top-level package in a file."""
    first = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            first.setdefault(name.split(".")[0], node.lineno)
    return first


def test_the_project_settings_come_before_the_engine_in_every_file():
    """No script imports ultralytics before `models`, `utils` or `bench_env` (whose import sets offline mode and safe
    loading, which the engine reads as it loads). Inside models/ and utils/ the package's __init__ runs first."""
    assert "models" in first_import_lines(ROOT / "utils" / "__init__.py")
    files = [*ROOT.glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    wrong = []
    for path in files:
        lines = first_import_lines(path)
        if "ultralytics" in lines and lines["ultralytics"] < min((lines.get(p, 10**9) for p in SETTINGS_FIRST)):
            wrong.append(str(path.relative_to(ROOT)))
    assert len(files) > 10 and not wrong, wrong


def test_the_scripts_load_offline_and_inference_scripts_load_no_training_code():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import detect, val, export, os\n"
            "import ultralytics.utils as u\n"
            "print(os.environ['YOLO_OFFLINE'], u.ONLINE, u.SAFE_LOAD if hasattr(u, 'SAFE_LOAD') else 'n/a',\n"
            "      sorted(m for m in sys.modules if m in ('utils.trainer', 'utils.ddp', 'utils.evolve', 'train')))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "YOLO_OFFLINE"}
    r = subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    offline, online, safe, training = r.stdout.split(maxsplit=3)
    assert (offline, online, training.strip()) == ("1", "False", "[]"), r.stdout
