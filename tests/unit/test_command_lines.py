"""Every `ci …` command line in the workflows, the composite action, the GitLab templates, the
README and the examples parses with the real Typer app (issue #13, item 1): a renamed option or a
missing required argument fails here, not in someone's release. The checker and the extractor are
shown to catch what they must, so the per-line tests cannot pass vacuously.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pytest

from tests import command_lines as cl

INVOCATIONS = cl.all_invocations()
RELEASE_SUBCOMMANDS = {"plan", "train", "job", "merge", "deploy", "promote"}


def subcommands(source: str) -> Counter[str]:
    return Counter(inv.argv[0] for inv in INVOCATIONS if inv.source == source and inv.argv)


@pytest.mark.parametrize("inv", INVOCATIONS, ids=[inv.id for inv in INVOCATIONS])
def test_command_line_parses(inv: cl.Invocation) -> None:
    error = cl.problem(inv)
    assert error is None, error


# --- the extraction finds what is there --------------------------------------------------------


@pytest.mark.parametrize("source", [".github/workflows/release.yml",
                                    "templates/gitlab/release.gitlab-ci.yml"])
def test_release_pipelines_yield_every_release_command(source: str) -> None:
    found = subcommands(source)
    assert set(found) >= RELEASE_SUBCOMMANDS, (source, found)
    assert found["setup-qemu"] >= 1, (source, found)


def test_docs_and_examples_yield_their_commands() -> None:
    assert {"job", "merge", "run"} <= set(subcommands("README.md")), subcommands("README.md")
    assert subcommands("examples/hello/README.md")["run"] >= 5
    assert {"version", "setup-qemu"} <= set(subcommands(".github/actions/setup-maci/action.yml"))
    assert subcommands(".github/workflows/ci.yml")["plan"] >= 1
    assert len(INVOCATIONS) >= 35, len(INVOCATIONS)


def test_example_script_is_the_wrapper_it_is_read_as() -> None:
    # README lines `scripts/example.sh ARGS` are checked as `ci run release ARGS`: because the
    # script ends in exactly that.
    [inv] = cl.extract(cl.ROOT / "scripts" / "example.sh", "shell")
    assert inv.argv == cl.WRAPPERS["scripts/example.sh"]
    assert inv.text.endswith('ci run release "$@"'), inv.text


def test_pipeline_modules_take_ci_run_release_options(monkeypatch: pytest.MonkeyPatch) -> None:
    # `python -m pipelines.X ARGS` is checked as `ci run release ARGS`: what run_main hands main.
    import ci.cli

    seen: list[list[str]] = []

    def main(argv: list[str] | None = None) -> int:
        seen.append(list(argv or []))
        return 0

    monkeypatch.setattr(ci.cli, "main", main)
    ci.cli.run_main(lambda run: 0, ["--dry-run", "--json"])
    assert seen == [["run", "release", "--dry-run", "--json"]]
    assert cl.ci_argv(["python", "-m", "pipelines.nightly", "--dry-run", "--json"]) == tuple(seen[0])


# --- the checker fails what it must -------------------------------------------------------------


@pytest.mark.parametrize(("argv", "needle"), [
    (["deploy", "--index-digest", "sha256:x"], "--index-digest"),
    (["job"], "--platform"),
    (["job", "--config", "ci.toml"], "--platform"),
    (["merge", "--json"], "files"),
    (["promote"], "--model-version"),
    (["deplyo", "--index", "sha256:x"], "deplyo"),
    (["run", "release", "extra"], "extra"),
    (["--json", "plan"], "--json"),
    (["job", "--platform"], "--platform"),
])
def test_checker_rejects(argv: list[str], needle: str) -> None:
    error = cl.check(argv)
    assert error is not None and needle in error, (argv, error)


@pytest.mark.parametrize("argv", [
    ["job", "--platform", "linux/amd64", "-o", "r.json"],
    ["job", "--help"],  # help wins over the missing --platform, as in click
    ["--help"],
    ["deploy", "--index", "sha256:x", "--model-version", "3", "--dry-run", "--json"],
    ["merge", "a.json", "b.json", "--model-result", "gate.json"],
])
def test_checker_accepts(argv: list[str]) -> None:
    assert cl.check(argv) is None


def test_checking_runs_no_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import ci.cli

    def boom(*_: object) -> None:
        raise AssertionError("the command body ran")

    monkeypatch.setattr(ci.cli, "_load", boom)
    assert cl.check(["plan", "--json"]) is None
    assert cl.check(["train", "--config", "ci.toml"]) is None


def test_a_bad_line_is_reported_with_file_line_and_text(tmp_path: Path) -> None:
    template = tmp_path / "t.gitlab-ci.yml"
    template.write_text(textwrap.dedent("""\
        spec:
          inputs:
            config: {default: ci.toml}
        ---
        .base:
          before_script: [python3 -m pip install multiarch-ci]
        deploy:
          before_script:
            - !reference [.base, before_script]
          script:
            - echo "ci deploy --not-run"   # words of echo, not a command
            - >-
              ci deploy --config "$[[ inputs.config ]]"
              --index-digest "$INDEX_DIGEST" ${MODEL_VERSION:+--model-version "$MODEL_VERSION"}
            - ci job
        """))
    found = cl.extract(template, "gitlab", tmp_path)
    assert [(i.line, i.argv[0]) for i in found] == [(13, "deploy"), (15, "job")]
    problems = [p for p in map(cl.problem, found) if p]
    assert len(problems) == 2
    assert problems[0].startswith("t.gitlab-ci.yml:13: ci deploy --config")
    assert "No such option: --index-digest" in problems[0]
    assert problems[1].startswith("t.gitlab-ci.yml:15: ci job") and "--platform" in problems[1]


def test_an_unsplittable_ci_line_is_reported_not_skipped() -> None:
    [inv] = cl.from_shell("ci plan --json 'unclosed", "t.sh")
    report = cl.problem(inv)
    assert report is not None and report.startswith("t.sh:1: ") and "cannot split" in report


# --- the shell reader ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ('ci job --config "$C" --platform "$P" \\\n  ${MODEL_VERSION:+--model-version "$MV"}',
     [("job", "--config", "X", "--platform", "X", "--model-version", "X")]),
    ('sudo "$(command -v ci)" setup-qemu --platform "$P"', [("setup-qemu", "--platform", "X")]),
    ("kind=$( (ci plan --json -p \"$P\" || true) | python3 -c 'import sys; ci = 1')",
     [("plan", "--json", "-p", "X")]),
    ("ci plan --json > plan.json 2>&1 || true", [("plan", "--json")]),
    ('ci plan --json >"$OUT" 2>/dev/null; rc=$?', [("plan", "--json")]),
    ("if [ -n \"$V\" ]; then ci promote --model-version \"$V\"; fi",
     [("promote", "--model-version", "X")]),
    ("for p in a b; do ci job -p \"$p\" & done; wait", [("job", "-p", "X")]),
    ("python3 - <<'EOF'\nci deploy --bogus\nEOF\nci version", [("version",)]),
    ("# ci deploy --bogus\necho \"ci deploy --bogus\"; command -v ci", []),
    ('exec ../../.venv/bin/ci run release "$@"', [("run", "release")]),
    ("ci plan -c ${{ inputs.config }} -c $[[ inputs.config ]] -c ${CFG:-ci.toml}",
     [("plan", "-c", "X", "-c", "X", "-c", "X")]),
    ("MACI_X='{\"a\": 1}' ci train --json", [("train", "--json")]),
    ("python -m ci version && python -m pipelines.nightly --dry-run",
     [("version",), ("run", "release", "--dry-run")]),
    ("dagger run python -m pipelines.release --json", [("run", "release", "--json")]),
    ("bash scripts/example.sh -p linux/amd64", [("run", "release", "-p", "linux/amd64")]),
    ("ruff check ci tests; pip install ci", []),
])
def test_shell_reader(text: str, expected: list[tuple[str, ...]]) -> None:
    assert [inv.argv for inv in cl.from_shell(text, "t.sh")] == expected


def test_github_reads_posix_run_steps_only(tmp_path: Path) -> None:
    workflow = tmp_path / "w.yml"
    workflow.write_text(textwrap.dedent("""\
        on: push
        jobs:
          a:
            runs-on: ubuntu-24.04
            steps:
              - run: ci plan --json
              - shell: python
                run: |
                  import subprocess  # ci deploy --bogus
              - run: |
                  set -e
                  ci merge --config "${{ inputs.config }}" results/*.json
        """))
    found = cl.extract(workflow, "github", tmp_path)
    assert [(i.source, i.line, i.argv) for i in found] == [
        ("w.yml", 6, ("plan", "--json")),
        ("w.yml", 12, ("merge", "--config", "X", "results/*.json")),
    ]


def test_markdown_reads_shell_fences_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(textwrap.dedent("""\
        Run `ci job` per platform.

        ```python
        subprocess.run(["ci", "deploy", "--bogus"])
        ```

        ```console
        $ ci plan --json
        {"ci deploy --bogus": 1}
        ```

        ```
        ci version
        ```
        """))
    found = cl.extract(readme, "markdown", tmp_path)
    assert [(i.line, i.argv) for i in found] == [(8, ("plan", "--json")), (13, ("version",))]
