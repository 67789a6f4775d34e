"""The fake engine's brain: validate, record and execute GraphQL documents against the schema.

Objects are immutable call chains (`Obj`); their IDs are `Type:hash` of the chain, so the
same pipeline gets the same IDs and `node(id:)` can reload what an earlier query built.
Evaluation is lazy like the real engine: execs "run" only when a leaf (stdout, sync,
publish, contents...) is asked for, and fail with an EXEC_ERROR when a rule says so.
Services: `Host.tunnel(service).start` starts a stand-in HTTP server on a host port
(tests.dagger_fake.service, answering by the `ServeRule`s), `endpoint` names it, `stop` stops it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql
from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLList,
    GraphQLResolveInfo,
    GraphQLSchema,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
    is_object_type,
)

from tests.dagger_fake.service import ServeRule, StandIn

ENGINE_VERSION = "v0.21.8"
DEFAULT_PLATFORM = "linux/amd64"


def junit_xml(failed: bool) -> str:
    """A small valid JUnit report: 3 tests, one failing when the exec failed."""
    case_fail = (
        '<testcase classname="tests.test_app" name="test_predict" time="0.01">'
        '<failure message="assert 1 == 2">AssertionError</failure></testcase>'
        if failed
        else '<testcase classname="tests.test_app" name="test_predict" time="0.01"/>'
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites>'
        f'<testsuite name="pytest" errors="0" failures="{int(failed)}" skipped="0" tests="3"'
        ' time="0.05">'
        '<testcase classname="tests.test_app" name="test_health" time="0.01"/>'
        '<testcase classname="tests.test_app" name="test_schema" time="0.01"/>'
        f"{case_fail}</testsuite></testsuites>\n"
    )


@dataclass(frozen=True)
class Obj:
    """An engine object: its GraphQL type and the calls that made it."""

    type_name: str
    chain: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        digest = hashlib.sha256(repr(self.chain).encode()).hexdigest()[:24]
        return f"{self.type_name}:{digest}"

    def child(self, type_name: str, name: str, args: dict[str, Any]) -> Obj:
        canon = json.dumps(args, sort_keys=True, default=str)
        return Obj(type_name, (*self.chain, (name, canon)))

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, json.loads(args)) for name, args in self.chain]


@dataclass
class FailRule:
    """Make a matching exec (or Dockerfile build) fail like the real engine would."""

    match: str
    exit_code: int = 1
    stdout: str = ""
    stderr: str = "failed"
    kind: str = "exec"  # exec | build
    platform: str | None = None


@dataclass
class ExecState:
    platform: str = DEFAULT_PLATFORM
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    execs: int = 0


@dataclass
class Recorded:
    token: str
    query: str
    document: graphql.DocumentNode | None
    errors: list[str] = field(default_factory=list)


class ExecErrorSignal(GraphQLError):
    """The error shape dagger-io turns into `dagger.ExecError`."""

    def __init__(self, cmd: list[str], code: int, stdout: str, stderr: str) -> None:
        super().__init__(
            f"process {json.dumps(cmd)} did not complete successfully: exit code: {code}",
            extensions={"_type": "EXEC_ERROR", "cmd": cmd, "exitCode": code,
                        "stdout": stdout, "stderr": stderr},
        )


class FakeEngine:
    """Thread-safe state shared by every session the fake server answers."""

    def __init__(self, schema: GraphQLSchema, root: Path) -> None:
        self.schema = schema
        self.root = root
        self.lock = threading.Lock()
        self.documents: list[Recorded] = []
        self.objects: dict[str, Obj] = {}
        self.rules: list[FailRule] = []
        self.tokens: set[str] = set()
        self.invalid: list[str] = []
        self.published: list[tuple[str, str]] = []  # (session token, returned ref)
        # address fragment → digest to answer from publish (tests pre-push real images there)
        self.publish_digests: dict[str, str] = {}
        # runner host → the `defaultPlatform` its sessions answer ("" = the default engine:
        # the `dagger run` session and CLI sessions without _EXPERIMENTAL_DAGGER_RUNNER_HOST)
        self.default_platforms: dict[str, str] = {}
        self.serve_rules: list[ServeRule] = []  # how tunnelled services answer, by platform
        self.stand_ins: list[StandIn] = []  # every tunnel started, in order
        self.stopped: list[str] = []  # ids of every Service `stop` was asked of
        self._running: dict[str, StandIn] = {}  # tunnel id → its running stand-in

    def close(self) -> None:
        """Shut down stand-ins a test left running (not recorded as stopped)."""
        with self.lock:
            running, self._running = list(self._running.values()), {}
        for stand_in in running:
            stand_in.close()

    # ------------------------------------------------------------ sessions

    def known_token(self, token: str) -> bool:
        """Tokens come from the fixture (dagger-run path) or the fake CLI's session files."""
        if token in self.tokens:
            return True
        if (self.root / "sessions" / f"{token}.json").is_file():
            self.tokens.add(token)
            return True
        return False

    def runner_host(self, token: str) -> str:
        """The runner host a session was opened for, as the fake CLI saw it ("" = default)."""
        path = self.root / "sessions" / f"{token}.json"
        if token in self.tokens and not path.is_file():
            return ""  # the fixture's `dagger run` session
        try:
            return str(json.loads(path.read_text()).get("runner_host", ""))
        except (OSError, ValueError):
            return ""

    def default_platform(self, token: str) -> str:
        """What `defaultPlatform` answers in this session: its runner host's platform."""
        return self.default_platforms.get(self.runner_host(token), DEFAULT_PLATFORM)

    def sessions(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.root / "sessions").glob("*.json")):
            out.append(json.loads(path.read_text()))
        return out

    # ------------------------------------------------------------ requests

    def handle(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        query = str(body.get("query") or "")
        try:
            document = graphql.parse(query)
        except GraphQLError as exc:
            return self._invalid(token, query, None, [exc.message])
        errors = graphql.validate(self.schema, document)
        if errors:
            return self._invalid(token, query, document, [e.message for e in errors])
        with self.lock:
            self.documents.append(Recorded(token, query, document))
        result = graphql.execute_sync(
            self.schema, document, root_value=Obj("Query"),
            variable_values=body.get("variables"), operation_name=body.get("operationName"),
            field_resolver=self._resolve, type_resolver=self._type_of,
            context_value={"token": token},
        )
        response: dict[str, Any] = {"data": result.data}
        if result.errors:
            response["errors"] = [e.formatted for e in result.errors]
        return response

    def _invalid(self, token: str, query: str, document: graphql.DocumentNode | None,
                 errors: list[str]) -> dict[str, Any]:
        with self.lock:
            self.documents.append(Recorded(token, query, document, errors))
            self.invalid.append(f"{'; '.join(errors)}\n--- document:\n{query}")
        return {"data": None, "errors": [{"message": f"fake engine: invalid document: {e}"}
                                         for e in errors]}

    @staticmethod
    def _type_of(value: Any, info: GraphQLResolveInfo, abstract: Any) -> str:
        return value.type_name if isinstance(value, Obj) else "Query"

    # ------------------------------------------------------------ resolvers

    def _resolve(self, parent: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
        name = info.field_name
        if name.startswith("__"):
            return getattr(parent, name, None)
        rtype = get_nullable_type(info.return_type)  # type: ignore[type-var]
        named = get_named_type(info.return_type)
        assert isinstance(parent, Obj)
        if isinstance(rtype, GraphQLList):
            return []
        if name == "node":
            obj = self.objects.get(args["id"])
            if obj is None:
                raise GraphQLError(f"fake engine: unknown id {args['id']!r}")
            return obj
        if is_object_type(named) or is_abstract_type(named):
            if name == "loadContainerFromID" or name.endswith("FromID"):
                raise GraphQLError("fake engine: legacy load*FromID is not used by 0.21")
            return parent.child(named.name, name, args)
        return self._leaf(parent, name, args, named, info.context["token"])

    def _register(self, obj: Obj) -> str:
        with self.lock:
            self.objects[obj.id] = obj
        return obj.id

    def _leaf(self, parent: Obj, name: str, args: dict[str, Any], named: Any, token: str) -> Any:
        if name == "id":
            return self._register(parent)
        if name == "sync":
            self.evaluate(parent)
            return self._register(parent)
        if name in {"stdout", "stderr", "exitCode", "combinedOutput"}:
            state = self.evaluate(parent)
            return {
                "stdout": state.stdout, "stderr": state.stderr, "exitCode": state.exit_code,
                "combinedOutput": state.stdout + state.stderr,
            }[name]
        if name == "publish":
            self.evaluate(parent)
            for variant in args.get("platformVariants") or []:
                if variant not in self.objects:
                    raise GraphQLError(f"fake engine: unknown platform variant {variant!r}")
                self.evaluate(self.objects[variant])
            seed = f"{parent.id}|{args['address']}|{args.get('platformVariants')}"
            ref = f"{args['address']}@sha256:{hashlib.sha256(seed.encode()).hexdigest()}"
            for fragment, digest in self.publish_digests.items():
                if fragment in args["address"]:
                    ref = f"{args['address']}@{digest}"
            with self.lock:
                self.published.append((token, ref))
            return ref
        if name in {"contents", "export"} and parent.type_name == "File":
            state = self.evaluate(parent)
            path = next(a["path"] for n, a in reversed(parent.steps()) if n == "file")
            text = junit_xml(state.exit_code != 0) if path.endswith(".xml") else "fake\n"
            if name == "export":
                Path(args["path"]).write_text(text)
                return args["path"]
            return text
        if parent.type_name == "Service" and name in {"start", "stop", "endpoint"}:
            return self._service(parent, name, args, token)
        if name == "export" and parent.type_name == "Directory":
            steps = parent.steps()
            if [n for n, _ in steps] != ["host", "directory"]:
                raise GraphQLError(f"fake engine: export of {[n for n, _ in steps]} is not "
                                   "supported (only a host directory)")
            shutil.copytree(steps[1][1]["path"], args["path"], dirs_exist_ok=True, symlinks=True)
            return args["path"]
        if name == "plaintext":
            raise GraphQLError("fake engine: the pipeline should never read a secret back")
        if name == "version":
            return ENGINE_VERSION
        if name == "defaultPlatform" and parent.type_name == "Query":
            return self.default_platform(token)
        if name in {"platform", "defaultPlatform"}:
            return self.evaluate(parent).platform
        if isinstance(named, GraphQLEnumType):
            return next(iter(named.values.values())).value
        return {"String": "", "Int": 0, "Float": 0.0, "Boolean": False, "ID": parent.id,
                "Void": None, "JSON": "{}", "Platform": DEFAULT_PLATFORM}.get(named.name, "")

    # ------------------------------------------------------------ services

    def _service(self, parent: Obj, name: str, args: dict[str, Any], token: str) -> Any:
        """start/stop/endpoint of a Service; a host tunnel is served by a StandIn."""
        tunnel = next((a for n, a in reversed(parent.steps()) if n == "tunnel"), None)
        if name == "stop":
            with self.lock:
                self.stopped.append(parent.id)
                stand_in = self._running.pop(parent.id, None)
            if stand_in is not None:
                stand_in.stop()
            return self._register(parent)
        if tunnel is None:  # a container's own service: only what a test may ask of it
            if name == "start":
                self.evaluate(parent)
                return self._register(parent)
            port = next((a["port"] for n, a in parent.steps() if n == "withExposedPort"), None)
            if port is None:
                raise GraphQLError("fake engine: the service exposes no port")
            return f"{args.get('scheme') or 'tcp'}://svc-{parent.id[8:20]}:{port}"
        if name == "start":
            if parent.id not in self._running:
                self._start_tunnel(parent, tunnel, token)
            return self._register(parent)
        stand_in = self._running.get(parent.id)
        if stand_in is None:
            raise GraphQLError("fake engine: endpoint of a tunnel that was not started")
        where = f"localhost:{stand_in.port}"
        return f"{args['scheme']}://{where}" if args.get("scheme") else where

    def _start_tunnel(self, tunnel_obj: Obj, tunnel: dict[str, Any], token: str) -> None:
        """What the real engine checks before traffic flows: a known service made with
        asService from an image, and a forwarded port it exposes; then the stand-in serves."""
        backing = self.objects.get(tunnel["service"])
        if backing is None:
            raise GraphQLError(f"fake engine: unknown service {tunnel['service']!r}")
        steps = backing.steps()
        if not any(n == "asService" for n, _ in steps):
            raise GraphQLError("fake engine: tunnel to something that is not a container service")
        exposed = {a["port"] for n, a in steps if n == "withExposedPort"}
        forwards = [int(p["backend"]) for p in tunnel.get("ports") or []] or sorted(exposed)
        if not forwards or not set(forwards) <= exposed:
            raise GraphQLError(f"fake engine: tunnel ports {forwards} are not exposed "
                               f"by the service (exposed: {sorted(exposed)})")
        state = self.evaluate(backing)
        address = next((a["address"] for n, a in reversed(steps) if n == "from"), "")
        rule = next((r for r in self.serve_rules if r.platform in (None, state.platform)),
                    ServeRule())
        if rule.fail_start:
            raise ExecErrorSignal(["/entrypoint"], 1, "", rule.fail_start)
        stand_in = StandIn(state.platform, address, forwards[0], rule, token).start()
        with self.lock:
            self.stand_ins.append(stand_in)
            self._running[tunnel_obj.id] = stand_in

    # ------------------------------------------------------------ evaluation

    def _rule(self, kind: str, text: str, platform: str) -> FailRule | None:
        for rule in self.rules:
            if rule.kind == kind and rule.match in text and rule.platform in (None, platform):
                return rule
        return None

    def evaluate(self, obj: Obj) -> ExecState:
        """Replay the chain: pick up the platform, run execs and builds, raise on failure."""
        state = ExecState()
        for name, args in obj.steps():
            if name in {"container", "dockerBuild"} and args.get("platform"):
                state.platform = args["platform"]
            if name == "dockerBuild":
                text = f"{args.get('dockerfile', 'Dockerfile')} target={args.get('target', '')}"
                rule = self._rule("build", text, state.platform)
                if rule:
                    cmd = ["/bin/sh", "-c", rule.match]
                    raise ExecErrorSignal(cmd, rule.exit_code, rule.stdout, rule.stderr)
                state = ExecState(platform=state.platform)
            elif name == "withExec":
                cmd = [str(a) for a in args["args"]]
                rule = self._rule("exec", " ".join(cmd), state.platform)
                code = rule.exit_code if rule else 0
                out = rule.stdout if rule else f"3 passed ({' '.join(cmd)})\n"
                err = rule.stderr if rule else ""
                expect = args.get("expect", "SUCCESS")
                if (expect == "SUCCESS" and code != 0) or (expect == "FAILURE" and code == 0):
                    raise ExecErrorSignal(cmd, code, out, err)
                state.exit_code, state.stdout, state.stderr = code, out, err
                state.execs += 1
        return state
