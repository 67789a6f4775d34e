"""`[model] check_command` (run by the pipeline in each platform's release image before the
push): the baked-in coef.npy loads with this image's numpy, is the exact bytes of the
registered version (sha256 from registered.json), and predicts a finite demand.

Exit 0 with one line on stdout; non-zero with the reason as the last stderr line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np

from app.model import MODEL_FILE, DemandModel, ModelError

PROBE = {"temperature": 20.0, "humidity": 0.6, "windspeed": 10.0, "hour": 8, "weekday": 1}


def main() -> int:
    folder = Path(os.environ.get("MODEL_DIR", "/srv/model"))
    path = folder / MODEL_FILE
    try:
        model = DemandModel.load(path)
        registered = json.loads((folder / "registered.json").read_text())
    except (ModelError, OSError, ValueError) as exc:
        print(f"model check: {exc}", file=sys.stderr)
        return 1
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    want = str(registered.get("sha256", ""))
    if sha != want:
        print(f"model check: {path} has sha256 {sha[:12]}, registered.json says {want[:12]}",
              file=sys.stderr)
        return 1
    rentals = model.predict_one(PROBE)
    if not math.isfinite(rentals):
        print(f"model check: prediction {rentals} is not finite", file=sys.stderr)
        return 1
    print(f"{registered.get('name')} v{registered.get('version')} sha256 {sha[:12]}: "
          f"{rentals:.1f} rentals/h on {platform.machine()} (numpy {np.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
