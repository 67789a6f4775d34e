"""The Dagger engine: one platform job through the dagger-io SDK on the connected engine.

Same steps and results as the Docker engine: build the test stage (or start from the base
image with the source mounted), run the tests with a pip cache volume and read the JUnit
file back, build the release stage with `Directory.docker_build(platform=...)`, publish by
digest. The SDK connection is process-wide, so this class serves ONE engine; several runner
hosts are `ci.engines.dagger_routing` (one child process each). With a [smoke] config,
`smoke_passed` then runs each passed platform's image by that digest as a Dagger service in
the same session (`ci.engines.dagger_smoke`), one at a time, and the result carries it.

Push by digest: `Container.publish` needs an address with a tag and would use `latest`
without one, moving a tag users pull. We publish under a run-unique `maci-tmp-<run>-<platform>`
tag, keep the digest it returns, and delete the temporary tag through the registry API when
a registry client is given; the release index is assembled from digests by `ci.stages.publish`.
"""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio

from ci.adapters.engines import dagger_session as ds
from ci.adapters.registry import Credentials, ImageRef, RegistryClient
from ci.core import junit, platforms
from ci.core.config import SmokeConfig
from ci.core.errors import EngineError, RegistryError, StepFailed
from ci.core.plan import DEFAULT_RUNNER
from ci.core.redact import redact, register
from ci.core.results import FailureDetail, JobSpec, PlatformResult, TestSummary
from ci.core.tags import sanitize

if TYPE_CHECKING:
    import dagger

T = TypeVar("T")
ENGINE = "dagger"
SRC = "/src"
PIP_CACHE = "/root/.cache/pip"
CA_PATH = "/etc/ssl/certs/maci-ca.pem"
TMP_TAG_PREFIX = "maci-tmp-"
SOURCE_EXCLUDE = [".git", ".maci", "**/__pycache__", "**/.pytest_cache"]
SECRET_LIMIT = 128_000  # setSecret's plaintext limit
EMULATED_STEPS = ("build_test", "test", "build_release", "model_check")
DIGEST_RE = re.compile(r"@(sha256:[0-9a-f]{64})$")
_IN_SESSION: ContextVar[bool] = ContextVar("maci_dagger_session", default=False)


def temp_tag(spec: JobSpec, what: str = "") -> str:
    """A run-unique tag under the reserved `maci-tmp-` prefix (never a release tag)."""
    slug = what or platforms.parse(spec.platform).slug
    return f"{TMP_TAG_PREFIX}{sanitize(spec.run_id)[:60]}-{slug}-{secrets.token_hex(3)}"


def digest_from_ref(ref: str) -> str:
    """`host/repo:tag@sha256:...` → `sha256:...` (EngineError for anything else)."""
    m = DIGEST_RE.search(ref.strip())
    if not m:
        raise EngineError(f"Dagger publish returned no digest: {ref!r}")
    return m.group(1)


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _dockerfile(spec: JobSpec) -> str:
    """The Dockerfile path relative to the context, as docker_build wants it."""
    path = Path(spec.dockerfile)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path(spec.context)).as_posix()
    except ValueError:
        raise StepFailed(f"Dockerfile {spec.dockerfile} is outside the build context "
                         f"{spec.context}; the Dagger engine can only build inside it",
                         step="build_release") from None


class _Step(Protocol):
    """Runs one named step, timing it and turning SDK errors into our tree."""

    def __call__(self, name: str, fn: Callable[[], Awaitable[T]]) -> Awaitable[T]: ...


class _Failed(Exception):
    """A step failed in a way that is data for the verdict (build error, failed tests)."""

    def __init__(self, detail: FailureDetail, tests: TestSummary | None = None) -> None:
        super().__init__(detail.message)
        self.detail, self.tests = detail, tests


def _detail(exc: StepFailed) -> FailureDetail:
    return FailureDetail(step=exc.step, message=exc.message, exit_code=exc.returncode,
                         command=[redact(str(c)) for c in exc.cmd],
                         stdout_tail=_tail(exc.stdout), stderr_tail=_tail(exc.stderr))


