"""A local stand-in for the Argo Workflows controller, enough to run an exported WorkflowTemplate.

It walks the DAG as Argo does (a task starts when every dependency succeeded; ready tasks run
side by side; the first failure stops the DAG), resolves `{{workflow.*}}`, `{{inputs.*}}`,
`{{tasks.X.outputs.*}}` and `{{tasks.X.ip}}`, and runs each step's own script with `sh` in a
folder of its own, as its pod would. How a pod's world maps onto this machine:

- `/maci/...` (checkout, input and output artifacts) → `<step folder>/maci/...` (the scripts and
  env values are rewritten by that one prefix);
- the git input artifact → `git clone` of `repo` + a detached checkout of `revision`;
- artifacts → files copied from the producing step's folder to the consuming step's path;
- `secretKeyRef` env → the value in the `secrets` mapping given (a missing one fails the step,
  as a missing Secret fails the pod);
- the dind sidecar → this machine's Docker daemon (its DOCKER_HOST/TLS env is dropped);
- init containers → run, except `ci setup-qemu` when the platform's binfmt handler is already
  registered (the kernel is shared, as on a node);
- a daemon container → `docker run -d` of its image; `{{tasks.X.ip}}` is its bridge IP; it is
  removed when the DAG that started it ends.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TAG = re.compile(r"\{\{\s*([^}\s]+)\s*\}\}")
_MACI = re.compile(r"(?<![\w.])/maci(?=/|$|\s|\"|')")
SIDECAR_ENV = {"DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"}


class StepFailed(Exception):
    def __init__(self, task: str, code: int, output: str) -> None:
        super().__init__(f"step {task} exited {code}:\n{output[-4000:]}")
        self.task, self.code, self.output = task, code, output


@dataclass
class Node:
    """One finished task: its folder, output parameters, output artifact files, daemon IP."""

    name: str
    folder: Path
    parameters: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    ip: str = ""
    container: str = ""
    seconds: float = 0.0
    skipped_init: list[str] = field(default_factory=list)


@dataclass
class Simulation:
    template: dict[str, Any]
    parameters: dict[str, str]
    secrets: Mapping[tuple[str, str], str]
    work: Path
    environ: Mapping[str, str]
    registered: frozenset[str] = frozenset()  # platforms whose qemu handler is registered
    name: str = "release-sim"
    timeout: float = 900.0
    nodes: dict[str, Node] = field(default_factory=dict)  # "dag/task" -> node, in run order
    _count: int = 0

    @property
    def templates(self) -> dict[str, dict[str, Any]]:
        return {t["name"]: t for t in self.template["spec"]["templates"]}

    def run(self) -> None:
        self._dag(self.template["spec"]["entrypoint"], {}, "")

    def _sub(self, text: str, scope: Mapping[str, str]) -> str:
        def one(m: re.Match[str]) -> str:
            key = m.group(1)
            if key not in scope:
                raise KeyError(f"unresolved {{{{{key}}}}}")
            return scope[key]
        return _TAG.sub(one, text)

    def _dag(self, name: str, inputs: Mapping[str, str], prefix: str) -> None:
        tasks = {t["name"]: t for t in self.templates[name]["dag"]["tasks"]}
        done: dict[str, Node] = {}
        daemons: list[str] = []
        try:
            while len(done) < len(tasks):
                ready = [t for n, t in tasks.items() if n not in done
                         and set(t.get("dependencies", [])) <= set(done)]
                if not ready:
                    raise RuntimeError(f"DAG {name} cannot progress: {sorted(set(tasks) - set(done))}")
                with ThreadPoolExecutor(max_workers=2) as pool:
                    futures = {t["name"]: pool.submit(self._task, t, inputs, done, prefix)
                               for t in ready}
                    for task_name, future in futures.items():
                        node = future.result()  # a StepFailed stops the DAG here
                        done[task_name] = node
                        if node.container:
                            daemons.append(node.container)
        finally:
            for container in daemons:
                subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)

    def _scope(self, inputs: Mapping[str, str], done: Mapping[str, Node]) -> dict[str, str]:
        scope = {f"workflow.parameters.{k}": v for k, v in self.parameters.items()}
        scope["workflow.name"] = self.name
        scope.update({f"inputs.parameters.{k}": v for k, v in inputs.items()})
        for n, node in done.items():
            scope.update({f"tasks.{n}.outputs.parameters.{k}": v for k, v in node.parameters.items()})
            scope.update({f"tasks.{n}.outputs.artifacts.{k}": str(v) for k, v in node.artifacts.items()})
            if node.ip:
                scope[f"tasks.{n}.ip"] = node.ip
        return scope

    def _task(self, task: dict[str, Any], inputs: Mapping[str, str], done: Mapping[str, Node],
              prefix: str) -> Node:
        scope = self._scope(inputs, done)
        args = task.get("arguments", {})
        params = {p["name"]: self._sub(p["value"], scope) for p in args.get("parameters", [])}
        files = {a["name"]: Path(self._sub(a["from"], scope)) for a in args.get("artifacts", [])}
        template = self.templates[task["template"]]
        key = f"{prefix}{task['name']}"
        self._count += 1
        folder = self.work / f"{self._count:02d}-{key.replace('/', '-')}"
        started = time.monotonic()
        if "dag" in template:
            folder.mkdir(parents=True)
            node = Node(key, folder)
            self._dag(template["name"], params, f"{key}/")
        elif template.get("daemon"):
            node = self._daemon(template, params, folder, key)
        else:
            node = self._script(template, params, files, folder, key)
        node.seconds = round(time.monotonic() - started, 1)
        self.nodes[key] = node
        return node

    def _daemon(self, template: dict[str, Any], params: Mapping[str, str], folder: Path,
                key: str) -> Node:
        scope = self._scope(params, {})
        image = self._sub(template["container"]["image"], scope)
        name = f"maci-argo-sim-{self.name}-{folder.name}"
        subprocess.run(["docker", "run", "-d", "--name", name, "--pull", "always", image],
                       check=True, capture_output=True, text=True, timeout=300)
        ip = subprocess.run(["docker", "inspect", "-f",
                             "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name],
                            check=True, capture_output=True, text=True).stdout.strip()
        folder.mkdir(parents=True)
        return Node(key, folder, ip=ip, container=name)

    def _script(self, template: dict[str, Any], params: Mapping[str, str],
                files: Mapping[str, Path], folder: Path, key: str) -> Node:
        root = folder / "maci"

        def local(text: str) -> str:
            return _MACI.sub(str(root), text)

        scope = self._scope(params, {})
        for artifact in template.get("inputs", {}).get("artifacts", []):
            target = Path(local(artifact["path"]))
            target.parent.mkdir(parents=True, exist_ok=True)
            if "git" in artifact:
                git = artifact["git"]
                subprocess.run(["git", "clone", "-q", self._sub(git["repo"], scope), str(target)],
                               check=True, capture_output=True)
                subprocess.run(["git", "-C", str(target), "checkout", "-q", "--detach",
                                self._sub(git["revision"], scope)], check=True, capture_output=True)
            else:
                shutil.copy(files[artifact["name"]], target)
        for path in ("out", "tmp"):
            (root / path).mkdir(parents=True, exist_ok=True)
        node = Node(key, folder)
        script = template["script"]
        env = dict(self.environ)
        for item in script.get("env", []):
            if item["name"] in SIDECAR_ENV:
                continue
            if "valueFrom" in item:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secrets[(ref["name"], ref["key"])]
            else:
                env[item["name"]] = local(self._sub(item["value"], scope))
        for init in template.get("initContainers", []):
            command = [self._sub(c, scope) for c in init["command"]]
            if command[:2] == ["ci", "setup-qemu"] and command[-1] in self.registered:
                node.skipped_init.append(init["name"])
                continue
            subprocess.run(command, check=True, env=env, capture_output=True, timeout=120)
        source = folder / "script.sh"
        source.write_text(local(self._sub(script["source"], scope)))
        res = subprocess.run(["sh", str(source)], cwd=local(script["workingDir"]), env=env,
                             capture_output=True, text=True, timeout=self.timeout, check=False)
        (folder / "log.txt").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            raise StepFailed(key, res.returncode, res.stdout + res.stderr)
        outputs = template.get("outputs", {})
        for p in outputs.get("parameters", []):
            node.parameters[p["name"]] = Path(local(p["valueFrom"]["path"])).read_text().strip()
        for a in outputs.get("artifacts", []):
            node.artifacts[a["name"]] = Path(local(a["path"]))
        return node
