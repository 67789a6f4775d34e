#!/usr/bin/env python3
"""Reduce the Argo projects' published schemas to what the project's tests validate against.

Reads the upstream files (`../shared/argo/` in this workplace, or fetched from the commits
below), keeps only the definitions the exported and example objects use (Workflows:
WorkflowTemplate and Workflow; Events: EventSource and Sensor; Argo CD: the Application CRD's
v1alpha1 `openAPIV3Schema`) with everything they reference, and removes every `description`,
`title` and `x-kubernetes-*` annotation (except `x-kubernetes-preserve-unknown-fields`, which
changes what validates). Types, properties, required, enums, formats and refs are kept, so
an object validates against the reduced schema exactly when it does against the upstream one.

The output is deterministic (sorted keys, fixed indent): the same inputs give the same bytes.
The script refuses an input whose sha256 is not the one recorded here.

Usage (from the repository root; the line tests/data/argo/README.md records):

    python scripts/reduce_argo_schemas.py ../shared/argo -o tests/data/argo

Exit codes: 0 written; 2 refused (missing input, wrong sha256), with one line on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

# output name -> (upstream file, repository, path, commit, sha256, root definitions or None)
SOURCES: dict[str, tuple[str, str, str, str, str, tuple[str, ...] | None]] = {
    "argo-workflows.schema.json": (
        "argo-workflows.schema.json", "argoproj/argo-workflows", "api/jsonschema/schema.json",
        "f016ad89eb26", "3f84c5722c48a5aa815fe69119a9375fc3635114f8046da20ede55a8596529f5",
        ("io.argoproj.workflow.v1alpha1.WorkflowTemplate", "io.argoproj.workflow.v1alpha1.Workflow")),
    "argo-events.schema.json": (
        "argo-events.schema.json", "argoproj/argo-events", "api/jsonschema/schema.json",
        "6478ece495f9", "0eb4360bf0c41ab6af09f163f4273e4cca7d61663d0abbe75c79017ca2eb6bee",
        ("io.argoproj.events.v1alpha1.EventSource", "io.argoproj.events.v1alpha1.Sensor")),
    "argo-cd.application.schema.json": (
        "argo-cd.application-crd.yaml", "argoproj/argo-cd", "manifests/crds/application-crd.yaml",
        "37ee0097cf85", "9fd0da3e7097ad6d1af614fabd5c960bc7ddb00d768c3ef485a2fda6e9460df8",
        None),
}
_DROP = {"description", "title"}
_KEEP_X = {"x-kubernetes-preserve-unknown-fields"}
_NAMED = {"properties", "definitions", "patternProperties", "$defs"}  # maps of name -> schema


class Refused(Exception):
    """An input the script will not reduce; one line on stderr, exit 2."""


def strip(node: Any, named: bool = False) -> Any:
    """The schema without its annotations. Inside `properties` (and the like) the keys are
    field names, so a field called `description` stays."""
    if isinstance(node, list):
        return [strip(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if not named and (key in _DROP or (key.startswith("x-kubernetes-") and key not in _KEEP_X)):
            continue
        out[key] = strip(value, named=not named and key in _NAMED)
    return out


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def closure(definitions: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    """The root definitions and every definition they reference, directly or not."""
    keep: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        if name not in definitions:
            raise Refused(f"definition {name} is referenced but not in the schema")
        keep.add(name)
        todo += sorted(_refs(definitions[name]) - keep)
    return {name: definitions[name] for name in sorted(keep)}


def reduce(name: str, text: str) -> dict[str, Any]:
    """The reduced schema document for one output name, from the upstream file's text."""
    _, repo, path, commit, _, roots = SOURCES[name]
    meta = {"upstream": f"https://github.com/{repo}/blob/{commit}/{path}",
            "reduced_by": "scripts/reduce_argo_schemas.py"}
    if roots is None:  # a CRD: the served version's openAPIV3Schema
        crd = YAML(typ="safe").load(text)
        [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
        return {"$comment": meta, **strip(version["schema"]["openAPIV3Schema"])}
    doc = json.loads(text)
    return {"$comment": meta, "$schema": doc["$schema"],
            "definitions": strip(closure(doc["definitions"], roots), named=True)}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", type=Path, help="folder with the upstream files")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to write to")
    args = parser.parse_args(argv)
    try:
        outputs = {}
        for name, (file, *_, sha, _roots) in SOURCES.items():
            path = args.upstream / file
            if not path.is_file():
                raise Refused(f"{path}: no such file")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise Refused(f"{path}: sha256 is not {sha} (another upstream version?)")
            outputs[name] = render(reduce(name, data.decode()))
    except Refused as exc:
        sys.stderr.write(f"refused: {exc}\n")
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (args.output / name).write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        print(f"wrote {args.output / name} ({len(text)} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