class DaggerEngine:
    """Runs platform jobs on the engine this process is connected to (see `session()`)."""

    name = ENGINE

    def __init__(
        self,
        runner: str = DEFAULT_RUNNER,
        host: str = "",
        *,
        credentials: Credentials | None = None,
        registry: RegistryClient | None = None,
        environ: Mapping[str, str] | None = None,
        connect_timeout: float = ds.DEFAULT_CONNECT_TIMEOUT,
        smoke: SmokeConfig | None = None,
    ) -> None:
        self.runner, self.host = runner, host
        self.credentials, self.registry = credentials, registry
        self.environ, self.smoke = environ, smoke
        self.connect_timeout = connect_timeout
        self._lock: anyio.Lock | None = None
        if credentials:
            register(credentials.password)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[DaggerEngine]:
        """Connect once for many jobs; `run_job` inside it (and tasks it starts) reuse the
        connection. Outside it each `run_job` connects by itself, one at a time, because the
        SDK's connection is process-wide."""
        if _IN_SESSION.get():
            yield self
            return
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock, ds.connect(self.environ, host=self.host,
                                          connect_timeout=self.connect_timeout):
            token = _IN_SESSION.set(True)
            try:
                yield self
            finally:
                _IN_SESSION.reset(token)

    async def run_job(self, spec: JobSpec) -> PlatformResult:
        """Test, build and push one platform; failures of the job are data, not exceptions."""
        async with self.session():
            result, _ = await self._job(spec)
        return result

    async def run_jobs_one_engine(
        self, specs: Sequence[JobSpec], *, index_tag: str | None = None,
    ) -> tuple[list[PlatformResult], str | None]:
        """All platforms on this one engine, plus the multi-platform image in ONE publish call
        (`platform_variants`), under a temporary tag, when every platform passed."""
        async with self.session():
            slots: list[tuple[PlatformResult, dagger.Container | None] | None] = [None] * len(specs)

            async def one(i: int, spec: JobSpec) -> None:
                slots[i] = await self._job(spec)

            async with anyio.create_task_group() as tg:
                for i, spec in enumerate(specs):
                    tg.start_soon(one, i, spec)
            done = [d for d in slots if d is not None]
            results = [r for r, _ in done]
            built = [c for _, c in done if c is not None]
            if not specs or len(built) != len(specs) or not all(r.ok for r in results):
                return results, None
            tag = index_tag or temp_tag(specs[0], "index")
            ref = await publish_variants(f"{specs[0].image}:{tag}", built)
            await self._drop_temp_tag(specs[0].image, tag)
            return results, ref

    async def smoke_passed(self, specs: Sequence[JobSpec], results: Sequence[PlatformResult]
                           ) -> list[PlatformResult]:
        """Each passed platform's smoke test, by its digest, on this engine (the one that
        built it), carried in its result. One at a time and after every job of the session,
        as on Docker, so the latencies are not skewed by builds or by each other."""
        from ci.adapters.engines.dagger_smoke import smoke_service

        config = self.smoke
        if config is None:
            return list(results)
        out: list[PlatformResult] = []
        async with self.session():
            for spec, result in zip(specs, results, strict=True):
                reference = result.reference
                if result.ok and reference is not None:
                    smoke = await smoke_service(
                        platform=result.platform, placement=result.placement,
                        reference=reference, config=config,
                        prepare=functools.partial(self._with_auth, spec=spec))
                    result = result.model_copy(update={"smoke": smoke})
                out.append(result)
        return out

    # ------------------------------------------------------------------ steps

    async def _job(self, spec: JobSpec) -> tuple[PlatformResult, dagger.Container | None]:
        import dagger
        from dagger import dag

        out = Path(spec.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        durations: dict[str, float] = {}
        platform = dagger.Platform(spec.platform)
        source = dag.host().directory(spec.context, exclude=SOURCE_EXCLUDE)

        async def step(name: str, fn: Callable[[], Awaitable[T]]) -> T:
            started = time.monotonic()
            try:
                return await fn()
            except dagger.QueryError as exc:  # ExecError included: exit code, stdout, stderr
                raise _Failed(_detail(ds.step_failed(exc, name, spec.platform))) from None
            except (dagger.TransportError, dagger.ClientConnectionError) as exc:
                raise ds.engine_lost(exc, self.host) from None
            finally:
                durations[name] = round(time.monotonic() - started, 3)

        tests: TestSummary | None = None
        digest: str | None = None
        failure: FailureDetail | None = None
        image: dagger.Container | None = None
        try:
            dockerfile = _dockerfile(spec)
            ca = self._ca_secret(spec)
            if spec.test_target:
                built = await step("build_test", source.docker_build(
                    platform=platform, dockerfile=dockerfile, target=spec.test_target,
                    build_args=self._build_args(spec), secrets=[ca] if ca else None).sync)
            else:
                built = dag.container(platform=platform).from_(self._base(spec)) \
                    .with_mounted_directory(SRC, source).with_workdir(SRC)
            tests = await self._test(spec, built, out, step)
            release = source.docker_build(
                platform=platform, dockerfile=dockerfile, target=spec.build_target or "",
                build_args=self._build_args(spec), secrets=[ca] if ca else None)
            for key, value in sorted(spec.labels.items()):
                release = release.with_label(key, value)
            release = self._with_auth(await step("build_release", release.sync), spec)
            if spec.model_check:  # the model must load with the image's own libraries
                check = release.with_exec(list(spec.model_check))
                await step("model_check", check.sync)
            digest = await step("push", lambda: self._push(spec, release))
            image = release
        except StepFailed as exc:
            failure = _detail(exc)
        except _Failed as exc:
            failure, tests = exc.detail, exc.tests or tests
        emulated = spec.placement.kind == "emulated"
        result = PlatformResult(
            project=spec.project, image=spec.image, platform=spec.platform,
            runner=spec.placement.runner or self.runner, engine=ENGINE,
            placement=spec.placement.kind, placement_reason=spec.placement.reason,
            status="failed" if failure else "passed", digest=None if failure else digest,
            tests=tests, durations=durations,
            emulated_seconds=round(sum(durations.get(s, 0.0) for s in EMULATED_STEPS), 3)
            if emulated else 0.0,
            failure=failure, source=spec.source, run_id=spec.run_id,
        )
        return result, None if failure else image

    async def _test(self, spec: JobSpec, ctr: dagger.Container, out: Path, step: _Step
                    ) -> TestSummary:
        """Run the test command (any exit code is data), keep its log and JUnit file."""
        import dagger
        from dagger import dag

        slug = platforms.parse(spec.platform).slug
        ctr = ctr.with_mounted_cache(PIP_CACHE, dag.cache_volume(f"maci-pip-{slug}")) \
            .with_env_variable("PIP_CACHE_DIR", PIP_CACHE)
        if spec.ca_bundle:
            ctr = ctr.with_mounted_file(CA_PATH, dag.host().file(spec.ca_bundle))
            for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
                ctr = ctr.with_env_variable(var, CA_PATH)
        for key, value in sorted(spec.test_env.items()):
            ctr = ctr.with_env_variable(key, value)
        ran_ctr = ctr.with_exec(list(spec.test_command), expect=dagger.ReturnType.ANY)
        started = time.monotonic()

        async def run() -> tuple[dagger.Container, int, str, str]:
            with anyio.fail_after(spec.test_timeout):
                ran = await ran_ctr.sync()
                return ran, await ran.exit_code(), await ran.stdout(), await ran.stderr()

        try:
            ran, code, stdout, stderr = await step("test", run)
        except TimeoutError:
            raise _Failed(FailureDetail(
                step="test", message=f"tests timed out after {spec.test_timeout:g} s on "
                f"{spec.platform}")) from None
        seconds = time.monotonic() - started
        log_path = out / "test.log"
        log_path.write_text(redact(stdout + stderr))
        junit_file = out / "junit.xml"
        junit_file.unlink(missing_ok=True)
        with contextlib.suppress(dagger.QueryError):
            junit_file.write_text(await ran.file(spec.junit_path).contents())
        summary = junit.summarize(junit_file if junit_file.exists() else None, code,
                                  seconds=seconds, log_path=str(log_path))
        if not summary.ok:
            counts = f"{summary.failed} failed, {summary.errors} errors of {summary.total}"
            raise _Failed(FailureDetail(
                step="test", message=f"tests failed on {spec.platform} ({counts})",
                exit_code=code, stdout_tail=_tail(redact(stdout)),
                stderr_tail=_tail(redact(stderr))), summary)
        return summary

    async def _push(self, spec: JobSpec, image: dagger.Container) -> str:
        tag = temp_tag(spec)
        ref = await image.publish(f"{spec.image}:{tag}")
        digest = digest_from_ref(ref)
        await self._drop_temp_tag(spec.image, tag)
        return digest

    # ------------------------------------------------------------------ inputs

    @staticmethod
    def _base(spec: JobSpec) -> str:
        base = spec.build_args.get("BASE")
        if not base:
            raise StepFailed("no test target and no base image: set test.target or "
                             "build.base_image (build arg BASE)", step="test")
        return base

    @staticmethod
    def _build_args(spec: JobSpec) -> list[dagger.BuildArg]:
        import dagger

        return [dagger.BuildArg(name=k, value=v) for k, v in sorted(spec.build_args.items())]

    @staticmethod
    def _ca_secret(spec: JobSpec) -> dagger.Secret | None:
        """The extra CA bundle as the BuildKit secret `ca` (what `--secret id=ca` gives)."""
        from dagger import dag

        if not spec.ca_bundle:
            return None
        text = Path(spec.ca_bundle).read_text()
        if len(text.encode()) > SECRET_LIMIT:
            raise StepFailed(f"build.ca_bundle {spec.ca_bundle} is over {SECRET_LIMIT} bytes, "
                             "Dagger's secret limit; install the CA in the engine instead",
                             step="build_test")
        return dag.set_secret("ca", text)

    def _with_auth(self, image: dagger.Container, spec: JobSpec) -> dagger.Container:
        """Registry credentials only as a Dagger secret (never env or args)."""
        from dagger import dag

        if not self.credentials:
            return image
        name = f"maci-registry-{sanitize(ImageRef.parse(spec.image).registry)}"
        secret = dag.set_secret(name, self.credentials.password)
        return image.with_registry_auth(spec.image, self.credentials.username, secret)

    async def _drop_temp_tag(self, image: str, tag: str) -> None:
        """Delete the temporary tag (the digest stays); a failure only leaves a maci-tmp tag."""
        registry = self.registry
        if registry is None:
            return
        with contextlib.suppress(RegistryError):
            await anyio.to_thread.run_sync(
                registry.remove_tag, ImageRef.parse(image).repository, tag)


async def publish_variants(address: str, variants: Sequence[dagger.Container]) -> str:
    """The multi-platform image in one call, when every variant lives on this engine:
    `first.publish(address, platform_variants=rest)` → `address@sha256:<index digest>`."""
    if not variants:
        raise EngineError("publish_variants needs at least one platform variant")
    first, *rest = variants
    return await first.publish(address, platform_variants=list(rest))
