"""`ci export argo`: the release as Argo objects (WorkflowTemplate, EventSource, Sensor), made
from the same config and plan as a CI pipeline and refused up front like `ci plan --matrix`."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ci.core import config as cfg
from ci.core.argo_events import event_source, sensor
from ci.core.argo_workflow import Export, cluster_plan, config_env, workflow_template
from ci.core.argo_yaml import dump, dump_all
from ci.core.config import Config
from ci.core.errors import UsageError
from ci.core.version import __version__
from ci.stages.matrix import check_matrix

FILES = ("workflow-template.yaml", "event-source.yaml", "sensor.yaml")


def config_file(option: Path | None, cwd: Path) -> Path:
    """The config file `--config` names (a folder means its ci.toml), else the one found."""
    path = option if option is not None else cfg.find(cwd)
    if path is None:
        raise UsageError(f"--config: no {cfg.CONFIG_FILE} found in {cwd} or above")
    return path / cfg.CONFIG_FILE if path.is_dir() else path


def repo_path(path: Path) -> str:
    """The config's path inside its git repository (what a step's checkout calls it)."""
    path = path.resolve()
    for folder in path.parents:
        if (folder / ".git").exists():
            return path.relative_to(folder).as_posix()
    return path.name


def export_argo(config: Config, path: Path, *, ci_image: str | None,
                environ: Mapping[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) of each Argo object; bad input (a store one pod could not share,
    keyless signing, no `ci` image, a platform no node can run) is refused, exit 2."""
    check_matrix(config)
    if config.sign is not None and config.sign.keyless:
        raise UsageError("sign.keyless: a workflow pod has no OIDC identity to sign with; sign "
                         "with a key pair (its key in the Secret argo.secrets.cosign_key names)")
    image = ci_image or config.argo.ci_image
    if not image or any(c.isspace() for c in image):
        raise UsageError(f"argo.ci_image: {image or 'not set'}: pass --ci-image IMAGE or set "
                         "[argo] ci_image (the image every step runs in)")
    x = Export(config, cluster_plan(config), image, repo_path(path),
               config_env(os.environ if environ is None else environ))
    return list(zip(FILES, (workflow_template(x), event_source(x), sensor(x)), strict=True))


def header(config_path: str) -> str:
    return (f"Exported by `ci export argo` (multiarch-ci {__version__}) from {config_path}.\n"
            "Generated: change the config and export again instead of editing.")


def write(objects: list[tuple[str, dict[str, Any]]], output: str, config_path: str) -> list[str]:
    """One YAML stream on stdout (`-`), or one file per object in the folder `output`."""
    note = header(config_path)
    if output == "-":
        sys.stdout.write(dump_all([(obj, note) for _, obj in objects]))
        return []
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output: {output!r} is a file, not a folder (or - for stdout)")
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, obj in objects:
        (folder / name).write_text(dump(obj, note))
        lines.append(f"wrote {folder / name}: {obj['kind']} {obj['metadata']['name']}")
    return lines


def run_export(option: Path | None, output: str, *, ci_image: str | None,
               cwd: Path | None = None) -> list[str]:
    """`ci export argo`: load the config `--config` names, export, write; the report lines."""
    path = config_file(option, cwd or Path.cwd())
    config = cfg.load(path, os.environ, cwd or Path.cwd())
    return write(export_argo(config, path, ci_image=ci_image), output, repo_path(path))
