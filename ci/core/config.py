"""The pipeline config: pydantic models, loading from `ci.toml` / `[tool.ci]`, env overrides.

Pure: callers pass the file text and the environ in. Every problem becomes a
`ConfigProblem` naming the dotted field path and the bad value; unknown keys are errors.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ci.core import paths, platforms
from ci.core.config_sections import ArgoConfig as ArgoConfig
from ci.core.config_sections import DeployConfig as DeployConfig
from ci.core.config_sections import MlflowConfig as MlflowConfig
from ci.core.config_sections import NotifyConfig as NotifyConfig
from ci.core.config_sections import PublishConfig as PublishConfig
from ci.core.config_sections import RegistryAuth as RegistryAuth
from ci.core.config_sections import Section as _Model
from ci.core.config_sections import SignConfig as SignConfig
from ci.core.config_sections import SmokeConfig as SmokeConfig
from ci.core.config_sections import StrList as StrList
from ci.core.config_sections import sign_problems, verify_deploy
from ci.core.config_sections import split_commas as _split_commas
from ci.core.errors import MISSING, ConfigError, ConfigProblem
from ci.core.training_config import Interpreter, TrainContainerConfig

ENV_PREFIX = "MACI_"
CONFIG_FILE = "ci.toml"
DEFAULT_STATE_DIR = ".maci"
DEFAULT_ARTIFACT = "serving/model.json"


def _command(value: Any) -> Any:
    """Commands are argv lists; a string is split like a shell would (no shell is run)."""
    if isinstance(value, str):
        import shlex

        return shlex.split(value)
    return value


PlatformStr = Annotated[str, AfterValidator(platforms.canonical)]
Command = Annotated[list[str], BeforeValidator(_command)]


class ProjectConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    image: str = Field(min_length=1, description="image repository, e.g. registry:5000/team/app")
    platforms: Annotated[list[PlatformStr], BeforeValidator(_split_commas)] = Field(
        default_factory=lambda: ["linux/amd64"], min_length=1
    )
    state_dir: paths.ProjectDir = DEFAULT_STATE_DIR

    @field_validator("platforms")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+([._:/-][a-z0-9]+)*", value):
            raise ValueError("not an image repository (lowercase host[:port]/path, no tag)")
        last = value.rsplit("/", 1)[-1]
        if ":" in last or "@" in value:
            raise ValueError("give the repository without a tag or digest")
        return value


class RunnerConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    engine: Literal["docker", "dagger"] = "docker"
    host: str = ""
    platform: str | None = None
    capacity: int = Field(default=1, ge=1, le=64)

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str | None) -> str | None:
        return None if value is None else platforms.canonical(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value and not re.match(r"^[a-z][a-z0-9+.-]*://", value):
            raise ValueError("host must be a URL such as unix:///var/run/docker.sock, tcp://h:2375")
        return value


class EmulationConfig(_Model):
    fallback: Literal["qemu", "fail"] = "qemu"
    budget_seconds: float | None = Field(default=None, gt=0)


class BuildConfig(_Model):
    context: paths.ProjectDir = "."
    dockerfile: paths.RelativeFile = "Dockerfile"
    target: str | None = None
    base_image: str | None = Field(
        default=None, description="passed as build arg BASE, one per platform; the {fields} "
        "of platforms.TEMPLATE_FIELDS expand ({arch}, {debian_arch}, {slug}...)"
    )
    build_args: dict[str, str] = Field(default_factory=dict)
    ca_bundle: paths.HostFile | None = Field(default=None, description="extra CA bundle, a BuildKit secret")
    # containerd image store route: file times rewritten to the commit's, so two clean builds
    # of one commit give one digest. Costs a re-read of every layer per build (measured ~20 s
    # for a 200 MB layer, ~0.2 s for a small app): false keeps SOURCE_DATE_EPOCH only.
    reproducible: bool = True

    @field_validator("base_image")
    @classmethod
    def _base_template(cls, value: str | None) -> str | None:
        problem = platforms.template_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    def base_for(self, platform: platforms.Platform) -> str | None:
        """The base image reference of one platform (None: no base_image configured)."""
        return platforms.expand(self.base_image, platform) if self.base_image else None


class TestConfig(_Model):
    __test__ = False
    command: Command = Field(default_factory=lambda: ["python3", "-m", "pytest", "-q"])
    target: str | None = "test"
    junit_path: paths.ContainerPath = "/tmp/maci-junit.xml"  # in the test container
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=1800, gt=0)
    # the first platform job that fails cancels the others (reported as failed: cancelled)
    fail_fast: bool = True


class MetricThresholdConfig(_Model):
    threshold: float | None = None
    min_absolute_change: float | None = Field(default=None, ge=0)
    min_relative_change: float | None = Field(default=None, ge=0, le=1)
    greater_is_better: bool = True

    @model_validator(mode="after")
    def _some_bound(self) -> MetricThresholdConfig:
        if (
            self.threshold is None
            and self.min_absolute_change is None
            and self.min_relative_change is None
        ):
            raise ValueError(
                "set at least one of threshold, min_absolute_change, min_relative_change"
            )
        return self


class ModelArtifactConfig(_Model):
    """What the image gets from the registered version, and where it lands in the build
    context; checked (present, sha256) before the version is registered."""

    source: Literal["run", "model"] = Field(
        default="run", description="run: a file/folder the training run logged; model: the "
        "MLflow model directory of the registered version")
    path: str | None = Field(default=None, description="in the source; default "
                             "serving/model.json (run) or the whole model directory (model)")
    dest: str = Field(default="model", description="folder inside build.context")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value:
            return ""
        norm = paths.inside(value, "the run's artifacts")
        return "" if norm == "." else norm

    @field_validator("dest")
    @classmethod
    def _dest(cls, value: str) -> str:
        norm = paths.inside(value or ".", "build.context")
        if norm == ".":
            raise ValueError("must be a folder inside build.context, not the context itself")
        return norm

    @model_validator(mode="after")
    def _run_needs_a_path(self) -> ModelArtifactConfig:
        if self.source == "run" and self.path == "":
            raise ValueError("source = 'run' needs a path: the file or folder the run logged")
        return self

    @property
    def artifact_path(self) -> str:
        """The path in the source ('' = the whole MLflow model directory)."""
        if self.path is not None:
            return self.path
        return DEFAULT_ARTIFACT if self.source == "run" else ""

    def describe(self) -> str:
        """`run:serving/model.json` / `model:` — recorded on the version it was checked for."""
        return f"{self.source}:{self.artifact_path}"


class ModelConfig(_Model):
    train_command: Command
    registered_model: str = Field(min_length=1)
    alias: str = Field(default="champion", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    experiment: str | None = None
    workdir: paths.ProjectDir = "."
    inputs: StrList = Field(default_factory=list, description="hashed into the input hash: "
                            "files, folders, globs, env:NAME, pkg:NAME")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    thresholds: dict[str, MetricThresholdConfig] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=1800, gt=0)
    artifact: ModelArtifactConfig = Field(default_factory=ModelArtifactConfig)
    python: Interpreter | None = None  # `python` in train_command; default: the project .venv
    container: TrainContainerConfig | None = None  # train in this Dockerfile target instead
    check_command: Command = Field(default_factory=list)  # loads the model in each image


class Config(_Model):
    """The whole pipeline config. `root` is the folder the config came from."""

    project: ProjectConfig
    runners: list[RunnerConfig] = Field(default_factory=list)
    emulation: EmulationConfig = Field(default_factory=EmulationConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    test: TestConfig = Field(default_factory=TestConfig)
    model: ModelConfig | None = None
    publish: PublishConfig = Field(default_factory=PublishConfig)
    deploy: DeployConfig | None = None
    smoke: SmokeConfig | None = None
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    sign: SignConfig | None = None
    # read by `ci export argo` only: kept out of dumps, so the release fingerprint ignores it
    argo: ArgoConfig = Field(default_factory=ArgoConfig, exclude=True)
    root: str = Field(default=".", exclude=True)

    @model_validator(mode="after")
    def _unique_runners(self) -> Config:
        names = [r.name for r in self.runners]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"runner names must be unique, repeated: {', '.join(dupes)}")
        return self

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    @property
    def state_path(self) -> Path:
        return (self.root_path / self.project.state_dir).resolve()

    @property
    def platforms(self) -> list[platforms.Platform]:
        return platforms.parse_many(self.project.platforms)

    @property
    def verify_deploy(self) -> bool:
        """Whether a deploy verifies the index's signature first (`deploy.verify`)."""
        return verify_deploy(self.sign, self.deploy)

    def tracking_uri(self) -> str:
        """The configured MLflow URI, else the embedded sqlite store in the state dir."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{self.state_path / 'mlflow.db'}"


# ---------------------------------------------------------------- loading


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """TOML text to a dict; a syntax error is one ConfigProblem naming file and line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", MISSING, f"invalid TOML: {exc}", source)]) from None


