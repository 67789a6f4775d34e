"""`ci init`: a commented ci.toml for an existing repository from what is already there
(Dockerfile stages, git remote, training script, manifests); never overwrites unasked. Each
guess is a small function over text or paths so it is tested on its own."""

from __future__ import annotations

import json
import os
import re
import shlex
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ci.adapters import proc
from ci.adapters.ci_env import strip_credentials
from ci.core import config as cfg
from ci.core import platforms as plat
from ci.core.errors import StepFailed, ToolMissing, UsageError

DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
DOCKERFILES = ("Dockerfile", "Containerfile")
RELEASE_STAGES = ("runtime", "release", "prod", "production", "final")
TEST_STAGES = ("test", "tests", "ci")
TRAIN_SCRIPTS = ("train.py", "training/train.py", "scripts/train.py")
DEPLOY_DIRS = ("k8s", "deploy")
KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
PLACEHOLDER = "registry.example.com/change-me"
JUNIT = "/tmp/maci-junit.xml"
REGISTRIES = {"github.com": "ghcr.io", "gitlab.com": "registry.gitlab.com"}


@dataclass(frozen=True)
class Stage:
    name: str | None
    image: str


@dataclass(frozen=True)
class Dockerfile:
    """What the config needs from a Dockerfile: its stages and which ARGs a FROM uses."""

    stages: tuple[Stage, ...]
    args: dict[str, str | None] = field(default_factory=dict)  # global ARGs → default
    from_vars: tuple[str, ...] = ()


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments and heredoc
    bodies skipped, so a `FROM` inside a `RUN <<EOF` script is not taken for a stage."""
    lines, escape, buf = text.splitlines(), "\\", ""
    for line in lines:  # parser directives are only recognised at the very top
        if not (m := re.match(r"^\s*#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$", line)):
            break
        escape = m.group(2) if m.group(1).lower() == "escape" and m.group(2) in "\\`" else escape
    out: list[tuple[str, str]] = []
    heredocs: list[str] = []
    for line in [*lines, "\n"]:  # "\n" is no line of splitlines(): the end of the text
        stripped = line.strip()
        if heredocs:
            heredocs = heredocs[1:] if stripped == heredocs[0] else heredocs
        elif stripped.startswith("#"):
            continue
        elif stripped.endswith(escape):
            buf += stripped[:-1] + " "
        elif stripped or (line == "\n" and buf.strip()):
            keyword, *rest = (buf + stripped).split(None, 1)
            out.append((keyword.upper(), rest[0].strip() if rest else ""))
            buf = ""
            if keyword.upper() in ("RUN", "COPY", "ADD"):
                heredocs = re.findall(r"<<-?[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?", out[-1][1])
    return out


def parse_dockerfile(text: str) -> Dockerfile:
    """The stages (`FROM image [AS name]`, `AS` in any case) and the global ARGs."""
    stages: list[Stage] = []
    args: dict[str, str | None] = {}
    from_vars: list[str] = []
    for keyword, rest in instructions(text):
        if keyword == "ARG" and not stages:
            try:
                words = shlex.split(rest)
            except ValueError:
                words = rest.split()
            for word in words:
                name, eq, default = word.partition("=")
                args[name] = default if eq else None
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            if words:
                named = len(words) >= 3 and words[1].lower() == "as"
                stages.append(Stage(words[2] if named else None, words[0]))
                from_vars += re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", words[0])
    return Dockerfile(tuple(stages), args, tuple(dict.fromkeys(from_vars)))


def choose_release_target(stages: tuple[Stage, ...] | list[Stage]) -> str | None:
    """A stage named runtime/release/prod/final, else the last one that is not a test
    stage (None: an unnamed last stage, which is what a plain build produces anyway)."""
    named = {s.name.lower(): s.name for s in stages if s.name}
    if wanted := next((w for w in RELEASE_STAGES if w in named), None):
        return named[wanted]
    rest = [s for s in stages if (s.name or "").lower() not in TEST_STAGES] or list(stages)
    return rest[-1].name if rest else None


def choose_test_target(stages: tuple[Stage, ...] | list[Stage], release: str | None) -> str | None:
    """A stage named test/tests/ci (never the release stage itself), else None."""
    named = {s.name.lower(): s.name for s in stages if s.name and s.name != release}
    return next((named[w] for w in TEST_STAGES if w in named), None)


def image_from_remote(url: str) -> str | None:
    """github.com/org/repo → ghcr.io/org/repo, gitlab.com/g/p → registry.gitlab.com/g/p
    (lowercased, as OCI requires); any other host → None."""
    url = strip_credentials(url.strip())
    if re.match(r"^[a-z][a-z0-9+.-]*://", url):
        host, path = urlsplit(url).hostname or "", urlsplit(url).path
    elif m := re.match(r"^(?:[^@/]+@)?([^/:]+):(.+)$", url):  # scp-like: [user@]host:path
        host, path = m.group(1), m.group(2)
    else:
        return None
    registry = REGISTRIES.get(host.lower().removeprefix("www."))
    path = path.strip("/").removesuffix(".git").lower()
    if not registry or path.count("/") < 1 or not re.fullmatch(r"[a-z0-9._/-]+", path):
        return None
    return f"{registry}/{path}"


def project_name(pyproject: dict[str, Any], folder: str) -> str:
    """pyproject's [project].name, else the folder's name, made a valid project name."""
    project = pyproject.get("project")
    raw = project.get("name") if isinstance(project, dict) else None
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(raw or folder)).strip("._-")
    return name or "app"


def pytest_layout(root: Path, pyproject: dict[str, Any]) -> str | None:
    """What says the project uses pytest (tests/, pytest.ini, [tool.pytest]), or None."""
    for rel, what in (("tests", "tests/"), ("pytest.ini", "pytest.ini")):
        if (root / rel).exists():
            return what
    tool = pyproject.get("tool")
    return "pyproject [tool.pytest]" if isinstance(tool, dict) and "pytest" in tool else None


@dataclass(frozen=True)
class Training:
    command: tuple[str, ...]
    inputs: tuple[str, ...]
    found: str


def _inside(root: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def find_training(root: Path, pyproject: dict[str, Any]) -> Training | None:
    """A training script by its usual path, else a [project.scripts] entry about training."""
    for rel in TRAIN_SCRIPTS:
        if (root / rel).is_file() and _inside(root, root / rel):
            return Training(("python", rel), (rel,), rel)
    project = pyproject.get("project")
    scripts = project.get("scripts") if isinstance(project, dict) else None
    for name, target in sorted((scripts or {}).items()) if isinstance(scripts, dict) else ():
        if "train" in name.lower() or "train" in str(target).lower():
            module = str(target).partition(":")[0].strip().replace(".", "/")
            files = [p for p in (f"{module}.py", f"src/{module}.py", f"{module}/__init__.py",
                                 f"src/{module}/__init__.py")
                     if module and (root / p).is_file() and _inside(root, root / p)]
            return Training((name,), (*files[:1], "pyproject.toml"), f"[project.scripts] {name}")
    return None


def find_manifests(root: Path) -> list[str]:
    """The YAML files beside each kustomization under k8s/ or deploy/ (kustomization first)."""
    found: list[str] = []
    for top in DEPLOY_DIRS:  # rglob follows no symlinked folder below top; _inside checks top
        for kust in sorted(p for k in KUSTOMIZATIONS for p in (root / top).rglob(k)):
            beside = sorted(p for p in kust.parent.iterdir()
                            if p.suffix in (".yaml", ".yml") and p != kust and p.is_file())
            found += [r for p in [kust, *beside] if _inside(root, p)
                      and (r := p.relative_to(root).as_posix()) not in found]
    return found[:20]


def git_origin(root: Path) -> str:
    """The origin remote's URL ('' when there is no git, no repository or no origin)."""
    try:
        res = proc.run(["git", "config", "--get", "remote.origin.url"], cwd=root, check=False,
                       timeout=15, step="git")
    except (ToolMissing, StepFailed):
        return ""
    return strip_credentials(res.stdout.strip()) if res.ok else ""


