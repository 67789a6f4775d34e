"""Training inside a container: build the `[model.container]` target of the project's
Dockerfile for one platform (the daemon's native one unless given), run train_command in it.

The training workdir is mounted read-only at /src (the cwd), MACI_OUTPUT_DIR=/out is the
only writable mount, and no MLFLOW_* variable goes in: the library logs /out on the run, so
the image needs neither mlflow nor a route to the tracking server.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ci.adapters import proc
from ci.adapters.engines import docker_containers
from ci.adapters.engines.docker import BUILD_TIMEOUT, DockerEngine
from ci.core import platforms
from ci.core.config import Config, ModelConfig
from ci.core.errors import ConfigError, ConfigProblem, StepFailed
from ci.core.jobs import expand_base
from ci.core.tags import sanitize
from ci.core.training_config import CONTAINER_OUT, CONTAINER_SRC, TrainContainerConfig
from ci.stages.train_env import PYTHON_NAMES, Setup

STEP = "train image"


def _box(model: ModelConfig) -> TrainContainerConfig:
    if model.container is None:
        raise ConfigError([ConfigProblem("model.container", None, "not configured")])
    return model.container


def build_args(config: Config, box: TrainContainerConfig,
               platform: platforms.Platform) -> dict[str, str]:
    """build.build_args, BASE = build.base_image for this platform, then the container's."""
    args = dict(config.build.build_args)
    if config.build.base_image:
        args["BASE"] = expand_base(config.build.base_image, platform)
    return args | dict(box.build_args)


def build(config: Config, model: ModelConfig,
          environ: Mapping[str, str] | None = None) -> Setup:
    """`docker buildx build --load --target <target>` for the platform; the Setup that runs
    train_command (and the probe) in the image it produced."""
    box = _box(model)
    engine = DockerEngine(environ=environ)
    plat = platforms.parse(box.platform or engine.ping()["platform"])
    root = config.root_path.resolve()
    context = (root / (box.context or config.build.context)).resolve()
    dockerfile = (context / (box.dockerfile or config.build.dockerfile)).resolve()
    tag = f"maci-train/{sanitize(config.project.name).lower() or 'app'}:{plat.slug}"
    with tempfile.TemporaryDirectory(prefix="maci-train-iid-") as tmp:
        iidfile = Path(tmp) / "iid"
        args = ["buildx", "build", "--progress=plain", "--platform", str(plat),
                "--file", str(dockerfile), "--load", "--iidfile", str(iidfile), "--tag", tag,
                "--target", box.target]
        for key, value in sorted(build_args(config, box, plat).items()):
            args += ["--build-arg", f"{key}={value}"]
        if config.build.ca_bundle:
            args += ["--secret", f"id=ca,src={(root / config.build.ca_bundle).resolve()}"]
        res = engine.docker([*args, str(context)], step=STEP, timeout=BUILD_TIMEOUT,
                            check=False)
        if not res.ok or not iidfile.is_file():
            last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or [""]
            raise StepFailed(f"train image (target {box.target!r}, {plat}) failed to build:"
                             f" {last[0]}", step=STEP, cmd=res.cmd, returncode=res.returncode,
                             stdout=res.stdout, stderr=res.stderr)
        image = iidfile.read_text().strip()
    argv = list(model.train_command)
    if argv and argv[0] in PYTHON_NAMES and model.python:
        argv[0] = model.python  # a path inside the image
    python = model.python or "python3"
    return Setup(
        argv, f"container {tag} {image[:19]} ({plat}, target {box.target})",
        probe=["docker", "run", "--rm", "--platform", str(plat), "--entrypoint", python, image],
        probe_env=engine.env, image=image, platform=str(plat),
    )


def run(setup: Setup, workdir: Path, out: Path, env: Mapping[str, str], timeout: float,
        environ: Mapping[str, str] | None = None) -> proc.Result:
    """train_command in a container of the image: workdir read-only at /src (cwd), `out`
    read-write at /out, `env` passed by name (values never on the command line); HOME is
    literal, so the docker CLI keeps reading its own config from the caller's HOME."""
    engine = DockerEngine(environ=environ)
    name = f"maci-train-{secrets.token_hex(4)}"
    args = ["run", "--sig-proxy=false", "--platform", setup.platform, "--name", name,
            "--mount", f"type=bind,src={workdir},dst={CONTAINER_SRC},readonly",
            "--mount", f"type=bind,src={out},dst={CONTAINER_OUT}", "--workdir", CONTAINER_SRC,
            *docker_containers.label_args("train")]
    if hasattr(os, "getuid"):  # files in /out stay the caller's, removable without root
        args += ["--user", f"{os.getuid()}:{os.getgid()}", "--env", "HOME=/tmp"]
    for key in sorted(env):
        args += ["--env", key]
    try:
        return proc.run(["docker", *args, setup.image, *setup.argv], env=engine.env | dict(env),
                        timeout=timeout, check=False, step="train", group=True)
    finally:  # also stops a container still running after a timeout or Ctrl-C
        engine.remove_container(name)
