"""The Docker engine: one platform job on one Docker daemon through buildx (adapter).

Every docker/buildx call carries DOCKER_HOST = the placed runner, so the job's images
are built, tested and pushed THERE. Steps: build the test target for the platform
(`--load`), run the test command in a container of that platform and `docker cp` the JUnit
file out (bind mounts do not reach remote daemons), build the release target, push it
by digest.

Push by digest: on a daemon with the containerd image store the release image is built
into an OCI layout, reproducibly, and pushed by digest with skopeo (`oci_route`). On the
classic store (Engine 20.10) buildx's `docker` driver refuses `push-by-digest=true`, so
the release image is pushed under a unique temporary tag `maci-tmp-<run>-<platform>`, its
digest is read from the registry, and the temporary tag is deleted through the registry API
(`RegistryClient.remove_tag`). No release tag is ever touched here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import anyio

from ci.adapters import proc, retry
from ci.adapters.engines import docker_containers as owned
from ci.adapters.engines import oci_attest, oci_route, push_auth
from ci.adapters.registry import ImageRef, RegistryClient
from ci.core import junit, platforms
from ci.core.errors import CIError, EngineError, EngineUnreachable, RegistryError, StepFailed
from ci.core.redact import redact
from ci.core.results import FailureDetail, JobSpec, PlatformResult, TestSummary
from ci.core.tags import sanitize

log = logging.getLogger(__name__)
ReleaseHook = Callable[[JobSpec], Awaitable[JobSpec]]
T = TypeVar("T")
PING_TIMEOUT = 10.0
BUILD_TIMEOUT = 3600.0
PUSH_TIMEOUT = 1800.0
EMULATED_STEPS = ("build_test", "test", "build_release", "model_check")
# what the docker CLI says when the DAEMON does not answer (not a registry it talks to)
_UNREACHABLE = ("cannot connect to the docker daemon", "error during connect",
                "is the docker daemon running")


# the docker CLI's ssh connection died during a call (its wording differs by where it broke)
_LOST = ("dial-stdio has exited", "or later is installed on the remote host")


class _Lost(StepFailed):
    """The runner went away during a step (its message names the runner and host)."""


def _unreachable(text: str) -> bool:
    low = text.lower()
    return any(s in low for s in _UNREACHABLE)


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


class _TimedOut(EngineError):
    """A docker call ran past its timeout (the CLI was killed)."""


class _Failed(Exception):
    """A step failed in a way that is data for the verdict (build error, failed tests)."""

    def __init__(self, detail: FailureDetail, tests: TestSummary | None = None) -> None:
        super().__init__(detail.message)
        self.detail = detail
        self.tests = tests


def _shown(cmd: Sequence[str]) -> list[str]:
    """A command as the console and the verdict show it (secrets masked)."""
    return [redact(str(part)) for part in cmd]


def _detail(exc: CIError, durations: Mapping[str, float]) -> FailureDetail:
    """A FailureDetail for an engine/registry error; the step is the one that was running."""
    step = list(durations)[-1] if durations else "engine"
    if isinstance(exc, StepFailed):
        return FailureDetail(step=exc.step or step, message=exc.message, exit_code=exc.returncode,
                             command=_shown(exc.cmd), stdout_tail=_tail(exc.stdout),
                             stderr_tail=_tail(exc.stderr))
    return FailureDetail(step=step, message=exc.message)


class DockerEngine:
    """Runs platform jobs on the Docker daemon at `host` ("" = the CLI's default)."""

    name = "docker"

    def __init__(
        self,
        host: str = "",
        runner: str = "local",
        *,
        registry: RegistryClient | None = None,
        push: bool = True,
        environ: Mapping[str, str] | None = None,
        before_release: ReleaseHook | None = None,
    ) -> None:
        self.host = host
        self.runner = runner
        self.registry = registry
        self.push = push
        # awaited before the release build: lets tests run while the model stage finishes,
        # and returns the spec the release build uses (e.g. with MODEL_* build args)
        self.before_release = before_release
        env = dict(os.environ if environ is None else environ)
        if host:
            env["DOCKER_HOST"] = host
            env.pop("DOCKER_CONTEXT", None)
        env["BUILDX_NO_DEFAULT_ATTESTATIONS"] = "1"
        self.env = env
        self.probe: oci_route.Probe | None = None  # set by ping()
        self.pushed_bytes: int | None = None  # set by the digest route's push

    # ------------------------------------------------------------ docker calls

    def docker(self, args: list[str], *, step: str, timeout: float = 120.0,
               check: bool = True, group: bool = False) -> proc.Result:
        """`docker ARGS` on this runner; a daemon that does not answer → EngineUnreachable.
        `group`: in a process group of its own, so a timeout also ends the buildx plugin."""
        try:
            res = proc.run(["docker", *args], env=self.env, timeout=timeout, check=False,
                           step=step, group=group)
        except StepFailed as exc:  # only raised for a timeout when check=False
            raise _TimedOut(f"{step} on runner {self.runner!r}: {exc.message}") from None
        if not res.ok and _unreachable(res.stderr):
            raise EngineUnreachable(
                f"runner {self.runner!r} ({self.host or 'default docker host'}) does not answer: "
                f"{_tail(res.stderr, 1)}"
            )
        if not res.ok and any(s in res.stderr for s in _LOST):  # an ssh:// runner cut off
            raise _Lost(
                f"{step}: lost runner {self.runner!r} ({self.host}) mid-job: "
                f"{_tail(res.stderr, 1)}", step=step, cmd=res.cmd, returncode=res.returncode,
                stdout=res.stdout, stderr=res.stderr)
        if check and not res.ok:
            raise StepFailed(
                f"{step} failed on {self.runner!r} (exit {res.returncode}): {_tail(res.stderr, 1)}",
                step=step, cmd=res.cmd, returncode=res.returncode, stdout=res.stdout,
                stderr=res.stderr,
            )
        return res

    def ping(self) -> dict[str, str]:
        """The daemon's version, platform and image store (one `docker info`: the push route
        comes with the liveness check); raises EngineUnreachable when it is down."""
        res = self.docker(["info", "--format", oci_route.INFO_FORMAT], step="docker info",
                          timeout=PING_TIMEOUT, check=False)
        probe = oci_route.parse_info(res.stdout) if res.ok else None
        if probe is None:
            raise EngineUnreachable(
                f"runner {self.runner!r} ({self.host or 'default docker host'}) does not answer: "
                f"{_tail(res.stderr or res.stdout, 1) or 'no server version'}"
            )
        self.probe = probe
        return {"version": probe.version, "platform": probe.platform, "route": probe.route}

    @property
    def by_digest(self) -> bool:
        """The containerd-store route: reproducible build into an OCI layout, skopeo push."""
        return self.probe is not None and self.probe.route == oci_route.ROUTE_DIGEST

    def build(self, spec: JobSpec, *, target: str | None, step: str, labels: bool,
              iidfile: Path, tag: str, log_path: Path, output: Sequence[str] = ()) -> str:
        """`docker buildx build --load` for the spec's platform; returns the image id.
        `output` replaces `--load`/`--tag` (the OCI layout of the digest route)."""
        meta = iidfile.with_suffix(".meta.json")
        load = ["--load", "--tag", tag, "--metadata-file", str(meta)] if not output else list(output)
        args = ["buildx", "build", "--progress=plain", "--platform", spec.platform,
                "--file", spec.dockerfile, *load, "--iidfile", str(iidfile)]
        if target:
            args += ["--target", target]
        for key, value in sorted(spec.build_args.items()):
            args += ["--build-arg", f"{key}={value}"]
        if labels:
            for key, value in sorted(spec.labels.items()):
                args += ["--label", f"{key}={value}"]
        if spec.ca_bundle:
            args += ["--secret", f"id=ca,src={spec.ca_bundle}"]
        iidfile.unlink(missing_ok=True)
        try:
            res = self.docker([*args, spec.context], step=step, timeout=BUILD_TIMEOUT,
                              group=True)
        except StepFailed as exc:
            log_path.write_text(exc.stdout + exc.stderr)
            why = exc.message if isinstance(exc, _Lost) else \
                f"{step} failed for {spec.platform}: {_tail(exc.stderr, 1)}"
            raise _Failed(FailureDetail(
                step=step, message=why,
                command=_shown(exc.cmd), exit_code=exc.returncode, stdout_tail=_tail(exc.stdout),
                stderr_tail=_tail(exc.stderr),
            )) from None
        log_path.write_text(res.stdout + res.stderr)
        if not output and self.probe is not None and self.probe.containerd_store:
            return oci_route.built_digest(meta)  # the containerd store names images by manifest
        return iidfile.read_text().strip()

    @staticmethod
    def container_name(spec: JobSpec) -> str:
        return (f"maci-{sanitize(spec.run_id)[:40]}-{platforms.parse(spec.platform).slug}-"
                f"{secrets.token_hex(3)}")

    def remove_container(self, name: str) -> None:
        """Force-remove (SIGKILL) a test container: works even when its PID 1 ignores signals."""
        self.docker(["rm", "--force", "--volumes", name], step="remove container", check=False)

    def sweep_containers(self) -> list[str]:
        """Remove the containers a dead `ci` on this host left on this daemon (once per
        daemon): a SIGKILL runs no cleanup, the owner labels still name the dead process."""
        return owned.sweep(self.docker, self.host or self.env.get("DOCKER_HOST", ""))

    def create_test_container(self, spec: JobSpec, image_id: str, name: str) -> None:
        """Create (not start) the test container. The caller shields this from Ctrl-C, so
        once a job can be cancelled its container exists and removing it by name is certain:
        a `docker run` cancelled mid-create could make the container after our cleanup."""
        args = ["create", "--platform", spec.platform, "--name", name,
                *owned.label_args(spec.run_id)]
        for key, value in sorted(spec.test_env.items()):
            args += ["--env", f"{key}={value}"]
        # group: a Ctrl-C sent to the terminal's process group must not kill this CLI after
        # its request reached the daemon (the container would appear after our cleanup)
        self.docker([*args, image_id, *spec.test_command], step="test", check=True, group=True)

    def run_tests(self, spec: JobSpec, out: Path, name: str) -> TestSummary:
        """Start the created test container attached, collect its output and JUnit file.

        On Ctrl-C the caller force-removes the container (SIGKILL), which also ends this
        attached client — even when the container's PID 1 ignores signals (qemu).
        """
        started = time.monotonic()
        log_path = out / "test.log"
        junit_file = out / "junit.xml"
        junit_file.unlink(missing_ok=True)
        try:
            res = self.docker(["start", "--attach", name], step="test",
                              timeout=spec.test_timeout, check=False)
            log_path.write_text(res.stdout + res.stderr)
            seconds = time.monotonic() - started
            self.docker(["cp", f"{name}:{spec.junit_path}", str(junit_file)], step="collect junit",
                        check=False)
        except _TimedOut as exc:
            raise _Failed(FailureDetail(
                step="test", message=f"tests on {spec.platform} timed out after "
                f"{spec.test_timeout:g} s (test.timeout_seconds)", stderr_tail=exc.message,
            ), TestSummary(errors=1, seconds=round(time.monotonic() - started, 3))) from None
        finally:
            # also stops a container still running after a timeout or Ctrl-C
            self.remove_container(name)
        summary = junit.summarize(junit_file, res.returncode, seconds=seconds,
                                  log_path=str(log_path))
        if not summary.ok:
            counts = f"{summary.failed} failed, {summary.errors} errors of {summary.total}"
            raise _Failed(FailureDetail(
                step="test", message=f"tests failed on {spec.platform} ({counts})",
                command=_shown(spec.test_command), exit_code=res.returncode,
                stdout_tail=_tail(res.stdout),
                stderr_tail=_tail(res.stderr),
            ), summary)
        return summary

    def check_model(self, spec: JobSpec, image_id: str, out: Path, name: str) -> None:
        """`[model] check_command` in the release image (the one holding the model): a model
        its own libraries cannot load (numpy 2 pickle, numpy 1 image) fails before the push."""
        try:
            res = self.docker(["run", "--sig-proxy=false", "--platform", spec.platform,
                               "--name", name, *owned.label_args(spec.run_id), image_id,
                               *spec.model_check],
                              step="model check", timeout=spec.test_timeout, check=False)
        except _TimedOut as exc:
            raise _Failed(FailureDetail(
                step="model check", message=f"model check timed out on {spec.platform} after "
                f"{spec.test_timeout:g} s (test.timeout_seconds)", stderr_tail=exc.message,
            )) from None
        finally:
            self.remove_container(name)
        (out / "model-check.log").write_text(res.stdout + res.stderr)
        if not res.ok:
            raise _Failed(FailureDetail(
                step="model check", message=f"model check failed on {spec.platform}: "
                f"{_tail(res.stderr or res.stdout, 1)}", command=_shown(spec.model_check),
                exit_code=res.returncode, stdout_tail=_tail(res.stdout),
                stderr_tail=_tail(res.stderr)))

    def _push_auth(self, registry: str) -> contextlib.AbstractContextManager[None]:
        return push_auth.docker_config(self.env, registry,
                                       self.registry.credentials if self.registry else None)

    def push_by_digest(self, spec: JobSpec, image_id: str, out: Path) -> str:
        """Push under a unique temporary tag, read the digest, delete the temporary tag.
        A transient push failure (5xx, 429, reset) is retried, one log line per retry."""
        if self.registry is None:
            raise EngineError("push needs a registry client")
        ref = ImageRef.parse(spec.image)
        slug = platforms.parse(spec.platform).slug
        tmp = f"maci-tmp-{sanitize(spec.run_id)[:60]}-{slug}-{secrets.token_hex(3)}"
        tagged = f"{spec.image}:{tmp}"
        self.docker(["tag", image_id, tagged], step="tag")
        try:
            with self._push_auth(ref.registry):
                push = partial(self.docker, ["push", tagged], step="push", timeout=PUSH_TIMEOUT)
                retry.call(retry.logged(push, out / "push.log"), what=f"push {spec.platform}",
                           policy=retry.Policy.from_env(self.env), give_up=EngineError)
            digest = self.registry.resolve(ref.repository, tmp)
            if not digest:
                raise RegistryError(f"pushed {tagged} but the registry does not know the tag")
            try:
                self.registry.remove_tag(ref.repository, tmp)
            except RegistryError as exc:
                log.warning("temporary tag %s left in the registry: %s", tagged, exc.message)
        finally:
            self.docker(["rmi", "--no-prune", tagged], step="untag", check=False)
        return digest

    # ------------------------------------------------------------------- the job

    async def run_job(self, spec: JobSpec) -> PlatformResult:
        """Test, build and push one platform; failures of the job are data, not exceptions."""
        out = Path(spec.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        durations: dict[str, float] = {}

        async def step(name: str, fn: Callable[[], T]) -> T:
            started = time.monotonic()
            try:
                return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
            finally:
                durations[name] = round(time.monotonic() - started, 3)

        await step("ping", self.ping)
        del durations["ping"]
        await anyio.to_thread.run_sync(self.sweep_containers, abandon_on_cancel=True)
        slug = platforms.parse(spec.platform).slug
        project = sanitize(spec.project).lower() or "app"
        tests: TestSummary | None = None
        digest: str | None = None
        attestation: str | None = None
        failure: FailureDetail | None = None
        status: Literal["passed", "failed", "error"] = "passed"
        try:
            release_id = ""
            if not spec.test_target and self.before_release:
                spec = await self.before_release(spec)
            if spec.test_target:
                test_id = await step("build_test", partial(
                    self.build, spec, target=spec.test_target, step="build_test", labels=False,
                    iidfile=out / "test.iid", tag=f"maci-test/{project}:{slug}",
                    log_path=out / "build-test.log"))
            else:
                release_id = await step("build_release", partial(self._build_release, spec, out))
                test_id = release_id
            name = self.container_name(spec)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.create_test_container, spec, test_id, name)
            try:
                tests = await step("test", partial(self.run_tests, spec, out, name))
            except anyio.get_cancelled_exc_class():
                # Ctrl-C / cancelled: kill the container so the worker thread can finish
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.remove_container, name)
                raise
            if not release_id:
                if self.before_release:
                    spec = await self.before_release(spec)
                release_id = await step("build_release", partial(self._build_release, spec, out))
            if self.by_digest:  # pushed first (untagged), then checked on that very digest
                digest = await step("push", partial(self.push_layout, spec, release_id, out)) \
                    if self.push else None
                if digest:
                    attestation = await step("attest", partial(self.attest, spec, digest))
                if spec.model_check:
                    ref = f"{spec.image}@{digest}" if digest else await step(
                        "load_release", partial(self._build_release, spec, out, load=True))
                    with self._push_auth(ImageRef.parse(spec.image).registry):
                        await self._step_in_container(step, "model_check", spec, partial(
                            self.check_model, spec, ref, out))
            else:
                if spec.model_check:
                    await self._step_in_container(step, "model_check", spec, partial(
                        self.check_model, spec, release_id, out))
                if self.push:
                    digest = await step("push", partial(self.push_by_digest, spec, release_id, out))
        except _Failed as exc:
            status, failure, tests = "failed", exc.detail, exc.tests or tests
        except EngineUnreachable:
            raise  # the caller may re-place the job (qemu fallback)
        except CIError as exc:  # push refused, registry down, docker timed out: keep the rest
            status, failure = "error", _detail(exc, durations)
        emulated = spec.placement.kind == "emulated"
        return PlatformResult(
            project=spec.project, image=spec.image, platform=spec.platform,
            runner=spec.placement.runner or self.runner, engine=self.name,
            placement=spec.placement.kind, placement_reason=spec.placement.reason,
            status=status, digest=digest, tests=tests,
            attestation=attestation if status == "passed" else None,
            pushed_bytes=self.pushed_bytes,
            durations=durations,
            emulated_seconds=round(sum(durations.get(s, 0.0) for s in EMULATED_STEPS), 3)
            if emulated else 0.0,
            failure=failure, source=spec.source, run_id=spec.run_id,
        )

    async def _step_in_container(self, step: Callable[[str, Callable[[], None]], Awaitable[None]],
                                 label: str, spec: JobSpec,
                                 fn: Callable[[str], None]) -> None:
        """A step running a named container; cancelled (Ctrl-C), the container is killed so
        the worker thread can finish."""
        name = self.container_name(spec)
        try:
            await step(label, partial(fn, name))
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.remove_container, name)
            raise

    def _build_release(self, spec: JobSpec, out: Path, *, load: bool = False) -> str:
        """The release image: into the OCI layout on the digest route (returns the manifest
        digest), else `--load`ed (returns the image id)."""
        tag = f"{spec.image}:maci-{platforms.parse(spec.platform).slug}"
        meta = out / "release.oci.json"
        output = [] if load or not self.by_digest else oci_route.build_args(
            self.layout(spec), tag, meta, spec.source.commit_time, spec.compression,
            spec.compression_level, rewrite=spec.reproducible)
        meta.unlink(missing_ok=True)
        image_id = self.build(spec, target=spec.build_target, step="build_release", labels=True,
                              iidfile=out / "release.iid", tag=tag,
                              log_path=out / "build-release.log", output=output)
        return oci_route.built_digest(meta) if output else image_id

    def attest(self, spec: JobSpec, digest: str) -> str:
        """Push the image's SBOM + provenance attestation manifest by digest."""
        if self.registry is None:
            raise EngineError("attestations need a registry client")
        base = spec.build_args.get("BASE", "")
        res = self.docker(["image", "inspect", "--format", "{{.Id}}", base], step="attest",
                          check=False) if base else None
        base_digest = res.stdout.strip() if res is not None and res.ok else ""
        layout = self.layout(spec)
        items = oci_attest.statements(spec, layout, digest, base_digest, layout.parent / "scans")
        return oci_attest.push(self.registry, spec, items)

    @staticmethod
    def layout(spec: JobSpec) -> Path:
        """The persistent OCI layout of this platform's release image (under the state dir)."""
        return Path(spec.oci_layout or Path(spec.output_dir) / "oci")

    def push_layout(self, spec: JobSpec, digest: str, out: Path) -> str:
        """`skopeo copy` the layout's image to the registry BY DIGEST (no tag), retried on
        transient failures like `docker push`; then prune blobs older builds left."""
        if self.registry is None:
            raise EngineError("push needs a registry client")
        ref = ImageRef.parse(spec.image)
        layout = self.layout(spec)
        name = f"{spec.image}:maci-{platforms.parse(spec.platform).slug}"
        missing = {d: n for d, n in oci_route.blobs_of(layout, digest).items()
                   if not self.registry.has_blob(ref.repository, d)}
        self.pushed_bytes = sum(missing.values())
        log.info("push %s: %d of its blobs (%.1f MB) are new to %s", spec.platform, len(missing),
                 self.pushed_bytes / 1e6, ref.registry)
        with self._push_auth(ref.registry):
            config = self.env.get("DOCKER_CONFIG")
            cmd = oci_route.push_command(
                layout, name, spec.image, digest, insecure=self.registry.base_url.startswith(
                    "http:"), authfile=str(Path(config) / "config.json") if config else None)
            push = partial(oci_route.run_push, cmd, self.env, PUSH_TIMEOUT)
            retry.call(retry.logged(push, out / "push.log"), what=f"push {spec.platform}",
                       policy=retry.Policy.from_env(self.env), give_up=EngineError)
        oci_route.prune(layout)
        return digest


def engine_factory(
    registry: RegistryClient | None, *, push: bool = True,
    environ: Mapping[str, str] | None = None,
    before_release: ReleaseHook | None = None,
) -> Callable[[JobSpec], DockerEngine]:
    """For `ci.fanout.run_jobs`: one DockerEngine per spec, pointed at its placed runner."""

    def make(spec: JobSpec) -> DockerEngine:
        return DockerEngine(spec.placement.host, spec.placement.runner or "local",
                            registry=registry, push=push, environ=environ,
                            before_release=before_release)

    return make
