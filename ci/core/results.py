"""Typed inputs and outputs of a platform job, shared by every engine (pure data).

A `PlatformResult` is also the file a CI matrix leg writes (`ci job --output`) and
`ci merge` reads, so it is versioned and validated on load.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ci.core.data import Frozen
from ci.core.plan import Placement

RESULT_SCHEMA = 1



class SourceInfo(Frozen):
    """Where the code came from: used for tags, labels, commit messages and reports."""

    sha: str = ""
    ref: str = ""
    branch: str = ""
    tag: str = ""
    repository_url: str = ""
    run_id: str = ""
    run_url: str = ""
    actor: str = ""
    provider: Literal["github", "gitlab", "local"] = "local"
    pull_request: str = ""
    runner_arch: str = ""  # the machine running ci (normalised OCI arch: amd64, arm64...)
    commit_time: int | None = None  # committer time (Unix seconds): SOURCE_DATE_EPOCH of the images


class JobSpec(Frozen):
    """Everything one platform job needs; built from config + plan by `ci.jobs.spec_for`."""

    platform: str
    placement: Placement
    project: str
    image: str
    context: str
    dockerfile: str
    build_target: str | None = None
    test_target: str | None = None
    test_command: list[str]
    test_env: dict[str, str] = Field(default_factory=dict)
    junit_path: str = "/tmp/maci-junit.xml"
    test_timeout: float = 1800
    model_check: list[str] = Field(default_factory=list)  # [model] check_command, release image
    build_args: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    ca_bundle: str | None = None
    output_dir: str
    oci_layout: str = ""  # the release image's OCI layout (digest route), under the state dir
    compression: str | None = None  # [publish] compression / compression_level (digest route)
    reproducible: bool = True  # [build] reproducible: rewrite file times (digest route)
    compression_level: int | None = None
    run_id: str
    source: SourceInfo = Field(default_factory=SourceInfo)


class TestSummary(Frozen):
    __test__ = False
    total: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    junit_path: str | None = None
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0


class FailureDetail(Frozen):
    """What went wrong in a step; keeps exit code, stdout and stderr like dagger.ExecError."""

    step: str
    message: str
    command: list[str] = Field(default_factory=list)  # what ran (redacted), when a command did
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""

    def console_lines(self, tail: int = 5) -> list[str]:
        """What a user reads first on the console: the command, its exit code, stderr's end."""
        lines = []
        if self.command or self.exit_code is not None:
            shown = " ".join(self.command) if self.command else self.step
            code = f" exited {self.exit_code}" if self.exit_code is not None else ""
            lines.append(f"$ {shown}{code}")
        text = self.stderr_tail.strip() or self.stdout_tail.strip()
        lines += [f"  {line}" for line in text.splitlines()[-tail:]]
        return lines


class SmokeResult(Frozen):
    """Load test of one platform's serving image (run by digest, before any tag moves)."""

    platform: str
    placement: Literal["native", "emulated", "unavailable"]
    reference: str
    requests: int
    errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    bound_ms: float
    max_error_rate: float
    passed: bool
    reason: str = ""
    seconds: float = 0.0


class PlatformResult(Frozen):
    """The outcome of one platform job; publish reads only these (via the verdict)."""

    schema_version: int = RESULT_SCHEMA
    project: str
    image: str
    platform: str
    runner: str
    engine: str
    placement: Literal["native", "emulated", "unavailable"]
    placement_reason: str = ""
    status: Literal["passed", "failed", "error"]
    digest: str | None = None
    attestation: str | None = None  # its SBOM + provenance manifest (digest route), by digest
    pushed_bytes: int | None = None  # blob bytes the push uploaded (those the registry lacked)
    tests: TestSummary | None = None
    durations: dict[str, float] = Field(default_factory=dict)
    emulated_seconds: float = 0.0
    failure: FailureDetail | None = None
    source: SourceInfo = Field(default_factory=SourceInfo)
    run_id: str = ""
    smoke: SmokeResult | None = None  # a matrix leg's own smoke test (`ci job`), by digest

    @property
    def ok(self) -> bool:
        return self.status == "passed" and bool(self.digest)

    @property
    def reference(self) -> str | None:
        return f"{self.image}@{self.digest}" if self.digest else None

    @property
    def seconds(self) -> float:
        return round(sum(self.durations.values()), 3)
