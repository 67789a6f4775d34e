"""A schema-validating fake Dagger engine for the real dagger-io SDK (test data, not a mock).

No Dagger engine can run on the project's machines, so the Dagger engine adapter is proven
with the real SDK against this fake: every document is validated with graphql-core against
the real Dagger v0.21.8 schema, recorded, and answered with plausible values.

The schema is looked up in this order (`schema_path`):
1. `MACI_DAGGER_SCHEMA`, when set and non-empty (a named file that is missing is an error,
   never a fallback);
2. `../shared/dagger/schema-v0.21.8.graphqls` next to the repository, when it exists;
3. the repository's own copy, `tests/data/dagger/schema-v0.21.8.reduced.graphqls` (upstream
   structure with every description removed by scripts/reduce_dagger_schema.py; provenance
   in tests/data/dagger/README.md), which is always there: no fake-engine test skips for want
   of a schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import graphql

from tests.dagger_fake.engine import FailRule, FakeEngine, Recorded, junit_xml
from tests.dagger_fake.server import FakeServer
from tests.dagger_fake.server import load_schema as _load_schema_file
from tests.dagger_fake.service import ServeRule, StandIn

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_ENV = "MACI_DAGGER_SCHEMA"
SHARED_SCHEMA = REPO_ROOT.parent / "shared" / "dagger" / "schema-v0.21.8.graphqls"
REPO_SCHEMA = REPO_ROOT / "tests" / "data" / "dagger" / "schema-v0.21.8.reduced.graphqls"
CLI_SCRIPT = Path(__file__).with_name("cli.py")

__all__ = ["CLI_SCRIPT", "REPO_SCHEMA", "SCHEMA_ENV", "SHARED_SCHEMA", "FailRule", "FakeEngine",
           "FakeServer", "Recorded", "ServeRule", "StandIn", "calls", "junit_xml", "load_schema",
           "schema_path"]


def schema_path(environ: Mapping[str, str] | None = None, *, shared: Path = SHARED_SCHEMA,
                repo_copy: Path = REPO_SCHEMA) -> Path:
    """The schema file to serve: the override, else the shared upstream file, else the repo copy.

    An override is returned as named even when it does not exist, so the caller can fail
    clearly instead of silently using another schema.
    """
    env = os.environ if environ is None else environ
    override = env.get(SCHEMA_ENV)
    if override:
        return Path(override)
    if shared.is_file():
        return shared
    return repo_copy


def load_schema(path: Path | None = None) -> graphql.GraphQLSchema:
    """Build the schema at `path` (default: `schema_path()`); a missing file is a clear error."""
    path = schema_path() if path is None else path
    if not path.is_file():
        override = os.environ.get(SCHEMA_ENV)
        hint = (f"; {SCHEMA_ENV}={override!r} names a missing file (unset it to use the"
                " repository's copy)" if override else "")
        raise FileNotFoundError(f"Dagger schema not found at {path}{hint}")
    return _load_schema_file(path)


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
