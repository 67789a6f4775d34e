"""`ci merge result-*.json`: the legs' results → one verdict (the same `decide()` as
`ci run`) → with its Permit, the shared publish path."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from ci.adapters.state_dir import check_state_dir
from ci.core.config import Config
from ci.core.errors import UsageError
from ci.core.model import ModelStageResult
from ci.core.outcome import PublishResult
from ci.core.results import PlatformResult
from ci.core.verdict import Verdict, model_verdict_of
from ci.pipelines.ports import RegistryFactory
from ci.stages.prepare import now_rfc3339
from ci.stages.publish import check_publishable, decide_results, publish_release
from ci.stages.real import registry_for, tag_guard_for
from ci.stages.sign import signer


def load_result(path: Path) -> PlatformResult:
    """One result file; a missing or invalid file is a usage error naming the file."""
    try:
        text = path.read_bytes()  # not UTF-8 is a validation error below, not a crash
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    try:
        return PlatformResult.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = _where(first["loc"])
        raise UsageError(f"{path}: not a platform result ({where}: {_one_line(first['msg'])})") from None


def _where(loc: tuple[int | str, ...]) -> str:
    """The field path of a validation error on one line (an odd JSON key is quoted)."""
    return ".".join(str(p) if isinstance(p, int) or p.isidentifier() else repr(p)
                    for p in loc) or "<root>"


def _one_line(text: str) -> str:
    """A pydantic message cannot break the one-line error a refused merge prints."""
    return " ".join(text.split())


def load_model_result(path: Path) -> ModelStageResult:
    """The JSON `ci train --json` printed (its extra `ok` key is ignored)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model-result {path}: {exc}") from None
    if isinstance(data, dict):
        data.pop("ok", None)
    try:
        return ModelStageResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = _where(first["loc"])
        raise UsageError(f"--model-result {path}: not `ci train --json` output "
                         f"({where}: {_one_line(first['msg'])})") from None


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
    model_result: Path | None = None,
    environ: Mapping[str, str] | None = None,
    registry: RegistryFactory = registry_for,
) -> tuple[list[PlatformResult], Verdict, PublishResult]:
    """Decide the verdict from the legs' results, then publish with its Permit; a rejected
    verdict raises GateFailed (its first reason) and touches nothing."""
    check_state_dir(config.state_path)
    if not files:
        raise UsageError("give the result files of the platform jobs (ci job --output ...)")
    if config.model is not None and model_result is None:
        raise UsageError("--model-result is required: the config has a [model], so the merge "
                         "weighs the gate decision `ci train --json` printed (gate.json)")
    check_publishable(config, expected, True)
    env = dict(os.environ if environ is None else environ)
    results = [load_result(Path(f)) for f in files]
    model = model_verdict_of(load_model_result(model_result)) if model_result else None
    verdict = decide_results(config, results, expected=expected, model=model,
                             created=now_rfc3339(), model_required=config.model is not None,
                             smoke_required=config.smoke is not None)
    permit = verdict.permit()
    client = registry(config, env)
    try:
        published = publish_release(permit, config, client, before_tags=signer(config, verdict, env),
                                    guard=tag_guard_for(config, verdict.source.sha, env))
    finally:
        client.close()
    return results, verdict, published
