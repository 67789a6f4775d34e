"""multiarch-ci: gated multi-architecture releases of ML services.

The public API a project's own pipeline (`pipelines/NAME.py`) is written against::

    from ci import Release, finish, main

    def pipeline(run: Release) -> int:
        run.plan()
        run.platform_jobs()
        run.add_gate("changelog", passed=..., reason="...")
        verdict = run.decide(require_model=False)
        ...

    if __name__ == "__main__":
        raise SystemExit(main(pipeline))

Names load lazily (PEP 562), so `import ci` stays cheap; the list is pinned by a test.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ci.core.version import __version__

_EXPORTS = {
    # the handle and its ports
    "Release": "ci.pipelines.handle",
    "Ports": "ci.pipelines.ports",
    "main": "ci.cli:run_main",
    # built-in pipelines, to call or extend
    "release_pipeline": "ci.pipelines.release:pipeline",
    "image_only_pipeline": "ci.pipelines.image_only:pipeline",
    "finish": "ci.pipelines.release",
    # the verdict and its key
    "decide": "ci.core.verdict",
    "Verdict": "ci.core.verdict",
    "Permit": "ci.core.verdict",
    "GateCheck": "ci.core.verdict",
    "ModelVerdict": "ci.core.verdict",
    "SmokeResult": "ci.core.verdict",
    # data the stages produce
    "Config": "ci.core.config",
    "load_config": "ci.core.config:load",
    "Plan": "ci.core.plan",
    "JobSpec": "ci.core.results",
    "PlatformResult": "ci.core.results",
    "SourceInfo": "ci.core.results",
    "PublishResult": "ci.core.outcome",
    "DeployResult": "ci.core.outcome",
    "ReleaseOutcome": "ci.core.outcome",
    "PromoteResult": "ci.core.model",
    "ModelStageResult": "ci.core.model",
    # the ports a fake may implement
    "Engine": "ci.core.ports",
    "RegistryPort": "ci.core.ports",
    "TrackingPort": "ci.core.ports",
    "GitPort": "ci.core.ports",
    # the error tree
    "CIError": "ci.core.errors",
    "UsageError": "ci.core.errors",
    "ConfigError": "ci.core.errors",
    "PipelineError": "ci.core.errors",
    "StepFailed": "ci.core.errors",
    "TestsFailed": "ci.core.errors",
    "GateFailed": "ci.core.errors",
    "PlanUnavailable": "ci.core.errors",
    "ToolError": "ci.core.errors",
    "EngineError": "ci.core.errors",
    "RegistryError": "ci.core.errors",
    "TrackingError": "ci.core.errors",
    "GitOpsError": "ci.core.errors",
    "DeployRefused": "ci.core.errors",
    "Interrupted": "ci.core.errors",
    "Busy": "ci.core.errors",
    "JournalError": "ci.core.errors",
    "SignatureError": "ci.core.errors",
    "VerificationFailed": "ci.core.errors",
}

__all__ = [
    "Busy",
    "CIError",
    "Config",
    "ConfigError",
    "DeployRefused",
    "DeployResult",
    "Engine",
    "EngineError",
    "GateCheck",
    "GateFailed",
    "GitOpsError",
    "GitPort",
    "Interrupted",
    "JobSpec",
    "JournalError",
    "ModelStageResult",
    "ModelVerdict",
    "Permit",
    "PipelineError",
    "Plan",
    "PlanUnavailable",
    "PlatformResult",
    "Ports",
    "PromoteResult",
    "PublishResult",
    "RegistryError",
    "RegistryPort",
    "Release",
    "ReleaseOutcome",
    "SignatureError",
    "SmokeResult",
    "SourceInfo",
    "StepFailed",
    "TestsFailed",
    "ToolError",
    "TrackingError",
    "TrackingPort",
    "UsageError",
    "Verdict",
    "VerificationFailed",
    "__version__",
    "decide",
    "finish",
    "image_only_pipeline",
    "load_config",
    "main",
    "release_pipeline",
]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'ci' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from ci.cli import run_main as main
    from ci.core.config import Config
    from ci.core.config import load as load_config
    from ci.core.errors import (
        Busy,
        CIError,
        ConfigError,
        DeployRefused,
        EngineError,
        GateFailed,
        GitOpsError,
        Interrupted,
        JournalError,
        PipelineError,
        PlanUnavailable,
        RegistryError,
        SignatureError,
        StepFailed,
        TestsFailed,
        ToolError,
        TrackingError,
        UsageError,
        VerificationFailed,
    )
    from ci.core.model import ModelStageResult, PromoteResult
    from ci.core.outcome import DeployResult, PublishResult, ReleaseOutcome
    from ci.core.plan import Plan
    from ci.core.ports import Engine, GitPort, RegistryPort, TrackingPort
    from ci.core.results import JobSpec, PlatformResult, SourceInfo
    from ci.core.verdict import GateCheck, ModelVerdict, Permit, SmokeResult, Verdict, decide
    from ci.pipelines.handle import Release
    from ci.pipelines.image_only import pipeline as image_only_pipeline
    from ci.pipelines.ports import Ports
    from ci.pipelines.release import finish
    from ci.pipelines.release import pipeline as release_pipeline
