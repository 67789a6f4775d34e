"""The training environment: which interpreter `python` in train_command means, and what
that interpreter (or image) really has installed, recorded on the run.

A project that declares its own environment (`[model] python`, or a `.venv` in the
project) trains in it, not silently in ci's venv: a model pickled with ci's numpy 2.x must
not pass for one the project's numpy can load. The versions are read BY that interpreter.
"""

from __future__ import annotations

import contextlib
import json
import platform as _platform
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ci.adapters import proc
from ci.core import inputs as rules
from ci.core.config import Config, ModelConfig
from ci.core.errors import CIError, ConfigError, ConfigProblem

PYTHON_NAMES = {"python", "python3"}
KEY_PACKAGES = ("numpy", "scikit-learn", "mlflow", "torch", "pandas", "joblib")
PROBE_TIMEOUT = 120.0
TAG_LIMIT = 5000  # MLflow's smallest tag value limit across stores
ENV_TAG = "maci.train.env"
PYTHON_TAG = "maci.train.python"
PACKAGES_TAG = "maci.train.packages"
IMAGE_TAG = "maci.train.image"
# Run BY the training interpreter: its own version and the distributions it can import.
PROBE = """\
import json, platform, sys
from importlib import metadata
found = {}
for name in json.loads(sys.argv[1]):
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps({"python": platform.python_version(), "executable": sys.executable,
                  "packages": found}))
"""
_PYTHON_BINARY = re.compile(r"python[0-9.]*")


@dataclass(frozen=True)
class Setup:
    """How train_command runs: the resolved argv, why (the `maci.train.env` text), and the
    argv prefix that starts the same interpreter for the probe ([] = none to ask)."""

    argv: list[str]
    description: str
    probe: list[str] = field(default_factory=list)
    probe_env: Mapping[str, str] | None = None  # e.g. the docker CLI's env (DOCKER_HOST)
    image: str = ""  # the training image's id (container training only)
    platform: str = ""  # the container's platform (container training only)


@dataclass(frozen=True)
class Probe:
    """What the interpreter reported; `error` says why it could not (then nothing is known)."""

    python: str = ""
    executable: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    error: str = ""


def interpreter(config: Config, model: ModelConfig, workdir: Path) -> tuple[str, str]:
    """(path, why): `model.python`, else the project's `.venv` (workdir, then root), else
    the interpreter running ci. Symlinks are kept: a venv's python IS its symlink."""
    root = config.root_path.resolve()
    if model.python:
        value = model.python
        if "/" in value:
            path = Path(value) if Path(value).is_absolute() else root / value
            if not path.is_file():
                raise ConfigError([ConfigProblem(
                    "model.python", value, f"no such file (a relative path is under {root})")])
            return str(path), "model.python"
        found = shutil.which(value)
        if found is None:
            raise ConfigError([ConfigProblem("model.python", value, "not found on PATH")])
        return found, f"model.python {value!r} on PATH"
    for folder in dict.fromkeys([workdir, root]):
        venv = folder / ".venv" / "bin" / "python"
        if venv.is_file():
            return str(venv), "project .venv"
        if (folder / ".venv").is_dir():  # declared but broken: never fall back silently
            raise ConfigError([ConfigProblem(
                "model.python", None, f"{folder / '.venv'} has no working bin/python: "
                "repair the venv or set model.python")])
    return sys.executable, "ci's interpreter: no model.python and no .venv in the project"


def local_setup(config: Config, model: ModelConfig, workdir: Path) -> Setup:
    """`python`/`python3` as argv[0] → the project's interpreter; any other command (`uv
    run ...`, a script) runs as given, probed through `uv run python` or itself if Python."""
    argv = list(model.train_command)
    if argv and argv[0] in PYTHON_NAMES:
        path, why = interpreter(config, model, workdir)
        argv[0] = path
        return Setup(argv, f"interpreter {path} ({why})", [path])
    head = argv[0] if argv else ""
    if Path(head).name == "uv" and argv[1:2] == ["run"]:
        return Setup(argv, f"command {' '.join(argv[:2])} as given (uv's project environment)",
                     [head, "run", "python"])
    if _PYTHON_BINARY.fullmatch(Path(head).name):
        return Setup(argv, f"interpreter {head} (train_command names it)", [head])
    return Setup(argv, f"command {head} as given (not a Python interpreter: versions unknown)")


def probe_names(model: ModelConfig) -> list[str]:
    """The key ML packages plus every `pkg:` entry of model.inputs (once each)."""
    pkgs = [rules.entry_name(e) for e in model.inputs if rules.kind_of(e) == "pkg"]
    return list(dict.fromkeys([*KEY_PACKAGES, *pkgs]))


def probe(setup: Setup, names: Sequence[str], cwd: Path,
          environ: Mapping[str, str] | None = None) -> Probe:
    """Ask the training interpreter for its version and `names`' versions (run once);
    ci's own interpreter answers in-process. A failure is data (`error`), never a raise."""
    if not setup.probe:
        return Probe(error="no interpreter to ask")
    if setup.probe == [sys.executable]:
        return Probe(python=_platform.python_version(), executable=sys.executable,
                     packages=_own_versions(names))
    argv = [*setup.probe, "-c", PROBE, json.dumps(list(names))]
    env = setup.probe_env if setup.probe_env is not None else environ
    try:
        res = proc.run(argv, cwd=cwd, env=env, timeout=PROBE_TIMEOUT, check=False,
                       step="train env")
    except CIError as exc:
        return Probe(error=exc.message)
    line = (res.stdout.strip().splitlines() or [""])[-1]
    try:
        data = json.loads(line) if res.ok else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("packages"), dict):
        last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or [""]
        return Probe(error=f"{' '.join(setup.probe)} exited {res.returncode}: {last[0]}")
    return Probe(python=str(data.get("python", "")), executable=str(data.get("executable", "")),
                 packages={str(k): str(v) for k, v in data["packages"].items()})


def _own_versions(names: Sequence[str]) -> dict[str, str]:
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def pkg_versions(seen: Probe, setup: Setup) -> tuple[dict[str, str] | None, str]:
    """(`pkg:` versions for the input hash, who read them); None = ci's own (same process)."""
    if setup.probe == [sys.executable]:
        return None, ""
    who = setup.description
    if seen.error:
        who = f"{who}; it could not be asked: {seen.error}"
    return dict(seen.packages), who


def env_tags(setup: Setup, seen: Probe) -> dict[str, str]:
    """The run's record of where it trained: why this interpreter/image, its Python and the
    versions of the key packages it sees (JSON), the image id and platform."""
    packages = json.dumps(dict(sorted(seen.packages.items())), separators=(",", ":"))
    if len(packages) > TAG_LIMIT:  # hundreds of pkg: entries: keep the key packages
        packages = json.dumps({k: v for k, v in sorted(seen.packages.items())
                               if k in KEY_PACKAGES}, separators=(",", ":"))
    tags = {
        ENV_TAG: setup.description,
        PYTHON_TAG: seen.python,
        PACKAGES_TAG: packages if not seen.error else "",
        "maci.train.env.error": seen.error,
        "maci.train.interpreter": seen.executable,
        IMAGE_TAG: setup.image,
    }
    if setup.platform:
        tags["maci.train.platform"] = setup.platform
    return {k: v for k, v in tags.items() if v}
