"""Training, data and runtime glue on the ultralytics engine.

Importing this package imports `models` first, whose __init__ sets the process-wide settings (offline mode, safe
loading) before the engine loads: every script's first project import, `models` or `utils`, does it.
"""

import models  # noqa: F401
