"""The Dagger functions: `dagger call plan|build|release --source=.`.

Why a module next to the CLI: under `dagger call` the release is a Dagger-native call with
typed arguments (a Directory, a Secret) instead of a process that must find a session; and
`dagger run python -m pipelines.release` keeps working, because both end in the same
library functions (see library.py). Each function exports its `source` Directory into the
runtime container, runs the library there in a worker thread, and returns the CLI's JSON;
a refusal (a plan that cannot place a platform, a failed job, a release that did not pass)
raises, so `dagger call` exits non-zero with that JSON in its error.
"""

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import anyio
import dagger
from dagger import DefaultPath, Doc, Ignore, function, object_type
from dagger.mod._exceptions import FunctionError

from multiarch_ci_dagger import library

SOURCE_IGNORE = [".venv", "**/__pycache__", "**/.pytest_cache", "**/node_modules"]

Source = Annotated[
    dagger.Directory,
    DefaultPath("."),
    Ignore(SOURCE_IGNORE),
    Doc("The project: its ci.toml, Dockerfile and code, .git included (the source's sha, "
        "branch and tag come from it). Default: the directory holding dagger.json"),
]
Config = Annotated[str, Doc("Config file inside the source (default: ci.toml, else "
                            "pyproject.toml's [tool.ci])")]
Platforms = Annotated[list[str] | None, Doc("Platform(s) instead of the config's "
                                            "(repeat or comma-separate)")]
Env = Annotated[list[str] | None, Doc("NAME=VALUE variables for the library (a module sees "
                                      "none of the caller's): CI variables, "
                                      "MLFLOW_TRACKING_URI, MACI_RUN_ID...")]
Password = Annotated[dagger.Secret | None, Doc(
    "Registry password, given to the library as the variable publish.auth.password_env names")]


class Refused(FunctionError):
    """A gate or a job said no: an expected outcome, not a crash, so no Python traceback
    (the SDK logs one for any other exception); the message carries the whole JSON."""


async def _run(source: dagger.Directory, password: dagger.Secret | None, config: str,
               env: list[str] | None, call: Callable[[Path, dict[str, str]], library.Answer]
               ) -> str:
    """Export, run `call` off the event loop (the library starts its own), answer or refuse."""
    from ci.core.errors import CIError
    from ci.core.redact import register

    async with _checkout(source) as root:
        try:
            environ = library.environ(env)
            if password is not None:
                secret = await password.plaintext()
                register(secret)
                variable = library.password_variable(root, config, environ)
                environ[variable] = secret
            answer = await anyio.to_thread.run_sync(partial(call, root, environ))
        except CIError as exc:  # config, usage, unreachable engine: the CLI's one-line error
            raise Refused("\n".join(exc.lines()), extra={"error": type(exc).__name__}) from None
    if answer.refused:
        raise Refused(f"{answer.refused}\n{answer.text}", extra={"result": answer.text})
    return answer.text


@contextlib.asynccontextmanager
async def _checkout(source: dagger.Directory) -> AsyncIterator[Path]:
    """The source as a real folder in the runtime container, where the library reads the
    config and git, and where its Dagger children load the build context back from."""
    with tempfile.TemporaryDirectory(prefix="maci-source-") as tmp:
        await source.export(tmp)
        yield Path(tmp)


@object_type
class MultiarchCi:
    """Gated multi-architecture releases: test and build every platform (native or qemu),
    gate on the model's metrics, publish and deploy only when everything passed."""

    @function
    async def plan(self, source: Source, config: Config = "", platform: Platforms = None,
                   matrix: Annotated[bool, Doc("Plan a multi-job pipeline: refuse stores only "
                                               "one job could see")] = False,
                   env: Env = None) -> str:
        """Where each platform job runs on this engine (`ci plan --engine dagger --json`);
        fails when a platform cannot be placed."""
        return await _run(source, None, config, env, lambda root, environ: library.plan(
            root, config=config, platform=platform, matrix=matrix, env=environ))

    @function
    async def build(self, source: Source,
                    platform: Annotated[str, Doc("The one platform to test, build and push")],
                    config: Config = "",
                    model_version: Annotated[str, Doc("Registered model version to embed "
                                                      "(required with a [model])")] = "",
                    run_id: Annotated[str, Doc("Run id shared by the matrix legs (default: "
                                               "MACI_RUN_ID or the CI run id)")] = "",
                    env: Env = None, registry_password: Password = None) -> str:
        """ONE platform job (`ci job --platform P`): tests, release build, push by digest, no
        tag. Returns the result JSON `ci merge` reads; fails when the job failed."""
        return await _run(source, registry_password, config, env,
                          lambda root, environ: library.job(
                              root, platform, config=config, model_version=model_version,
                              run_id=run_id, env=environ))

    @function
    async def release(self, source: Source,
                      pipeline: Annotated[str, Doc("The project's pipelines/NAME.py, else a "
                                                   "built-in (release, image_only)")] = "release",
                      config: Config = "", platform: Platforms = None,
                      dry_run: Annotated[bool, Doc("Run every gate; publish, deploy and "
                                                   "promote nothing")] = False,
                      force: Annotated[bool, Doc("Rerun every stage even when the last "
                                                 "release came from the same inputs")] = False,
                      env: Env = None, registry_password: Password = None) -> str:
        """The whole release (`ci run PIPELINE --engine dagger --json`): plan, model, platform
        jobs, verdict, publish, deploy, promote. Returns the outcome JSON; fails, with
        nothing moved, when any gate or step did not pass."""
        return await _run(source, registry_password, config, env,
                          lambda root, environ: library.release(
                              root, pipeline=pipeline, config=config, platform=platform,
                              dry_run=dry_run, force=force, env=environ))