def existing_config(root: Path) -> Path | None:
    """The config `ci` would already read from this folder: ci.toml, or [tool.ci]."""
    if (root / cfg.CONFIG_FILE).exists() or (root / cfg.CONFIG_FILE).is_symlink():
        return root / cfg.CONFIG_FILE
    pyproject, tool = root / "pyproject.toml", read_pyproject(root).get("tool")
    text = pyproject.read_text(errors="replace") if pyproject.is_file() else ""
    header = re.search(r"^\s*\[\s*tool\.ci\s*[\].]", text, re.M)  # also when unparsable
    return pyproject if (isinstance(tool, dict) and "ci" in tool) or header else None


def read_pyproject(root: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((root / "pyproject.toml").read_text(errors="replace"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


@dataclass(frozen=True)
class Findings:
    name: str
    image: str
    image_source: str  # "" = a placeholder the user must edit
    platforms: tuple[str, ...]
    dockerfile: str
    parsed: Dockerfile
    release: str | None
    test: str | None
    tests: str | None
    training: Training | None = None
    manifests: tuple[str, ...] = ()
    remote: str = ""

    @property
    def base_default(self) -> str | None:
        return self.parsed.args.get("BASE") if "BASE" in self.parsed.from_vars else None


def _dockerfile(root: Path, given: str | None) -> str:
    """The Dockerfile's path relative to root (given, else Dockerfile or Containerfile)."""
    if given is None:
        for name in DOCKERFILES:
            if (root / name).is_file() and _inside(root, root / name):
                return name
        raise UsageError(f"no Dockerfile or Containerfile in {root} (--dockerfile names another)")
    path = Path(os.path.normpath(root / given))
    if not path.is_relative_to(root) or not _inside(root, path):
        raise UsageError(f"--dockerfile {given}: outside {root}")
    if not path.is_file():
        raise UsageError(f"--dockerfile {given}: no such file in {root}")
    return path.relative_to(root).as_posix()


def discover(root: Path, *, image: str | None = None, platforms: list[str] | None = None,
             dockerfile: str | None = None) -> Findings:
    """Everything `ci init` guesses from the folder; the Dockerfile is required."""
    rel = _dockerfile(root, dockerfile)
    parsed = parse_dockerfile((root / rel).read_text(errors="replace"))
    if not parsed.stages:
        raise UsageError(f"{root / rel}: no FROM instruction (is it a Dockerfile?)")
    pyproject = read_pyproject(root)
    chosen = [str(p) for p in plat.parse_many(platforms)] if platforms else list(DEFAULT_PLATFORMS)
    remote = git_origin(root)
    guessed = None if image else image_from_remote(remote)
    source = "given with --image" if image else f"from git remote origin {remote}" if guessed else ""
    image = image or guessed
    name = project_name(pyproject, root.name)
    release = choose_release_target(parsed.stages)
    return Findings(
        name=name, image=image or f"{PLACEHOLDER}/{name.lower()}", image_source=source,
        platforms=tuple(chosen), dockerfile=rel, parsed=parsed,
        release=release, test=choose_test_target(parsed.stages, release),
        tests=pytest_layout(root, pyproject), training=find_training(root, pyproject),
        manifests=tuple(find_manifests(root)), remote=remote)


def _q(value: str | tuple[str, ...] | list[str]) -> str:
    """A TOML basic string (a JSON string is one) or an array of them."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(_q(v) for v in value) + "]"


def guess_test_command(f: Findings) -> list[str]:
    """pytest with a JUnit report the pipeline collects (with `tests` when that folder exists)."""
    folder = ["tests"] if f.tests == "tests/" else []
    return ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", *folder, f"--junitxml={JUNIT}"]


def _c(text: str) -> list[str]:
    """A comment wrapped at 92 columns (TOML has no multi-line comments)."""
    return textwrap.wrap(text, 92, initial_indent="# ", subsequent_indent="# ",
                         break_long_words=False, break_on_hyphens=False)


def _commented(lines: list[str]) -> list[str]:
    return [line if not line or line.startswith("#") else f"# {line}" for line in lines]


def _build(f: Findings) -> list[str]:
    stages = ", ".join(s.name or "(unnamed)" for s in f.parsed.stages)
    out = ["[build]", 'context = "."', f"dockerfile = {_q(f.dockerfile)}  # stages: {stages}",
           f"target = {_q(f.release)}  # the stage that becomes the release image" if f.release
           else '# target = "runtime"  # unset: the last stage is the release image']
    if "BASE" in f.parsed.from_vars:
        default = f.base_default
        out += [*_c("The Dockerfile starts FROM ${BASE}: ci passes build arg BASE once per "
                    "platform from this template ({arch}, {debian_arch}, {slug}...: see the "
                    "README). " + (f"Unset, ARG BASE's default {default} is used." if default
                                   else "ARG BASE has no default: set it.")),
                f"# base_image = {_q(default or 'maci/python:bookworm-{debian_arch}')}"]
    elif uses := [v for v in f.parsed.from_vars if v in f.parsed.args]:
        out += _c(f"FROM uses ${{{uses[0]}}}; ci passes a per-platform base only as build arg "
                  "BASE (base_image), so rename it to use one.")
    return [*out, "# build_args = { }  # more --build-arg values"]


def _test(f: Findings) -> list[str]:
    out = ["[test]", f"target = {_q(f.test)}  # the tests run in a container of this stage"] \
        if f.test else ["[test]", *_c("No test/tests/ci stage: the tests run in the release "
                                      "image (dagger: in build.base_image)."), 'target = ""']
    if not f.tests:
        out += _c("No tests/, pytest.ini or [tool.pytest] found: replace with your test command.")
    return [*out, f"command = {_q(guess_test_command(f))}",
            f"junit_path = {_q(JUNIT)}  # collected from the test container", "timeout_seconds = 1800"]


def _model(f: Findings) -> list[str]:
    t = f.training or Training(("python", "train.py"), ("train.py", "data/*.csv"), "")
    block = [
        "[model]", *_c("Trains before any image is built; a candidate that fails the gate stops "
                       "the release. " + ("`python` is the interpreter running ci (whose mlflow "
                       "is recorded)." if t.command[0] == "python" else "The console script must "
                       "be installed where ci runs (pip install -e .).")),
        f"train_command = {_q(t.command)}", f"registered_model = {_q(f.name + '-model')}",
        'alias = "champion"  # the version the candidate is gated against; moved by `ci promote`',
        f"experiment = {_q(f.name)}",
        *_c('Hashed into the input hash: unchanged inputs reuse the last finished run. Add data '
            'files and globs ("data/*.csv"), "env:NAME", "pkg:NAME".'), f"inputs = {_q(t.inputs)}",
        "# params = { C = 1.0 }  # passed to the command as MACI_PARAMS (JSON)", "",
        "# The gate: one MLflow MetricThreshold per metric the script logs (uncomment, adjust).",
        "# [model.thresholds.accuracy]", "# threshold = 0.8  # absolute floor",
        "# min_absolute_change = 0.0  # and no worse than the current champion",
        "# greater_is_better = true", "",
        *_c("What the image gets: by default the run must log serving/model.json; it lands in "
            "<build.context>/model/ for the Dockerfile to COPY. Else set [model.artifact] "
            "(source, path, dest).")]
    if f.training:
        return block
    return [*_c("No training script found (train.py, training/train.py, scripts/train.py or a "
                "[project.scripts] entry about training): no model stage. To gate on a model:"),
            *_commented(block)]


def _deploy(f: Findings) -> list[str]:
    if not f.manifests:
        return _c("[deploy]: GitOps (pin manifests to the index digest, commit, push), see the "
                  "README; no k8s/ or deploy/ folder with a kustomization.yaml was found.")
    where = ", ".join(sorted({m.split("/")[0] + "/" for m in f.manifests}))
    return [*_c(f"GitOps: after a release, pin these manifests to the index digest, commit and "
                f"push. Found under {where}; uncomment and check the remote (the repository "
                "they live in)."),
            *_commented(["[deploy]", f"remote = {_q(f.remote or 'git@host:team/deploy.git')}",
                         'branch = "main"', f"manifests = {_q(f.manifests)}"])]


RUNNERS = [
    *_c("No [[runners]]: the local Docker daemon runs its native platform and emulates the "
        "rest. Add one table per extra daemon or Dagger engine, e.g."), *_commented([
        "[[runners]]", 'name = "arm"', 'engine = "docker"  # docker | dagger',
        'host = "ssh://ci@arm-box"', 'platform = "linux/arm64"', "capacity = 2"]), "",
    "[emulation]", 'fallback = "qemu"  # qemu: emulate a platform no runner has natively; fail: refuse',
    "# budget_seconds = 1800  # fail the release when emulated seconds exceed this"]
TAIL = [
    "[publish]", "# Moved only after every gate passed; also {sha} {major} {minor} {run_id}.",
    'tags = ["sha-{short_sha}", "{branch}", "{semver}"]',
    'latest_on = "main"  # the branch that also moves `latest`',
    '# auth = { username = "ci", password_env = "REGISTRY_PASSWORD" }', "",
    *_c("[smoke]: run each platform's image by digest, N requests, p95 and error rate gated "
        "(port, health_path, predict_path, payload, p95_ms: see the README)."), "",
    '# [mlflow]: default sqlite in state_dir; tracking_uri = "http://mlflow:5000"', ""]


def render(f: Findings) -> str:
    """The commented ci.toml text (every live key loads with ci.core.config)."""
    note = (f"The image repository (no tag) the multi-arch index goes to; {f.image_source}."
            if f.image_source else
            "EDIT: a placeholder (no --image, no GitHub/GitLab origin). Repository, no tag.")
    return "\n".join([
        *_c("multiarch-ci config, written by `ci init` from what it found in this repository. "
            "Every key is in the README's config reference; unknown keys are errors. Any value "
            "can be overridden from the environment: MACI_PROJECT__IMAGE=..., "
            "MACI_EMULATION__FALLBACK=fail."),
        "", "[project]", f"name = {_q(f.name)}", *_c(note), f"image = {_q(f.image)}",
        "# Each platform is tested and built on a runner of its arch, else under qemu.",
        f"platforms = {_q(f.platforms)}",
        'state_dir = ".maci"  # git-ignored state: embedded MLflow store, verdicts', "",
        *RUNNERS, "", *_build(f), "", *_test(f), "", *_model(f), "", *TAIL, *_deploy(f), ""])


def found_lines(f: Findings) -> list[str]:
    """One line per thing discovered, as printed."""
    base = "" if "BASE" not in f.parsed.from_vars else \
        f"; FROM ${{BASE}} (default {f.base_default or 'none'})"
    tests = f"; tests: pytest ({f.tests})" if f.tests else "; no tests found"
    stages = ", ".join(s.name or "(unnamed)" for s in f.parsed.stages)
    return [
        f"dockerfile  {f.dockerfile}: stages {stages}{base}",
        f"build       target {f.release or '(the last stage)'}",
        f"test        target {f.test or '(none: the release image)'}{tests}",
        f"platforms   {', '.join(f.platforms)}{' (default)' * (f.platforms == DEFAULT_PLATFORMS)}",
        f"image       {f.image} ({f.image_source or 'placeholder: edit it'})",
        f"model       {f.training.found} → [model] {f.name}-model" if f.training
        else "model       no training script: [model] left commented",
        f"deploy      {', '.join(f.manifests)} → commented [deploy]" if f.manifests
        else "deploy      no kustomization under k8s/ or deploy/",
    ]


def next_steps(f: Findings, config_arg: str = "", gitignored: bool = True) -> list[str]:
    """What to do after `ci init`, in order; the edits come before the commands."""
    steps = []
    if not f.image_source:
        steps.append(f"edit project.image in ci.toml: {f.image} is a placeholder")
    if "BASE" in f.parsed.from_vars and not f.base_default:
        steps.append("set build.base_image: FROM ${BASE} and ARG BASE has no default")
    if not f.tests:
        steps.append("set [test] command: no tests/, pytest.ini or [tool.pytest] was found")
    if f.training:
        steps.append(f"make {f.training.found} log serving/model.json (or set [model.artifact]); "
                     "add a [model.thresholds.*] gate")
    steps += [] if gitignored else ["add .maci/ to .gitignore (the state dir)"]
    steps += [f"ci doctor{config_arg}  # Docker, buildx, qemu binfmt handlers, registry, MLflow",
              f"ci plan{config_arg}  # where each platform runs: native, emulated or unavailable",
              f"ci run --dry-run{config_arg}  # every gate, nothing published or deployed"]
    return [f"{i}. {s}" for i, s in enumerate(steps, 1)]


@dataclass(frozen=True)
class InitResult:
    path: Path
    written: bool
    text: str
    found: list[str]
    steps: list[str]

    def lines(self) -> list[str]:
        """The report: what was found, where it went, what next."""
        where = f"wrote {self.path}" if self.written else f"not written (would be {self.path})"
        return [*self.found, where, "next steps:", *(f"  {s}" for s in self.steps)]

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self.written, "found": self.found,
                "next_steps": self.steps, "config": self.text, "ok": True}


def _write(dest: Path, text: str, force: bool) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if force:  # through a temp file: replaces a symlink itself, never writes through it
            tmp.write_text(text)
            os.replace(tmp, dest)
        else:
            with dest.open("x") as fh:  # exclusive create: never clobbers
                fh.write(text)
    except FileExistsError:
        raise UsageError(f"{dest} already exists (--force overwrites it)") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {dest}: {exc.strerror or exc}") from None


def run_init(directory: Path, *, image: str | None = None, platforms: list[str] | None = None,
             dockerfile: str | None = None, force: bool = False, write: bool = True,
             cwd: Path | None = None) -> InitResult:
    """Discover, render, check the text loads, then write it (unless `write` is False);
    an existing config is refused before anything is read, unless `force`."""
    root = directory.resolve()
    if not root.is_dir():
        raise UsageError(f"--dir {directory}: not a directory")
    dest = root / cfg.CONFIG_FILE
    if write and not force and (existing := existing_config(root)) is not None:
        what = "already has a [tool.ci] table" if existing.name == "pyproject.toml" else "already exists"
        raise UsageError(f"{existing} {what} (--force writes a new ci.toml)")
    found = discover(root, image=image, platforms=platforms, dockerfile=dockerfile)
    text = render(found)
    cfg.loads(text, str(dest), str(root), {})  # a ConfigError here is a bug worth exit 2
    config_arg = "" if (cwd or Path.cwd()).resolve() == root else f" -c {shlex.quote(str(dest))}"
    ignore = root / ".gitignore"
    gitignored = ignore.is_file() and ".maci" in ignore.read_text(errors="replace")
    if write:
        _write(dest, text, force)
    return InitResult(dest, write, text, found_lines(found),
                      next_steps(found, config_arg, gitignored))
