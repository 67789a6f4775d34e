"""The error tree of multiarch-ci, and the exit code each branch maps to.

Every failure the library can report is one of these. Tool errors (docker, buildx,
dagger-io, MLflow, git, HTTP) are translated into this tree at the adapter edge, so the
CLI's single handler can map them to exit codes without knowing any tool::

    CIError                      base; exit 3 unless a subclass says otherwise
    ├── UsageError               exit 2: bad command line, bad value given by the user
    │   ├── ConfigError          exit 2: one or more config problems (dotted path + bad value)
    │   ├── PlatformError        exit 2: a platform string that is not an OCI platform
    │   └── PipelineError        exit 2: a pipeline file is missing, broken or calls stages out of order
    ├── StepFailed               exit 1: a step ran and failed (keeps exit code, stdout, stderr)
    │   └── TestsFailed          exit 1: the test command failed on a platform
    ├── GateFailed               exit 1: a release gate said no (tests, metrics, smoke, plan)
    │   └── PlanUnavailable      exit 1: a platform has no runner, or no base image on its runner
    ├── ToolError                exit 1: an outside tool or service failed or is unreachable
    │   ├── ToolMissing          exit 1: a required executable is not installed
    │   ├── EngineError          exit 1: docker/buildx/dagger failed (not a test failure)
    │   │   └── EngineUnreachable  exit 1: no engine/daemon answered
    │   ├── JUnitError           exit 1: the test tool's report is not JUnit XML we can read
    │   ├── RegistryError        exit 1: the OCI registry refused or failed a request
    │   │   └── TagMoveError     exit 1: a tag write failed (says what moved, rolled back, not moved)
    │   ├── TrackingError        exit 1: MLflow failed or is unreachable
    │   ├── SignatureError       exit 1: cosign could not sign the index (keeps exit code, output)
    │   └── GitOpsError          exit 1: clone/commit/push of the deploy repo failed
    │       ├── DeployRefused    exit 1: the monotonic guard refused an older source commit
    │       └── ManifestError    exit 1: a deploy manifest is not valid YAML (names file and line)
    ├── VerificationFailed       exit 1: a deploy refused: the index's signature or annotations
    │                                    do not check out (unsigned, another key, other source)
    ├── SetupError               exit 1: the machine cannot be set up as asked (not root...)
    ├── Busy                     exit 1: another release of the same state dir holds the lock
    ├── JournalError             exit 1: an unfinished release's journal cannot be read or finished
    ├── AttestationError         exit 1: an SBOM/provenance input (OCI layout, layer) cannot be read
    └── Interrupted              exit 130 (SIGINT) / 143 (SIGTERM); the message says what moved
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class CIError(Exception):
    """Base of every error multiarch-ci raises on purpose."""

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def lines(self) -> list[str]:
        """The lines the CLI prints for this error (one per problem)."""
        return [self.message]


class UsageError(CIError):
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class ConfigProblem:
    """One config problem: where (dotted path), what value, and why."""

    path: str
    value: object
    reason: str
    source: str = ""

    def line(self) -> str:
        where = f"{self.source}: " if self.source else ""
        shown = "" if self.value is _MISSING else f" = {_short(self.value)}"
        return f"{where}{self.path or '<root>'}{shown}: {self.reason}"


_MISSING = object()


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigError(UsageError):
    """Config could not be loaded; carries one problem per bad field."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.line() for p in problems) or "invalid config")

    def lines(self) -> list[str]:
        return [f"config error: {p.line()}" for p in self.problems]


class PlatformError(UsageError):
    pass


class PipelineError(UsageError):
    """A pipeline (the user's code) cannot be loaded or called a stage out of order."""


class StepFailed(CIError):
    """A step ran and failed; like dagger.ExecError it keeps exit code, stdout and stderr."""

    exit_code = EXIT_FAILED

    def __init__(
        self,
        message: str,
        *,
        step: str = "",
        cmd: list[str] | None = None,
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.step = step
        self.cmd = list(cmd or [])
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def tail(self, n: int = 20) -> str:
        """The last lines of stderr (or stdout): what a user reads first."""
        text = self.stderr.strip() or self.stdout.strip()
        return "\n".join(text.splitlines()[-n:])


class TestsFailed(StepFailed):
    __test__ = False  # not a pytest class


class GateFailed(CIError):
    exit_code = EXIT_FAILED


class PlanUnavailable(GateFailed):
    """The plan cannot run; `problems` has one line per cause (an unplaced platform, a
    missing base image), so the CLI prints each on its own line."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [message])

    def lines(self) -> list[str]:
        return list(self.problems)


class ToolError(CIError):
    exit_code = EXIT_FAILED


class ToolMissing(ToolError):
    pass


class EngineError(ToolError):
    pass


class EngineUnreachable(EngineError):
    pass


class JUnitError(ToolError):
    """The text is not a JUnit report we can read (the exit code then decides alone)."""


class RegistryError(ToolError):
    pass


class TagMoveError(RegistryError):
    """A tag write failed; says which tags moved, which were rolled back, which were not."""

    def __init__(
        self, message: str, *, moved: list[str], rolled_back: list[str], not_moved: list[str],
    ) -> None:
        super().__init__(message)
        self.moved = moved
        self.rolled_back = rolled_back
        self.not_moved = not_moved


class TrackingError(ToolError):
    pass


class GitOpsError(ToolError):
    pass


class DeployRefused(GitOpsError):
    pass


class ManifestError(GitOpsError):
    """A deploy manifest that is not valid YAML (the message names the file and line)."""


class SignatureError(ToolError):
    """Signing the index failed (nothing was tagged: signing comes before any tag moves);
    keeps cosign's exit code and output, like StepFailed."""

    def __init__(self, message: str, *, cmd: list[str] | None = None,
                 returncode: int | None = None, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.cmd, self.returncode = list(cmd or []), returncode
        self.stdout, self.stderr = stdout, stderr


class VerificationFailed(CIError):
    """A deploy refused before anything was cloned or committed: the index is unsigned,
    signed by another key/identity, or its annotations name another source commit.
    `reason` is the short cause ("no signatures found", "signed by another key"...)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, reason: str = "", cmd: list[str] | None = None,
                 returncode: int | None = None, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.cmd, self.returncode = list(cmd or []), returncode
        self.stdout, self.stderr = stdout, stderr


class SetupError(CIError):
    exit_code = EXIT_FAILED


class Busy(CIError):
    """Another run holds the state dir's release lock (the message names it and since when)."""

    exit_code = EXIT_FAILED


class JournalError(CIError):
    """An unfinished release could not be read or completed; the message says what to check."""

    exit_code = EXIT_FAILED


class AttestationError(CIError):
    """An attestation input is unusable (a broken OCI layout, a layer that is not a tar, a
    digest that does not match): the message names the file or blob."""

    exit_code = EXIT_FAILED


class Interrupted(CIError):
    exit_code = EXIT_INTERRUPTED


MISSING = _MISSING
