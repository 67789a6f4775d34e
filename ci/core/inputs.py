"""Pure rules of the model input hash: what a `model.inputs` entry is, how per-entry
identities are shortened and compared, and the human reason for reusing or retraining.

The stage that reads files and the environment lives in `ci/stages/inputs.py`; everything
here works on strings and dicts so the decision can be tested without a filesystem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Literal

from ci.core.errors import ConfigError, ConfigProblem

EntryKind = Literal["env", "pkg", "glob", "path"]
GLOB_CHARS = frozenset("*?[")
SHORT = 12  # hex digits of a per-entry identity: enough to tell two versions apart
MAX_NAMED = 5  # a reason names at most this many entries, then says "and N more"
UNSET = "unset"  # the identity of a declared env var that is not set (distinct from "")


def kind_of(entry: str) -> EntryKind:
    """`env:NAME`, `pkg:NAME`, a glob (`data/*.csv`, `**`), else a file or directory."""
    if entry.startswith("env:"):
        return "env"
    if entry.startswith("pkg:"):
        return "pkg"
    if GLOB_CHARS.intersection(entry):
        return "glob"
    return "path"


def entry_name(entry: str) -> str:
    """The variable or distribution an `env:`/`pkg:` entry names (a config error if empty)."""
    name = entry.split(":", 1)[1].strip()
    if not name:
        raise ConfigError([ConfigProblem("model.inputs", entry, "names nothing after the colon")])
    return name


def short(value: object) -> str:
    """A short, stable identity of any JSON-able value (canonical JSON, sha256)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:SHORT]


def param_entries(params: Mapping[str, object], command: Sequence[str]) -> dict[str, str]:
    """Params and the command as pseudo-entries, so a reason can name `params.C`."""
    out = {f"params.{k}": short(v) for k, v in params.items()}
    out["command"] = short(list(command))
    return out


def _names(keys: list[str]) -> str:
    shown = keys[:MAX_NAMED]
    more = len(keys) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def changes(previous: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """What differs between two per-entry identity maps, e.g. `env:FEATURES changed`."""
    changed = sorted(k for k in current if k in previous and previous[k] != current[k])
    added = sorted(k for k in current if k not in previous)
    removed = sorted(k for k in previous if k not in current)
    out = []
    for keys, verb in ((changed, "changed"), (added, "added"), (removed, "removed")):
        if keys:
            out.append(f"{_names(keys)} {verb}")
    return out


def retrain_reason(
    *,
    forced_by: str,
    previous_run: str | None,
    previous_entries: Mapping[str, str] | None,
    current: Mapping[str, str],
    same_hash: bool,
) -> str:
    """Why a new run trains: the flag that forced it, else which entries changed."""
    if previous_run is None:
        base = "trained: no earlier finished run in the experiment"
        return f"trained: {forced_by}" if forced_by else base
    what = changes(previous_entries, current) if previous_entries is not None else []
    if forced_by:
        tail = "inputs unchanged" if same_hash else ("; ".join(what) or "inputs changed")
        return f"retrained: {forced_by} ({tail})"
    if what:
        return f"retrained: {'; '.join(what)}"
    if previous_entries is None:
        return (f"retrained: inputs differ from run {previous_run[:SHORT]} (it recorded no "
                "per-entry identities)")
    return "retrained: input hash changed"


def reuse_reason(run_id: str, digest: str) -> str:
    return f"reused run {run_id[:SHORT]}: inputs unchanged (hash {digest[:SHORT]}), no retraining"
