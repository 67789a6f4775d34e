"""Retries of transient failures around whole tool calls (adapter): `docker push`, probes.

`RegistryClient` retries its own HTTP requests; a tool we run as a whole only tells us what
went wrong in its output, so `classify` reads that text. 5xx, 429, resets, refused
connections, timeouts and lost upload sessions are transient; auth errors, denied access,
unknown or invalid names are not (the same request would fail the same way). `call` runs a
callable again on a transient failure with bounded exponential backoff (stamina) and logs
one line per retry, e.g. `push linux/arm64: attempt 2/4 after HTTP 500 (retrying in 1.1 s)`.

Tuning: MACI_RETRY_ATTEMPTS (default 4, at most 10), MACI_RETRY_WAIT_INITIAL (seconds before
the first retry, default 1; doubled each time) and MACI_RETRY_WAIT_MAX (default 10). With
the defaults a call that keeps failing fast gives up after 1 + 2 + 4 s of waiting (+≤25 %
jitter), plus the time of the attempts themselves.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import stamina

from ci.adapters import proc
from ci.core.errors import ConfigError, ConfigProblem, StepFailed
from ci.core.redact import redact

__all__ = ["Policy", "Transient", "call", "classify", "from_error", "logged"]

log = logging.getLogger(__name__)
stamina.instrumentation.set_on_retry_hooks([])  # our own retry lines say what failed
T = TypeVar("T")

ATTEMPTS_ENV = "MACI_RETRY_ATTEMPTS"
WAIT_INITIAL_ENV = "MACI_RETRY_WAIT_INITIAL"
WAIT_MAX_ENV = "MACI_RETRY_WAIT_MAX"
MAX_ATTEMPTS = 10
RETRY_AFTER_MAX = 30.0  # a Retry-After of an hour must not hold a release for an hour


@dataclass(frozen=True)
class Transient:
    """Why a failure is worth another attempt ("HTTP 500"), and the wait the server asked for."""

    reason: str
    retry_after: float | None = None


# Checked first: these fail the same way every time, whatever else the text says.
_PERMANENT = re.compile(
    r"unauthori[sz]ed|authentication required|no basic auth credentials|insufficient_scope"
    r"|denied|forbidden|unknown manifest|manifest unknown|name unknown|name invalid"
    r"|manifest invalid|tag invalid|invalid reference format|repository name must"
    r"|x509:|certificate|server gave HTTP response to HTTPS client|no such image",
    re.IGNORECASE,
)
_STATUS = r"(?:HTTP(?: Error| status)?|status(?: code)?|error code)[:\s]+"
_TRANSIENT: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"toomanyrequests|too many requests|{_STATUS}429\b|too many 429 ", re.I),
     "HTTP 429"),
    (re.compile(rf"{_STATUS}(5\d\d)\b|\b(5\d\d) (?:Internal Server Error|Bad Gateway"
                r"|Service Unavailable|Gateway Time-?out)|too many (5\d\d) error", re.I), ""),
    (re.compile(r"service unavailable|temporarily unavailable", re.I), "HTTP 503"),
    (re.compile(r"connection reset|ECONNRESET|\[Errno 104\]", re.I), "connection reset"),
    (re.compile(r"connection refused|ECONNREFUSED|\[Errno 111\]", re.I), "connection refused"),
    (re.compile(r"broken pipe|\[Errno 32\]", re.I), "broken pipe"),
    (re.compile(r"blob[ _]upload[ _](?:unknown|invalid)", re.I), "blob upload unknown"),
    (re.compile(r"i/o timeout|handshake timeout|timeout awaiting response|deadline exceeded"
                r"|Client\.Timeout exceeded|\btimed out\b", re.I), "timeout"),
    (re.compile(r"\bEOF\b"), "EOF"),
    (re.compile(r"network is unreachable|no route to host|temporary failure in name resolution",
                re.I), "network unreachable"),
]
_RETRY_AFTER = re.compile(r"retry[- _]after[\"']?[:=\s]+[\"']?(\d+(?:\.\d+)?)", re.I)


def classify(text: str) -> Transient | None:
    """The transient cause a tool's error output names, or None (permanent or unknown)."""
    if not text or _PERMANENT.search(text):
        return None
    for pattern, reason in _TRANSIENT:
        match = pattern.search(text)
        if match:
            code = next((g for g in match.groups() if g), "")
            after = _RETRY_AFTER.search(text)
            return Transient(reason or f"HTTP {code}", float(after[1]) if after else None)
    return None


