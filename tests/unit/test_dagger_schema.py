"""The repository's own Dagger schema (tests/data/dagger/): usable, description-free, provenanced.

The fake Dagger engine serves `tests/data/dagger/schema-v0.21.8.reduced.graphqls` whenever no
override and no ../shared/dagger/ upstream file is present, so these tests prove that copy is
what the fake engine and the dagger-io SDK need. The provenance checks (README's regenerate line
reproduces the file byte for byte; reduced is structurally identical to upstream) need the
upstream file and skip only when ../shared/dagger/ is absent.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import graphql
import pytest
from graphql.language import Node, Visitor, visit
from graphql.utilities import find_breaking_changes, find_dangerous_changes, introspection_from_schema

from tests.dagger_fake import REPO_ROOT, REPO_SCHEMA, SCHEMA_ENV, SHARED_SCHEMA, load_schema, schema_path

SCRIPT = REPO_ROOT / "scripts" / "reduce_dagger_schema.py"
README = REPO_ROOT / "tests" / "data" / "dagger" / "README.md"
UPSTREAM_SHA256 = "0761d3c0523c46e446d3bb7a959c08152caf3499219169efd6c7996212c632b0"
NO_SHARED = (f"provenance check only: the upstream schema {SHARED_SCHEMA} is absent (no ../shared "
             "in this clone); the reduced schema itself is in the repository and tested above")
needs_upstream = pytest.mark.skipif(not SHARED_SCHEMA.is_file(), reason=NO_SHARED)

# (type, field, arguments) the fake engine answers and the project's adapter / the SDK ask for;
# every entry was checked against the upstream v0.21.8 file
USED = [
    ("Query", "container", {"platform"}),
    ("Query", "defaultPlatform", set()),
    ("Query", "host", set()),
    ("Query", "directory", set()),
    ("Query", "cacheVolume", {"key"}),
    ("Query", "setSecret", {"name", "plaintext"}),
    ("Query", "node", {"id"}),
    ("Query", "version", set()),
    ("Container", "from", {"address"}),
    ("Container", "withExec", {"args", "expect"}),
    ("Container", "withEnvVariable", {"name", "value"}),
    ("Container", "withLabel", {"name", "value"}),
    ("Container", "withWorkdir", {"path"}),
    ("Container", "withMountedCache", {"path", "cache", "sharing"}),
    ("Container", "withMountedDirectory", {"path", "source"}),
    ("Container", "withMountedFile", {"path", "source"}),
    ("Container", "withSecretVariable", {"name", "secret"}),
    ("Container", "withRegistryAuth", {"address", "username", "secret"}),
    ("Container", "publish", {"address", "platformVariants"}),
    ("Container", "export", {"path", "platformVariants"}),
    ("Container", "asService", set()),
    ("Container", "withServiceBinding", {"alias", "service"}),
    ("Container", "stdout", set()),
    ("Container", "stderr", set()),
    ("Container", "combinedOutput", set()),
    ("Container", "exitCode", set()),
    ("Container", "sync", set()),
    ("Container", "platform", set()),
    ("Container", "file", {"path"}),
    ("Container", "directory", {"path"}),
    ("Container", "id", set()),
    ("Directory", "dockerBuild", {"platform", "dockerfile", "buildArgs", "target"}),
    ("Directory", "file", {"path"}),
    ("Directory", "directory", {"path"}),
    ("Host", "directory", {"path", "exclude", "include"}),
    ("Host", "file", {"path"}),
    ("File", "contents", set()),
    ("File", "export", {"path"}),
    ("Secret", "plaintext", set()),
    ("Service", "endpoint", {"port", "scheme"}),
]


@pytest.fixture(scope="module")
def reduced_text() -> str:
    return REPO_SCHEMA.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def reduced(reduced_text: str) -> graphql.GraphQLSchema:
    return graphql.build_schema(reduced_text)


def run_script(*args: str | Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def readme_command() -> list[str]:
    """The one command line in the README's "Regenerate" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Regenerate", 1)[1]
    match = re.search(r"```sh\n(.+?)\n```", section, re.S)
    assert match, "tests/data/dagger/README.md: no ```sh block under ## Regenerate"
    (line,) = match.group(1).strip().splitlines()
    return shlex.split(line)


def header(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines() if line.startswith("# ")]