def extract(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The config table: the whole file for ci.toml, `[tool.ci]` for pyproject.toml."""
    if source.endswith("pyproject.toml"):
        tool = data.get("tool", {})
        section = tool.get("ci") if isinstance(tool, dict) else None
        if not isinstance(section, dict):
            raise ConfigError([ConfigProblem("tool.ci", MISSING, "no [tool.ci] table", source)])
        return section
    return data


def env_overrides(environ: Mapping[str, str], sections: set[str]) -> dict[str, Any]:
    """`MACI_SECTION__FIELD=value` → nested dict; JSON values are decoded, others kept as text.

    Only variables whose first segment names a config section count; the rest of the
    MACI_ namespace is free for tool settings (MACI_CACHE_DIR...).
    """
    out: dict[str, Any] = {}
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        if not path or path[0] not in sections or len(path) < 2 or not all(path):
            continue
        try:
            value: Any = json.loads(raw)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and path[-1] in {
                "name", "image", "remote", "branch", "host", "tracking_uri", "password_env",
            }:
                value = raw
        except ValueError:
            value = raw
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(exc: ValidationError, data: Any, source: str) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        path = ""
        for part in loc:
            if part.isdigit():
                path += f"[{part}]"
            elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
                path += f".{part}" if path else part
            else:  # keys with odd characters are quoted so the line stays one line
                path += f"[{part!r}]"
        value = err.get("input", MISSING)
        if err["type"] == "missing":
            value = MISSING
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        msg = msg.removeprefix("Value error, ")
        problems.append(ConfigProblem(path, value, msg, source))
    return problems


def validate(data: Any, source: str = CONFIG_FILE, root: str = ".") -> Config:
    """A dict (already merged with overrides) to a Config, or ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("", data, "config must be a table", source)])
    if "root" in data:
        raise ConfigError([ConfigProblem("root", data["root"], "unknown key", source)])
    try:
        config = Config.model_validate({**data, "root": root})
    except ValidationError as exc:
        raise ConfigError(_problems(exc, data, source)) from None
    problems = paths.cross_problems(config, source) + sign_problems(config.sign, config.deploy, source)
    if problems:
        raise ConfigError(problems)
    return config


