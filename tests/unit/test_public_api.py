"""The public API (`from ci import ...`): the exported names are pinned, each resolves, and
importing the package stays cheap (no MLflow, no Dagger, no Typer until a name is used)."""

from __future__ import annotations

import subprocess
import sys

import ci

PINNED = [
    "Busy", "CIError", "Config", "ConfigError", "DeployRefused", "DeployResult", "Engine",
    "EngineError", "GateCheck", "GateFailed", "GitOpsError", "GitPort", "Interrupted",
    "JobSpec", "JournalError", "ModelStageResult", "ModelVerdict", "Permit", "PipelineError", "Plan",
    "PlanUnavailable", "PlatformResult", "Ports", "PromoteResult", "PublishResult",
    "RegistryError", "RegistryPort", "Release", "ReleaseOutcome", "SignatureError", "SmokeResult",
    "SourceInfo", "StepFailed", "TestsFailed", "ToolError", "TrackingError", "TrackingPort",
    "UsageError", "VerificationFailed", "Verdict", "__version__", "decide", "finish",
    "image_only_pipeline", "load_config", "main", "release_pipeline",
]


def test_exported_names_are_pinned() -> None:
    assert sorted(ci.__all__) == sorted(PINNED)


def test_every_exported_name_resolves() -> None:
    for name in ci.__all__:
        assert getattr(ci, name) is not None, name
    assert ci.release_pipeline.__module__ == "ci.pipelines.release"
    assert issubclass(ci.GateFailed, ci.CIError)


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        ci.nothing_here  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "nothing_here" in str(exc)
    else:
        raise AssertionError("ci.nothing_here resolved")


def test_import_ci_and_the_handle_load_no_heavy_library() -> None:
    code = ("import sys, ci; ci.Release; ci.decide; ci.GateFailed; "
            "print(sorted(m for m in ('mlflow', 'dagger', 'typer', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
