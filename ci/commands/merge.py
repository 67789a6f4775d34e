"""`ci merge result-*.json`: validate the legs' results, then the shared publish path."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from ci.commands.build import publish_results
from ci.config import Config
from ci.errors import UsageError
from ci.publish import PublishResult
from ci.results import PlatformResult


def load_result(path: Path) -> PlatformResult:
    """One result file; a missing or invalid file is a usage error naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    try:
        return PlatformResult.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise UsageError(f"{path}: not a platform result ({where}: {first['msg']})") from None


def loadable_results(files: Sequence[Path]) -> list[PlatformResult]:
    """The result files that load (for reporting a refusal); bad ones are skipped."""
    out = []
    for f in files:
        with contextlib.suppress(UsageError):
            out.append(load_result(Path(f)))
    return out


def run_merge(
    config: Config,
    files: Sequence[Path],
    *,
    expected: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[PlatformResult], PublishResult]:
    """Publish the index from several legs' results, or refuse (GateFailed) touching nothing."""
    if not files:
        raise UsageError("give the result files of the platform jobs (ci job --output ...)")
    results = [load_result(Path(f)) for f in files]
    return results, publish_results(config, results, expected=expected, environ=environ)