def loads(
    text: str,
    source: str = CONFIG_FILE,
    root: str = ".",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Config from TOML text plus MACI_ environment overrides."""
    data = extract(parse_toml(text, source), source)
    sections = set(Config.model_fields) - {"root"}
    data = _merge(data, env_overrides(environ or {}, sections))
    return validate(data, source, root)


def find(start: Path) -> Path | None:
    """The nearest ci.toml (or pyproject.toml with [tool.ci]) from `start` upwards."""
    start = start.resolve()
    for folder in [start, *start.parents]:
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "[tool.ci" in pyproject.read_text(errors="replace"):
            return pyproject
    return None


def load(path: Path | None, environ: Mapping[str, str], cwd: Path) -> Config:
    """Read a config file (or find one from cwd), apply overrides, and check the project
    paths against the symlinks on disk (the one check `loads` cannot make from text)."""
    if path is None:
        path = find(cwd)
        if path is None:
            raise ConfigError(
                [ConfigProblem("", MISSING, f"no {CONFIG_FILE} found in {cwd} or above", "")]
            )
    if path.is_dir():
        path = path / CONFIG_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([ConfigProblem("", MISSING, exc.strerror or str(exc), str(path))]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem("", MISSING, f"not UTF-8 text ({exc.reason} at byte "
                                         f"{exc.start})", str(path))]) from None
    config = loads(text, str(path), str(path.resolve().parent), environ)
    problems = paths.link_problems(config, str(path))
    if problems:  # the symlinks that exist now: a link out of the project is refused too
        raise ConfigError(problems)
    return config