def from_error(exc: BaseException) -> Transient | None:
    """The transient cause of a failed command (its stderr) or I/O error; None otherwise."""
    if isinstance(exc, StepFailed):
        return classify(exc.stderr or exc.stdout)
    if isinstance(exc, OSError):
        return classify(str(exc))
    return None


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ConfigError([ConfigProblem(name, raw, f"must be a number from {low:g} to {high:g}",
                                         "environment")])
    return value


@dataclass(frozen=True)
class Policy:
    """How often and how patiently to retry; `wait(n)` is the pause before retry n (1-based)."""

    attempts: int = 4
    wait_initial: float = 1.0
    wait_max: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Policy:
        env = os.environ if environ is None else environ
        return cls(
            attempts=int(_number(env, ATTEMPTS_ENV, cls.attempts, 1, MAX_ATTEMPTS)),
            wait_initial=_number(env, WAIT_INITIAL_ENV, cls.wait_initial, 0, 60),
            wait_max=_number(env, WAIT_MAX_ENV, cls.wait_max, 0, 300),
        )

    def wait(self, retry: int, cause: Transient | None = None) -> float:
        """Exponential with up to 25 % jitter, or the server's Retry-After (capped)."""
        if cause is not None and cause.retry_after is not None:
            return min(cause.retry_after, RETRY_AFTER_MAX)
        base = min(self.wait_max, self.wait_initial * 2.0 ** (retry - 1))
        return min(self.wait_max, base * (1 + random.uniform(0, 0.25)))

    def worst_case_wait(self) -> float:
        """The longest total pause before giving up (jitter included, no Retry-After)."""
        return sum(min(self.wait_max, self.wait_initial * 2.0 ** (n - 1) * 1.25)
                   for n in range(1, self.attempts))


def _last_line(exc: BaseException) -> str:
    text = (exc.stderr or exc.stdout or exc.message) if isinstance(exc, StepFailed) else str(exc)
    lines = text.strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def call(
    fn: Callable[[], T], *, what: str,
    transient: Callable[[BaseException], Transient | None] = from_error,
    policy: Policy | None = None,
    give_up: Callable[[str], Exception] | None = None,
) -> T:
    """`fn()`, run again while it fails transiently, at most `policy.attempts` times in all.

    A permanent failure is raised at once, unchanged. When the last attempt failed
    transiently, `give_up(message)` is raised (it names the attempts and the last cause),
    or the last error itself without `give_up`.
    """
    rules = policy or Policy.from_env()
    num = 0
    last: tuple[BaseException, Transient] | None = None

    def backoff(exc: Exception) -> bool | float:
        nonlocal last
        cause = transient(exc)
        if cause is None:
            return False
        last = (exc, cause)
        if num >= rules.attempts:
            return True  # stamina stops here and re-raises `exc`
        pause = rules.wait(num, cause)
        log.warning("%s", redact(f"{what}: attempt {num + 1}/{rules.attempts} after "
                                 f"{cause.reason} (retrying in {pause:.1f} s)"))
        return pause

    try:
        for attempt in stamina.retry_context(on=backoff, attempts=rules.attempts, timeout=None,
                                             wait_jitter=0):
            with attempt:
                num = attempt.num
                return fn()
    except Exception as exc:
        if give_up is None or last is None or last[0] is not exc:
            raise
        raise give_up(redact(f"{what} failed after {num} attempt{'s' * (num > 1)} "
                             f"(last: {last[1].reason}): {_last_line(exc)}")) from exc
    raise AssertionError("unreachable: stamina yields until an attempt returns or raises")


def logged(step: Callable[[], proc.Result], log_file: Path) -> Callable[[], proc.Result]:
    """`step`, writing each attempt's output to `log_file` (failed attempts kept, in order)."""
    count = 0

    def attempt() -> proc.Result:
        nonlocal count
        count += 1
        text = ""
        try:
            res = step()
            text = res.stdout + res.stderr
        except StepFailed as exc:
            text = exc.stdout + exc.stderr
            raise
        finally:
            with log_file.open("w" if count == 1 else "a") as fh:
                fh.write(text if count == 1 else f"\n--- attempt {count} ---\n{text}")
        return res

    return attempt