class _Descriptions(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def enter(self, node: Node, *_args: Any) -> None:
        description = getattr(node, "description", None)
        if description is not None:
            name = getattr(getattr(node, "name", None), "value", node.kind)
            self.found.append(f"{node.kind} {name}: {description.value[:40]!r}")


class _DirectiveUses(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.uses: Counter[str] = Counter()

    def enter_directive(self, node: graphql.DirectiveNode, *_args: Any) -> None:
        self.uses[graphql.print_ast(node)] += 1


def without_descriptions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [without_descriptions(v) for v in value]
    return value


# --- (a) the repo copy is a usable schema with what the fake engine and the SDK use ----------

@pytest.mark.parametrize(("type_name", "field", "args"), USED, ids=[f"{t}.{f}" for t, f, _ in USED])
def test_reduced_schema_has_the_fields_the_fake_and_sdk_use(
        reduced: graphql.GraphQLSchema, type_name: str, field: str, args: set[str]) -> None:
    named = reduced.get_type(type_name)
    assert isinstance(named, graphql.GraphQLObjectType), type_name
    assert field in named.fields, f"{type_name}.{field} missing"
    assert args <= set(named.fields[field].args), (type_name, field, set(named.fields[field].args))


def test_reduced_schema_types_and_directives(reduced: graphql.GraphQLSchema) -> None:
    assert reduced.query_type is not None and reduced.query_type.name == "Query"
    platform_variants = reduced.get_type("Container").fields["publish"].args["platformVariants"]  # type: ignore[union-attr]
    assert str(platform_variants.type) == "[ID!]"
    assert str(reduced.get_type("Query").fields["container"].args["platform"].type) == "Platform"  # type: ignore[union-attr]
    assert isinstance(reduced.get_type("Platform"), graphql.GraphQLScalarType)
    assert isinstance(reduced.get_type("Node"), graphql.GraphQLInterfaceType)
    expect = reduced.get_type("ReturnType")
    assert isinstance(expect, graphql.GraphQLEnumType) and {"SUCCESS", "FAILURE", "ANY"} <= set(expect.values)
    assert {"deprecated", "experimental", "expectedType"} <= {d.name for d in reduced.directives}
    # directive usages survive the reduction (deprecations are part of the schema's structure)
    env = reduced.get_type("Env")
    assert isinstance(env, graphql.GraphQLObjectType)
    assert env.fields["withModule"].deprecation_reason == "Use withMainModule instead"
    assert env.fields["services"].ast_node is not None
    assert [d.name.value for d in env.fields["services"].ast_node.directives] == ["experimental"]
    # the legacy load*FromID fields are not in this engine's schema (the README says so)
    assert not [f for f in reduced.query_type.fields if f.startswith("load") and f.endswith("FromID")]


def test_introspection_answers_from_the_reduced_schema(reduced: graphql.GraphQLSchema) -> None:
    """The SDK builds its client from introspection; graphql-core executes it on this schema."""
    result = graphql.graphql_sync(reduced, graphql.get_introspection_query())
    assert result.errors is None
    assert result.data is not None
    names = {t["name"] for t in result.data["__schema"]["types"]}
    assert {"Query", "Container", "Directory", "Service", "Platform"} <= names


# --- (b) no description left -----------------------------------------------------------------

def test_reduced_schema_has_no_descriptions(reduced_text: str, reduced: graphql.GraphQLSchema) -> None:
    finder = _Descriptions()
    visit(graphql.parse(reduced_text), finder)
    assert finder.found == [], finder.found[:5]
    assert '"""' not in reduced_text
    described = [t.name for t in reduced.type_map.values()
                 if t.description and not t.name.startswith("__")
                 and not graphql.is_specified_scalar_type(t)]
    assert described == []


def test_header_records_provenance(reduced_text: str) -> None:
    lines = header(reduced_text.split("\n\n", 1)[0])
    joined = "\n".join(lines)
    for needle in ("github.com/dagger/dagger", "tag v0.21.8", "docs/docs-graphql/schema.graphqls",
                   f"Upstream sha256: {UPSTREAM_SHA256}", "License: Apache-2.0"):
        assert needle in joined, needle
    (generated,) = [line for line in lines if line.startswith("Generated by: ")]
    assert shlex.split(generated.removeprefix("Generated by: ")) == readme_command()


def test_readme_records_current_hashes() -> None:
    text = README.read_text(encoding="utf-8")
    reduced_sha = hashlib.sha256(REPO_SCHEMA.read_bytes()).hexdigest()
    assert f"Reduced file sha256 | `{reduced_sha}` ({REPO_SCHEMA.stat().st_size} bytes)" in text, (
        f"tests/data/dagger/README.md: reduced sha256 is now {reduced_sha}")
    assert f"Upstream sha256 | `{UPSTREAM_SHA256}`" in text
    assert "Apache-2.0" in text and "v0.21.8" in text


# --- (c) provenance: needs the upstream file --------------------------------------------------

@needs_upstream
def test_readme_command_reproduces_the_committed_file(tmp_path: Path) -> None:
    """Run the README's line verbatim in a scratch copy of the layout (repo next to shared/)."""
    argv = readme_command()
    assert argv[:2] == ["python", "scripts/reduce_dagger_schema.py"], argv
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / "scripts" / SCRIPT.name)
    (tmp_path / "shared" / "dagger").mkdir(parents=True)
    shutil.copy2(SHARED_SCHEMA, tmp_path / "shared" / "dagger" / SHARED_SCHEMA.name)
    done = subprocess.run([sys.executable, *argv[1:]], cwd=repo, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = repo / argv[argv.index("-o") + 1]
    assert out.read_bytes() == REPO_SCHEMA.read_bytes(), (
        "the committed reduced schema is stale: rerun the README's command")


@needs_upstream
def test_reduced_schema_is_structurally_identical_to_upstream(reduced_text: str,
                                                              reduced: graphql.GraphQLSchema) -> None:
    upstream_text = SHARED_SCHEMA.read_text(encoding="utf-8")
    assert hashlib.sha256(upstream_text.encode()).hexdigest() == UPSTREAM_SHA256
    upstream = graphql.build_schema(upstream_text)
    for old, new in ((upstream, reduced), (reduced, upstream)):
        assert find_breaking_changes(old, new) == []
        assert find_dangerous_changes(old, new) == []
    assert (without_descriptions(introspection_from_schema(upstream))
            == without_descriptions(introspection_from_schema(reduced)))
    # directive usages (which introspection does not show, except deprecations) all kept
    up_uses, red_uses = _DirectiveUses(), _DirectiveUses()
    visit(graphql.parse(upstream_text), up_uses)
    visit(graphql.parse(reduced_text), red_uses)
    assert red_uses.uses == up_uses.uses
    assert red_uses.uses["@deprecated(reason: \"use members instead\")"] == 1
    assert len(reduced_text) < len(upstream_text) // 2


# --- (d) the script refuses a wrong upstream ---------------------------------------------------

def test_wrong_sha256_for_known_tag_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "schema.graphqls"
    source.write_text('"""A query."""\ntype Query {\n  "the version"\n  version: String!\n}\n')
    out = tmp_path / "out" / "reduced.graphqls"
    done = run_script(source, "-o", out)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "sha256" in lines[0] and "v0.21.8" in lines[0] and UPSTREAM_SHA256 in lines[0]
    assert not out.exists()


def test_other_tag_accepts_any_input_and_records_it(tmp_path: Path) -> None:
    source = tmp_path / "schema.graphqls"
    source.write_text('"""A query."""\ntype Query {\n  "the version"\n  version(\n    """how"""\n'
                      '    full: Boolean = false\n  ): String! @deprecated(reason: "x")\n}\n')
    out = tmp_path / "reduced.graphqls"
    done = run_script(source, "-o", out, "--tag", "v9.9.9")
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    assert "tag v9.9.9" in text and f"Upstream sha256: {sha}" in text
    assert text.endswith('type Query {\n  version(full: Boolean = false): String!'
                         ' @deprecated(reason: "x")\n}\n')
    again = tmp_path / "again.graphqls"
    assert run_script(source, "-o", again, "--tag", "v9.9.9").returncode == 0
    assert again.read_text().split("\n\n", 1)[1] == text.split("\n\n", 1)[1]  # deterministic body


def test_invalid_input_is_refused_on_one_line(tmp_path: Path) -> None:
    source = tmp_path / "schema.graphqls"
    source.write_text("type Query {\n  version: String!\n")
    done = run_script(source, "-o", tmp_path / "out.graphqls", "--tag", "v0.0.0")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "not a valid GraphQL schema" in done.stderr


# --- the harness's lookup order ----------------------------------------------------------------

def test_schema_path_falls_back_to_the_repo_copy(tmp_path: Path) -> None:
    missing_shared = tmp_path / "shared" / "dagger" / "schema-v0.21.8.graphqls"
    assert schema_path({}, shared=missing_shared) == REPO_SCHEMA
    assert schema_path({SCHEMA_ENV: ""}, shared=missing_shared) == REPO_SCHEMA
    assert REPO_SCHEMA.is_file()


def test_schema_path_prefers_override_then_shared(tmp_path: Path) -> None:
    shared = tmp_path / "shared.graphqls"
    shared.write_text("type Query { a: Int }\n")
    copy = tmp_path / "copy.graphqls"
    assert schema_path({}, shared=shared, repo_copy=copy) == shared
    override = tmp_path / "override.graphqls"
    assert schema_path({SCHEMA_ENV: str(override)}, shared=shared, repo_copy=copy) == override


def test_missing_override_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.graphqls"
    monkeypatch.setenv(SCHEMA_ENV, str(missing))
    assert schema_path() == missing  # never silently another schema
    with pytest.raises(FileNotFoundError, match=rf"{SCHEMA_ENV}=.*names a missing file"):
        load_schema()


def test_load_schema_of_the_repo_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEMA_ENV, str(REPO_SCHEMA))
    assert load_schema().get_type("Container") is not None
