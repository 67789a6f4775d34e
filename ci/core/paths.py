"""What a path, git remote or branch named in the config may be (issue #14, item 5).

A config is user input that later reaches the filesystem and git's argv: a `..` in a
manifest, a remote starting with `-`, a symlink out of the project must be refused at load
time (exit 2, one line naming the field) instead of failing, or worse, half-way through a
release. Every check here is pure except `link_problems`, which resolves symlinks; the file
loader (`config.load`) runs it, `loads`/`validate` stay text-in, data-out.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePath
from typing import Annotated, Protocol

from pydantic import AfterValidator

from ci.core.errors import ConfigProblem
from ci.core.inputs import GLOB_CHARS, kind_of

PROJECT = "the project"
DEPLOY_REPO = "the deploy repository"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:/")
_REF_BAD_CHARS = frozenset(" ~^:?*[\\")


# ---------------------------------------------------------------- the rules, on one string


def text_problem(value: str) -> str | None:
    """Why `value` cannot name a file at all (empty, a NUL byte, a line break...), or None."""
    if not value:
        return "must not be empty"
    if "\x00" in value:
        return "contains a NUL byte"
    if _CONTROL.search(value):
        return "contains a control character (a line break, a tab...)"
    return None


def normalise(value: str) -> str:
    """The lexical normal form every check and every later use sees (`a/./b/../c` → `a/c`)."""
    return posixpath.normpath(value.replace("\\", "/"))


def is_absolute(norm: str) -> bool:
    return posixpath.isabs(norm) or bool(_DRIVE.match(norm))


def escapes(norm: str) -> bool:
    """True when a normalised relative path climbs out of its base with `..`."""
    return norm == ".." or norm.startswith("../")


def relative(value: str, base: str) -> str:
    """A relative path, normalised; its `..` is judged later, against its base joined in."""
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    norm = normalise(value)
    if is_absolute(norm):
        raise ValueError(f"must be a path relative to {base}, not an absolute one")
    return norm


def inside(value: str, base: str, *, file: bool = False) -> str:
    """A relative path that stays inside `base` after normalisation (`file`: not `base` itself)."""
    norm = relative(value, base)
    if escapes(norm):
        raise ValueError(f"must stay inside {base} (a relative path without '..' escaping it)")
    if file and norm == ".":
        raise ValueError(f"must name a file inside {base}, not {base} itself")
    return norm


def host_file(value: str) -> str:
    """A file on the machine running ci: absolute (a system CA bundle), or inside the project.
    A comma is refused: the value ends up in docker's comma-separated `--secret` spec."""
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    if "," in value:
        raise ValueError("contains ',' (docker's --secret spec would split it)")
    return value if is_absolute(normalise(value)) else inside(value, PROJECT, file=True)


def container_path(value: str) -> str:
    """A path inside a container (absolute or relative to its workdir): only sane text."""
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def url_path(value: str) -> str:
    """The path part of an HTTP URL: starts with `/`, no space or control character."""
    if not value.startswith("/") or any(c.isspace() for c in value) or _CONTROL.search(value):
        raise ValueError("must be a URL path starting with '/' (no spaces or control characters)")
    return value


def remote(value: str) -> str:
    """A git remote (URL, scp-style or local path) git can never read as an option."""
    if not value:
        raise ValueError("must not be empty")
    if value.startswith("-"):
        raise ValueError("starts with '-': git would read it as an option")
    if _CONTROL.search(value):
        raise ValueError("contains a NUL byte, a line break or another control character")
    if value.lower().startswith(("ext::", "fd::")):
        raise ValueError("ext:: and fd:: remotes run commands or use file descriptors: refused")
    return value


def ref_problem(name: str) -> str | None:
    """Why `name` is not a valid branch name (the rules of `git check-ref-format --branch`)."""
    if not name:
        return "must not be empty"
    if name.startswith("-"):
        return "starts with '-': git would read it as an option"
    if name in ("@", "HEAD"):
        return f"{name!r} is not a branch name"
    bad = next((c for c in name if c in _REF_BAD_CHARS or _CONTROL.match(c)), None)
    if bad is not None:
        return f"contains {bad!r}, which git refuses in a ref name"
    for seq in ("..", "@{", "//"):
        if seq in name:
            return f"contains {seq!r}, which git refuses in a ref name"
    if name.startswith("/") or name.endswith(("/", ".")):
        return "starts with '/' or ends with '/' or '.', which git refuses in a ref name"
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return f"component {part!r} starts with '.' or ends with '.lock' (git refuses it)"
    return None


def branch(value: str) -> str:
    problem = ref_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def optional_branch(value: str) -> str:
    """A branch name, or '' for none (`publish.latest_on = ""`: no branch moves `latest`)."""
    return value and branch(value)


def relative_file(value: str) -> str:
    """A file relative to build.context; whether `..` leaves the project is a cross check."""
    norm = relative(value, "build.context")
    if norm == ".":
        raise ValueError("must name a file, not build.context itself")
    return norm


def _inside_of(base: str, *, file: bool = False) -> Callable[[str], str]:
    def check(value: str) -> str:
        return inside(value, base, file=file)

    return check


ProjectDir = Annotated[str, AfterValidator(_inside_of(PROJECT))]
RelativeFile = Annotated[str, AfterValidator(relative_file)]
DeployFile = Annotated[str, AfterValidator(_inside_of(DEPLOY_REPO, file=True))]
HostFile = Annotated[str, AfterValidator(host_file)]
ContainerPath = Annotated[str, AfterValidator(container_path)]
UrlPath = Annotated[str, AfterValidator(url_path)]
Remote = Annotated[str, AfterValidator(remote)]
Branch = Annotated[str, AfterValidator(branch)]
OptionalBranch = Annotated[str, AfterValidator(optional_branch)]


