"""A schema-validating fake Dagger engine for the real dagger-io SDK (test data, not a mock).

No Dagger engine can run on the project's machines, so the Dagger engine adapter is proven
with the real SDK against this fake: every document is validated with graphql-core against
the real schema (../shared/dagger/schema-v0.21.8.graphqls), recorded, and answered with
plausible values. See /work/shared/dagger/README.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import graphql

from tests.dagger_fake.engine import FailRule, FakeEngine, Recorded, junit_xml
from tests.dagger_fake.server import FakeServer, load_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_ENV = "MACI_DAGGER_SCHEMA"
DEFAULT_SCHEMA = REPO_ROOT.parent / "shared" / "dagger" / "schema-v0.21.8.graphqls"
CLI_SCRIPT = Path(__file__).with_name("cli.py")

__all__ = ["CLI_SCRIPT", "FailRule", "FakeEngine", "FakeServer", "Recorded", "calls",
           "junit_xml", "load_schema", "schema_path"]


def schema_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(SCHEMA_ENV) or DEFAULT_SCHEMA)


def _fields(node: Any, variables: dict[str, Any] | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field selected anywhere in a document, with its literal arguments."""
    selection_set = getattr(node, "selection_set", None)
    if isinstance(node, graphql.FieldNode):
        args = {a.name.value: graphql.value_from_ast_untyped(a.value, variables)
                for a in node.arguments or ()}
        yield node.name.value, args
    if selection_set is not None:
        for child in selection_set.selections:
            yield from _fields(child, variables)


def calls(documents: list[Recorded], name: str, token: str | None = None) -> list[dict[str, Any]]:
    """The arguments of every `name` field asked for (optionally in one session only)."""
    found: list[dict[str, Any]] = []
    for doc in documents:
        if doc.document is None or (token is not None and doc.token != token):
            continue
        for definition in doc.document.definitions:
            for field, args in _fields(definition, None):
                if field == name:
                    found.append(args)
    return found
