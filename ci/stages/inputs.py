"""The model input hash, read from the project: files, directories and globs by relative
path + content, `env:NAME` values, `pkg:NAME` versions, params and the command.

An entry must stay inside the project root (a config error naming `model.inputs`
otherwise). An env value is never stored, printed or logged: only a slow salted hash of
it (PBKDF2), so neither the input hash nor the per-entry tag is a cheap dictionary attack
on a secret.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ci.core import inputs as rules
from ci.core.errors import ConfigError, ConfigProblem

HASH_VERSION = "1"
SKIP_PARTS = {"__pycache__", ".git", ".maci", "mlruns", ".pytest_cache", ".mypy_cache",
              ".ruff_cache", ".venv", ".tox"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
ENV_ROUNDS = 100_000


@dataclass(frozen=True)
class InputSet:
    """The identity the hash covers, and one short identity per entry (what the run
    records so the next run can say WHICH entry changed)."""

    identity: dict[str, object]
    entries: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """sha256 of the identity as canonical JSON (key order never matters)."""
        blob = json.dumps(self.identity, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def _problem(entry: str, reason: str) -> ConfigError:
    return ConfigError([ConfigProblem("model.inputs", entry, reason)])


def env_identity(name: str, environ: Mapping[str, str]) -> str | None:
    """None when unset (distinct from ""), else PBKDF2-SHA256 of the value salted by name."""
    value = environ.get(name)
    if value is None:
        return None
    salt = f"maci-env/{name}".encode()
    return hashlib.pbkdf2_hmac("sha256", value.encode(), salt, ENV_ROUNDS).hex()


def _package_version(entry: str, packages: Mapping[str, str] | None, seen_by: str) -> str:
    """The version ci's interpreter sees, or the one `packages` (read by the training
    interpreter or image, named by `seen_by`) holds: what the training really imports."""
    name = rules.entry_name(entry)
    if packages is not None:
        if name in packages:
            return packages[name]
        raise _problem(entry, f"no such installed distribution in {seen_by or 'the training'}")
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise _problem(entry, "no such installed distribution") from None


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def _skipped(path: Path, skip: frozenset[Path]) -> bool:
    """`skip` holds files and folders (a folder skips everything under it)."""
    real = path.resolve()
    return real in skip or not skip.isdisjoint(real.parents)


def _walk(path: Path, skip: frozenset[Path]) -> Iterable[Path]:
    if path.is_file():
        if not _skipped(path, skip):
            yield path
        return
    for p in sorted(path.rglob("*")):
        if (p.is_file() and p.suffix not in SKIP_SUFFIXES
                and not SKIP_PARTS.intersection(p.relative_to(path).parts)
                and not _skipped(p, skip)):
            yield p


def _outermost(found: list[Path]) -> list[Path]:
    """Matches without a matched ancestor folder (`**` matches every folder: walk once)."""
    kept: list[Path] = []
    for p in sorted(found):
        if not any(p.is_relative_to(k) for k in kept if k.is_dir()):
            kept.append(p)
    return kept


def _matches(workdir: Path, root: Path, entry: str) -> list[Path]:
    """The files or folders an entry names: relative to the workdir, existing, and inside
    `root` (checked on the literal part, and again on every file read)."""
    parts = Path(entry).parts
    magic = next((i for i, p in enumerate(parts) if rules.GLOB_CHARS.intersection(p)),
                 len(parts))
    base = workdir.joinpath(*parts[:magic])  # an absolute entry replaces the workdir
    if not _inside(base, root):
        raise _problem(entry, f"outside the project root {root}")
    if magic == len(parts):
        if not base.exists():
            raise _problem(entry, f"no such file or directory under {workdir}")
        return [base]
    if ".." in parts[magic:]:
        raise _problem(entry, "'..' after a wildcard could leave the project root")
    found = [p for p in (base.glob("/".join(parts[magic:])) if base.is_dir() else [])
             if not SKIP_PARTS.intersection(p.relative_to(base).parts)]  # `*` skips .git
    if not found:
        raise _problem(entry, f"the glob matches nothing under {workdir}")
    return _outermost(found)


def _rel(path: Path, workdir: Path) -> str:
    return Path(os.path.relpath(path, workdir)).as_posix()


def collect(
    workdir: Path,
    inputs: Sequence[str],
    params: Mapping[str, object],
    command: Sequence[str],
    *,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    skip: Iterable[Path] = (),
    packages: Mapping[str, str] | None = None,
    seen_by: str = "",
) -> InputSet:
    """Read every entry once; `skip` drops what we write ourselves (the handed-off model,
    the state dir) from folder and glob entries, so a release never changes the hash;
    `packages` are `pkg:` versions as the training interpreter sees them (None: ci's)."""
    workdir = workdir.resolve()
    top = (root or workdir).resolve()
    env = os.environ if environ is None else environ
    skipped = frozenset(p.resolve() for p in skip)
    files: dict[str, str] = {}
    pkgs: dict[str, str] = {}
    envs: dict[str, str | None] = {}
    entries: dict[str, str] = {}
    for entry in inputs:
        kind = rules.kind_of(entry)
        if kind == "env":
            name = rules.entry_name(entry)
            envs[name] = env_identity(name, env)
            entries[f"env:{name}"] = rules.short(envs[name] or rules.UNSET)
            continue
        if kind == "pkg":
            name = rules.entry_name(entry)
            pkgs[name] = _package_version(entry, packages, seen_by)
            entries[f"pkg:{name}"] = rules.short(pkgs[name])
            continue
        mine: dict[str, str] = {}
        for match in _matches(workdir, top, entry):
            explicit = kind == "path" and match.is_file()  # a named file is always read
            for path in _walk(match, frozenset() if explicit else skipped):
                if not _inside(path, top):
                    raise _problem(entry, f"{_rel(path, workdir)} resolves outside the "
                                          f"project root {top}")
                mine[_rel(path, workdir)] = hashlib.sha256(path.read_bytes()).hexdigest()
        files.update(mine)
        entries[entry] = rules.short(dict(sorted(mine.items())))
    identity: dict[str, object] = {
        "v": HASH_VERSION,
        "files": dict(sorted(files.items())),
        "packages": dict(sorted(pkgs.items())),
        "params": {k: params[k] for k in sorted(params)},
        "command": list(command),
    }
    if envs:  # only when declared: configs without env entries keep their earlier hash
        identity["env"] = dict(sorted(envs.items()))
    return InputSet(identity, entries | rules.param_entries(params, command))
