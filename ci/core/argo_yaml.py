"""Kubernetes objects as YAML text (pure): the dicts' own key order, scripts as `|` blocks, no
line folding, nothing time- or machine-dependent, so one object always gives the same bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString


def _blocks(node: Any) -> Any:
    """Multi-line strings (step scripts) as literal blocks, so they read as scripts."""
    if isinstance(node, dict):
        return {k: _blocks(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_blocks(v) for v in node]
    if isinstance(node, str) and "\n" in node.rstrip("\n"):
        return LiteralScalarString(node)
    return node


def dump(obj: dict[str, Any], header: str = "") -> str:
    """One object as a YAML document, after an optional `# ...` comment header."""
    yaml = YAML(typ="rt", pure=True)
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(_blocks(obj), out)
    lines = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return lines + out.getvalue()


def dump_all(objs: Sequence[tuple[dict[str, Any], str]]) -> str:
    """Several objects as one YAML stream (`kubectl apply -f -` takes it as is)."""
    return "---\n".join(dump(obj, header) for obj, header in objs)