# ---------------------------------------------------------------- across fields (pure)
# What the checks read of a Config, as Protocols: config.py imports this module, so this
# one must not import config.py back (the layer test counts TYPE_CHECKING imports too).


class _Project(Protocol):
    @property
    def state_dir(self) -> str: ...


class _Build(Protocol):
    @property
    def context(self) -> str: ...
    @property
    def dockerfile(self) -> str: ...
    @property
    def ca_bundle(self) -> str | None: ...


class _Artifact(Protocol):
    @property
    def dest(self) -> str: ...


class _Container(Protocol):
    @property
    def context(self) -> str | None: ...
    @property
    def dockerfile(self) -> str | None: ...


class _Model(Protocol):
    @property
    def workdir(self) -> str: ...
    @property
    def inputs(self) -> Sequence[str]: ...
    @property
    def python(self) -> str | None: ...
    @property
    def artifact(self) -> _Artifact: ...
    @property
    def container(self) -> _Container | None: ...


class _Sign(Protocol):
    @property
    def key(self) -> str | None: ...
    @property
    def public_key(self) -> str | None: ...


class Config(Protocol):
    """The parts of `ci.core.config.Config` the cross-field and symlink checks read."""

    @property
    def root(self) -> str: ...
    @property
    def project(self) -> _Project: ...
    @property
    def build(self) -> _Build: ...
    @property
    def model(self) -> _Model | None: ...
    @property
    def sign(self) -> _Sign | None: ...


def _input_paths(config: Config) -> Iterator[tuple[int, str, str]]:
    """(index, entry, path relative to the project root) of each file/glob model input."""
    if config.model is None:
        return
    for i, entry in enumerate(config.model.inputs):
        if kind_of(entry) in ("path", "glob"):
            yield i, entry, normalise(posixpath.join(config.model.workdir, normalise(entry)))


def cross_problems(config: Config, source: str = "") -> list[ConfigProblem]:
    """Paths whose base is another field: the Dockerfile of build.context, inputs of
    model.workdir; each must still land inside the project."""
    out: list[ConfigProblem] = []
    b = config.build
    if escapes(normalise(posixpath.join(b.context, b.dockerfile))):
        out.append(ConfigProblem("build.dockerfile", b.dockerfile, "leads out of the project "
                                 f"(relative to build.context {b.context!r})", source))
    m = config.model
    for i, entry, joined in _input_paths(config):
        problem = text_problem(entry)
        if problem is None and is_absolute(normalise(entry)):
            problem = "must be a path relative to model.workdir, not an absolute one"
        elif problem is None and escapes(joined):
            problem = "leads out of the project (relative to model.workdir)"
        if problem:
            out.append(ConfigProblem(f"model.inputs[{i}]", entry, problem, source))
    if m is not None and m.python is not None and "\x00" in m.python:
        out.append(ConfigProblem("model.python", m.python, "contains a NUL byte", source))
    box = m.container if m is not None else None
    for key in ("context", "dockerfile"):  # training_config.py checks their `..` already
        value = getattr(box, key, None)
        problem = None if value is None else text_problem(value)
        if problem:
            out.append(ConfigProblem(f"model.container.{key}", value, problem, source))
    return out


# ---------------------------------------------------------------- symlinks (reads the disk)


def _project_paths(config: Config) -> Iterator[tuple[str, str, str, str]]:
    """(field, value, path relative to the root, the field it is relative to) of every path
    that must stay in the project."""
    b, m = config.build, config.model
    yield "project.state_dir", config.project.state_dir, config.project.state_dir, ""
    yield "build.context", b.context, b.context, ""
    yield "build.dockerfile", b.dockerfile, posixpath.join(b.context, b.dockerfile), "build.context"
    if b.ca_bundle and not is_absolute(normalise(b.ca_bundle)):
        yield "build.ca_bundle", b.ca_bundle, b.ca_bundle, ""
    for key in ("key", "public_key"):
        value = getattr(config.sign, key, None)
        if value and not is_absolute(normalise(value)):
            yield f"sign.{key}", value, value, ""
    if m is None:
        return
    yield "model.workdir", m.workdir, m.workdir, ""
    for i, entry, joined in _input_paths(config):
        parts = joined.split("/")
        literal = next((k for k, p in enumerate(parts) if GLOB_CHARS.intersection(p)), len(parts))
        yield f"model.inputs[{i}]", entry, "/".join(parts[:literal]) or ".", "model.workdir"
    dest = posixpath.join(b.context, m.artifact.dest)
    yield "model.artifact.dest", m.artifact.dest, dest, "build.context"
    box = m.container
    if box is not None:
        if box.context is not None:
            yield "model.container.context", box.context, box.context, ""
        if box.dockerfile is not None:
            base = "model.container.context" if box.context is not None else "build.context"
            joined = posixpath.join(box.context or b.context, box.dockerfile)
            yield "model.container.dockerfile", box.dockerfile, joined, base


def link_problems(config: Config, source: str = "") -> list[ConfigProblem]:
    """Project paths that leave the project once the symlinks that exist are resolved (a
    path under a field already reported is not reported again)."""
    root = os.path.realpath(config.root)
    out: list[ConfigProblem] = []
    for field, value, rel, base in _project_paths(config):
        if any(p.path == base for p in out):
            continue
        try:
            real = os.path.realpath(os.path.join(root, rel))
        except (OSError, ValueError) as exc:
            out.append(ConfigProblem(field, value, f"cannot be resolved: {exc}", source))
            continue
        if not PurePath(real).is_relative_to(root):
            out.append(ConfigProblem(field, value, "resolves outside the project through a "
                                     f"symlink (to {real!r})", source))
    return out
