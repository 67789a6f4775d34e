"""Validate Argo objects against the Argo projects' own schemas, offline.

Which schemas: `MACI_ARGO_SCHEMAS` (a folder) if set, else `../shared/argo/` next to the
repository when this workplace has it (the unmodified upstream files), else the reduced copies
in tests/data/argo/ (see its README), so the tests run in any clone.

The upstream schemas let unknown fields through almost everywhere; `strict=True` (the default)
closes every object that declares its properties (unless it says
`x-kubernetes-preserve-unknown-fields`), so a misspelled `nodeSelectr` fails here, as it would
be dropped by the API server.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
REPO_COPY = ROOT / "tests" / "data" / "argo"
SHARED = ROOT.parent / "shared" / "argo"
ENV = "MACI_ARGO_SCHEMAS"
WORKFLOWS, EVENTS, CD = "argo-workflows.schema.json", "argo-events.schema.json", "argo-cd"
KINDS = {"WorkflowTemplate": (WORKFLOWS, "io.argoproj.workflow.v1alpha1.WorkflowTemplate"),
         "Workflow": (WORKFLOWS, "io.argoproj.workflow.v1alpha1.Workflow"),
         "EventSource": (EVENTS, "io.argoproj.events.v1alpha1.EventSource"),
         "Sensor": (EVENTS, "io.argoproj.events.v1alpha1.Sensor"),
         "Application": (CD, "")}


def schema_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(ENV):
        return Path(env[ENV])
    return SHARED if (SHARED / WORKFLOWS).is_file() else REPO_COPY


def _document(folder: Path, name: str) -> dict[str, Any]:
    if name != CD:
        return dict(json.loads((folder / name).read_text()))
    reduced = folder / "argo-cd.application.schema.json"
    if reduced.is_file():
        return dict(json.loads(reduced.read_text()))
    crd = YAML(typ="safe").load((folder / "argo-cd.application-crd.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return dict(version["schema"]["openAPIV3Schema"])


def close(node: Any, named: bool = False) -> Any:
    """Every schema object with `properties` and no `additionalProperties` becomes closed; the
    keys of a `properties`/`definitions` map are names, not keywords (`named`)."""
    if isinstance(node, list):
        return [close(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: close(v, named=not named and k in ("properties", "definitions")) for k, v in node.items()}
    if (not named and isinstance(node.get("properties"), dict)
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator(name: str, definition: str, strict: bool, folder: str) -> Any:
    doc = copy.deepcopy(_document(Path(folder), name))
    if strict:
        doc = close(doc)
    if definition:
        schema = {"$ref": f"#/definitions/{definition}", "definitions": doc["definitions"]}
        cls = (jsonschema.Draft202012Validator if "2020-12" in str(doc.get("$schema", ""))
               else jsonschema.Draft7Validator)
    else:
        schema, cls = doc, jsonschema.Draft7Validator
    return cls(schema)


def problems(obj: dict[str, Any], *, strict: bool = True, folder: Path | None = None) -> list[str]:
    """`path: message` for each way `obj` fails its kind's schema ([] = valid); `folder`
    picks the schemas (default `schema_dir()`)."""
    if obj.get("apiVersion") != "argoproj.io/v1alpha1" or obj.get("kind") not in KINDS:
        return [f"<root>: not an Argo object ({obj.get('apiVersion')} {obj.get('kind')})"]
    name, definition = KINDS[str(obj["kind"])]
    validator = _validator(name, definition, strict, str(folder or schema_dir()))
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(obj))
