"""ci.core.manifests: image/digest/model-version edits on manifest text, byte-preserving where possible."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from ci.core.manifests import (
    Edit,
    ManifestError,
    Target,
    normalize_repo,
    refers_to,
    same_repo,
    split_ref,
    update_manifest,
)

DATA = Path(__file__).parent.parent / "data" / "manifests"
REPO = "127.0.0.1:5000/examples/wine"
D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def target(**kw: object) -> Target:
    args: dict[str, object] = {"repository": REPO, "digest": D1, "tag": "sha-abc1234", "model_version": "7"}
    args.update(kw)
    return Target(**args)  # type: ignore[arg-type]


def fixture(name: str) -> str:
    return (DATA / name).read_text()


def diff(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) between two texts."""
    removed, added = [], []
    for line in difflib.ndiff(old.splitlines(), new.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


def load_all(text: str, version: tuple[int, int] = (1, 2)) -> list[object]:
    yaml = YAML(typ="safe", pure=True)
    yaml.version = version
    return list(yaml.load_all(text))


# ---------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("wine", ("wine", None, None)),
        ("wine:1", ("wine", "1", None)),
        ("127.0.0.1:5000/examples/wine", ("127.0.0.1:5000/examples/wine", None, None)),
        ("127.0.0.1:5000/examples/wine:v1", ("127.0.0.1:5000/examples/wine", "v1", None)),
        (f"127.0.0.1:5000/examples/wine@{D1}", ("127.0.0.1:5000/examples/wine", None, D1)),
        (f"localhost:5000/wine:v1@{D1}", ("localhost:5000/wine", "v1", D1)),
    ],
)
def test_split_ref_does_not_mistake_a_registry_port_for_a_tag(
    ref: str, expected: tuple[str, str | None, str | None]
) -> None:
    assert split_ref(ref) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("wine", "docker.io/library/wine", True),
        ("library/wine", "index.docker.io/library/wine", True),
        ("team/wine", "docker.io/team/wine", True),
        ("127.0.0.1:5000/examples/wine", "127.0.0.1:5000/examples/wine", True),
        ("127.0.0.1:5000/examples/wine", "127.0.0.1/examples/wine", False),
        ("127.0.0.1:5000/examples/wine", "127.0.0.1:5001/examples/wine", False),
        ("127.0.0.1:5000/examples/wine", "127.0.0.1:5000/examples/wine-sidecar", False),
        ("localhost/wine", "docker.io/localhost/wine", False),
        ("ghcr.io/team/wine", "team/wine", False),
    ],
)
def test_same_repo_follows_docker_normalisation(a: str, b: str, same: bool) -> None:
    assert same_repo(a, b) is same
    assert normalize_repo(a).count("/") >= 1


def test_refers_to_accepts_tags_and_digests_of_the_repo_only() -> None:
    assert refers_to(f"{REPO}:latest", REPO)
    assert refers_to(f"{REPO}:v1@{D2}", REPO)
    assert not refers_to(f"{REPO}-sidecar:latest", REPO)
    assert not refers_to("127.0.0.1/examples/wine:latest", REPO)
    assert not refers_to("", REPO)
    assert not refers_to("some text with 127.0.0.1:5000/examples/wine", REPO)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"digest": "sha256:abc"}, "digest"),
        ({"digest": "a" * 64}, "digest"),
        ({"tag": "bad tag"}, "tag"),
        ({"repository": f"{REPO}:v1"}, "repository"),
        ({"repository": f"{REPO}@{D1}"}, "repository"),
    ],
)
def test_target_rejects_bad_values_with_the_field_named(kw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        target(**kw)


def test_target_image_keeps_the_tag_only_when_asked() -> None:
    assert target().image == f"{REPO}:sha-abc1234@{D1}"
    assert target(keep_tag=False).image == f"{REPO}@{D1}"
    assert target(tag=None).image == f"{REPO}@{D1}"


# ---------------------------------------------------------------- kustomization


def test_kustomization_keep_tag_sets_tag_and_adds_digest_touching_nothing_else() -> None:
    text = fixture("kustomization.yaml")
    edit = update_manifest(text, target(), file="k8s/kustomization.yaml")
    removed, added = diff(text, edit.text)
    assert removed == ['    newTag: "latest"   # replaced on deploy']
    assert added == ['    newTag: "sha-abc1234"   # replaced on deploy', f"    digest: {D1}"]
    assert [(c.path, c.old, c.new) for c in edit.changes] == [
        ("images[0].newTag", "latest", "sha-abc1234"),
        ("images[0].digest", None, D1),
    ]
    assert {c.file for c in edit.changes} == {"k8s/kustomization.yaml"}
    assert edit.matched == 1
    assert "# our service: CI sets digest (and the tag for humans)" in edit.text


def test_kustomization_without_keep_tag_turns_the_stale_tag_into_the_digest() -> None:
    text = fixture("kustomization.yaml")
    edit = update_manifest(text, target(keep_tag=False), file="kustomization.yaml")
    removed, added = diff(text, edit.text)
    assert removed == ['    newTag: "latest"   # replaced on deploy']
    assert added == [f'    digest: "{D1}"   # replaced on deploy']
    data = load_all(edit.text)[0]
    assert isinstance(data, dict)
    assert data["images"][0] == {"name": REPO, "digest": D1}
    assert data["images"][1] == {"name": f"{REPO}-sidecar", "newTag": "1.2"}


def test_kustomization_drops_a_stale_tag_next_to_an_existing_digest() -> None:
    text = f"images:\n- name: {REPO}\n  newTag: old   # stale\n  digest: {D2}\n"
    edit = update_manifest(text, target(tag=None), file="kustomization.yaml")
    assert edit.text == f"images:\n- name: {REPO}\n  digest: {D1}\n"
    assert [(c.path, c.new) for c in edit.changes] == [("images[0].newTag", None), ("images[0].digest", D1)]


def test_kustomization_matches_a_placeholder_name_through_new_name() -> None:
    text = f"kind: Kustomization\nimages:\n  - name: wine\n    newName: {REPO}  # real repo\n    newTag: v0\n"
    edit = update_manifest(text, target(), file="kustomization.yaml")
    assert edit.text == (
        f"kind: Kustomization\nimages:\n  - name: wine\n    newName: {REPO}  # real repo\n"
        f"    newTag: sha-abc1234\n    digest: {D1}\n"
    )


def test_kustomization_redirecting_our_name_elsewhere_gets_new_name_set() -> None:
    text = f"kind: Kustomization\nimages:\n  - name: {REPO}\n    newName: other.io/x\n    digest: {D2}\n"
    edit = update_manifest(text, target(tag=None), file="kustomization.yaml")
    assert f"    newName: {REPO}\n    digest: {D1}\n" in edit.text
    assert [c.path for c in edit.changes] == ["images[0].newName", "images[0].digest"]


def test_kustomization_without_kind_is_recognised_by_file_name_only() -> None:
    text = f"images:\n- name: {REPO}\n  newTag: v1\n"
    assert update_manifest(text, target(), file="overlays/prod/kustomization.yml").changed
    other = update_manifest(text, target(), file="values.yaml")
    assert not other.changed and other.text == text and other.matched == 0


def test_kustomization_in_flow_style_falls_back_to_ruamel_round_trip() -> None:
    text = f"# header comment\nkind: Kustomization\nimages: [{{name: {REPO}, newTag: v1}}]  # flow\n"
    edit = update_manifest(text, target(), file="kustomization.yaml")
    assert edit.text.startswith("# header comment\nkind: Kustomization\n")
    assert "# flow" in edit.text
    data = load_all(edit.text)[0]
    assert isinstance(data, dict)
    assert data["images"] == [{"name": REPO, "newTag": "sha-abc1234", "digest": D1}]


def test_deleting_a_first_key_of_a_sequence_item_falls_back_and_stays_valid() -> None:
    text = f"kind: Kustomization\nimages:\n  - newTag: v1  # tag first\n    name: {REPO}\n    digest: {D2}\n"
    edit = update_manifest(text, target(tag=None), file="kustomization.yaml")
    data = load_all(edit.text)[0]
    assert isinstance(data, dict)
    assert data["images"] == [{"name": REPO, "digest": D1}]


# ---------------------------------------------------------------- workloads


def test_multi_document_workloads_change_only_our_image_lines() -> None:
    text = fixture("deployment.yaml")
    edit = update_manifest(text, target(), file="deployment.yaml")
    new = f"{REPO}:sha-abc1234@{D1}"
    removed, added = diff(text, edit.text)
    assert removed == [
        f"        image: {REPO}:latest  # same image, warm-up entrypoint",
        f'        image: "{REPO}:latest"',
        f"              image: {REPO}@sha256:{'0' * 64}",
    ]
    assert added == [
        f"        image: {new}  # same image, warm-up entrypoint",
        f'        image: "{new}"',
        f"              image: {new}",
    ]
    assert [(c.document, c.resource, c.path) for c in edit.changes] == [
        (0, "Deployment/wine", "spec.template.spec.initContainers[0].image"),
        (0, "Deployment/wine", "spec.template.spec.containers[0].image"),
        (2, "CronJob/wine-retrain", "spec.jobTemplate.spec.template.spec.containers[0].image"),
    ]
    assert edit.matched == 3
    assert len(load_all(edit.text)) == 3


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet", "ReplicaSet", "Job"])
def test_every_pod_template_workload_is_updated(kind: str) -> None:
    text = f"kind: {kind}\nspec:\n  template:\n    spec:\n      containers:\n      - image: {REPO}:x\n"
    edit = update_manifest(text, target(tag=None))
    assert edit.text.endswith(f"- image: {REPO}@{D1}\n")


def test_pod_and_unknown_kinds() -> None:
    pod = f"kind: Pod\nspec:\n  containers:\n  - image: {REPO}\n"
    expected = f"kind: Pod\nspec:\n  containers:\n  - image: {REPO}@{D1}\n"
    assert update_manifest(pod, target(tag=None)).text == expected
    cm = f"kind: ConfigMap\ndata:\n  image: {REPO}:v1\n"
    assert update_manifest(cm, target()).text == cm


def test_anchored_image_falls_back_and_updates_the_alias_too() -> None:
    text = (
        "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n"
        f"      - name: a\n        image: &img {REPO}:v1  # anchored\n"
        "      - name: b\n        image: *img\n"
    )
    edit = update_manifest(text, target(tag=None))
    data = load_all(edit.text)[0]
    assert isinstance(data, dict)
    images = [c["image"] for c in data["spec"]["template"]["spec"]["containers"]]
    assert images == [f"{REPO}@{D1}", f"{REPO}@{D1}"]
    assert "# anchored" in edit.text


# ---------------------------------------------------------------- Argo Rollouts


def test_rollout_containers_and_every_analysis_arg() -> None:
    text = fixture("rollout.yaml")
    edit = update_manifest(text, target(), file="rollout.yaml")
    image = f"{REPO}:sha-abc1234@{D1}"
    removed, added = diff(text, edit.text)
    assert removed == [
        '            value: "1"          # the model version being rolled out',
        "                value: '1'",
        f"                value: {REPO}:latest",
        f"          image: {REPO}:latest",
    ]
    assert added == [
        '            value: "7"          # the model version being rolled out',
        "                value: '7'",
        f"                value: {image}",
        f"          image: {image}",
    ]
    assert edit.matched == 4
    paths = [c.path for c in edit.changes]
    assert "spec.strategy.canary.analysis.args[0].value" in paths
    assert "spec.strategy.canary.steps[1].analysis.args[0].value" in paths


def test_rollout_blue_green_and_experiment_analyses() -> None:
    text = (
        "kind: Rollout\nspec:\n  strategy:\n    blueGreen:\n      prePromotionAnalysis:\n"
        "        args:\n        - name: modelVersion\n          value: x\n"
        "    canary:\n      steps:\n      - experiment:\n          analyses:\n          - name: a\n"
        "            args:\n            - name: model_version\n              value: x\n"
    )
    edit = update_manifest(text, target())
    assert edit.text.count("value: '7'") + edit.text.count('value: "7"') == 2
    assert len(edit.changes) == 2


def test_model_version_never_becomes_a_number() -> None:
    text = "kind: AnalysisTemplate\nspec:\n  args:\n  - name: model-version\n    value: v1\n"
    edit = update_manifest(text, target(model_version="12"))
    assert edit.text.endswith('    value: "12"\n')
    data = load_all(edit.text)[0]
    assert isinstance(data, dict)
    assert data["spec"]["args"][0]["value"] == "12"


def test_analysis_template_default_gets_value_and_a_missing_value_is_added() -> None:
    text = fixture("analysis-template.yaml")
    edit = update_manifest(text, target(), file="analysis-template.yaml")
    removed, added = diff(text, edit.text)
    assert removed == ['      value: "1"   # default; the Rollout passes the real one']
    assert added == ['      value: "7"   # default; the Rollout passes the real one']
    bare = (
        "kind: AnalysisTemplate\nspec:\n  args:\n  - name: model-version  # no default\n  - name: service\n"
    )
    edit = update_manifest(bare, target())
    assert edit.text == (
        "kind: AnalysisTemplate\nspec:\n  args:\n  - name: model-version  # no default\n"
        '    value: "7"\n  - name: service\n'
    )
    assert edit.changes[0].old is None


def test_value_from_args_and_absent_model_version_are_left_alone() -> None:
    text = (
        "kind: ClusterAnalysisTemplate\nspec:\n  args:\n  - name: model-version\n"
        "    valueFrom:\n      secretKeyRef: {name: s, key: k}\n"
    )
    edit = update_manifest(text, target())
    assert edit.text == text and edit.matched == 1
    plain = "kind: AnalysisTemplate\nspec:\n  args:\n  - name: model-version\n    value: '1'\n"
    assert update_manifest(plain, target(model_version=None)).text == plain


# ---------------------------------------------------------------- text fidelity and errors


FIXTURES = ["kustomization.yaml", "deployment.yaml", "rollout.yaml", "analysis-template.yaml"]


@pytest.mark.parametrize("name", FIXTURES)
def test_comments_survive_and_second_run_is_a_byte_identical_no_op(name: str) -> None:
    text = fixture(name)
    first = update_manifest(text, target(), file=name)
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line and "{{" not in line]
    for comment in comments:
        assert comment.strip() in first.text
    second = update_manifest(first.text, target(), file=name)
    assert second.text == first.text
    assert second.changes == ()
    assert second.matched == first.matched > 0


def test_no_match_returns_the_very_same_text() -> None:
    text = "# only comments\n---\nkind: Service  # x\nmetadata: {name: s}\n---\n"
    edit = update_manifest(text, target())
    assert edit == Edit(text, (), 0)
    assert edit.text is text


def test_a_file_without_trailing_newline_and_crlf_files_stay_consistent() -> None:
    text = f"kind: Kustomization\nimages:\n- name: {REPO}\n  newTag: v1"
    edit = update_manifest(text, target())
    assert edit.text == f"kind: Kustomization\nimages:\n- name: {REPO}\n  newTag: sha-abc1234\n  digest: {D1}"
    crlf = text.replace("\n", "\r\n") + "\r\n"
    edit = update_manifest(crlf, target())
    assert "\r\n" in edit.text and not re.search(r"[^\r]\n", edit.text)


def test_invalid_yaml_names_file_and_line() -> None:
    text = "kind: Deployment\n---\nkind: Pod\nspec: [unclosed\n"
    with pytest.raises(ManifestError, match=r"k8s/bad\.yaml: not valid YAML \(line \d+\)"):
        update_manifest(text, target(), file="k8s/bad.yaml")


def test_change_line_is_readable() -> None:
    edit = update_manifest(fixture("rollout.yaml"), target(), file="k8s/rollout.yaml")
    line = edit.changes[-1].line()
    assert line == (
        f"k8s/rollout.yaml: Rollout/wine spec.template.spec.containers[0].image: {REPO}:latest -> "
        f"{REPO}:sha-abc1234@{D1}"
    )


TRICKY = ["1.0", "true", "null", "0x1F", "1e3", "v-2", "a b", "on", "yes", "1:20", "2024-01-01", "'q'"]


@settings(max_examples=40, deadline=None)
@given(
    version=st.one_of(
        st.integers(0, 10**6).map(str), st.text("abcv0123456789.-_:", min_size=1, max_size=8),
        st.sampled_from(TRICKY)
    ),
    digest=st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    keep=st.booleans(),
)
def test_property_values_read_back_exactly_and_edits_are_idempotent(
    version: str, digest: str, keep: bool
) -> None:
    t = target(model_version=version, digest=digest, keep_tag=keep)
    text = fixture("rollout.yaml") + "---\n" + fixture("analysis-template.yaml")
    once = update_manifest(text, t)
    rollout, template = load_all(once.text)
    assert isinstance(rollout, dict) and isinstance(template, dict)
    assert rollout["spec"]["strategy"]["canary"]["analysis"]["args"][0]["value"] == version
    assert template["spec"]["args"][0]["value"] == version
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"] == t.image
    legacy = load_all(once.text, (1, 1))[1]  # how Kubernetes' YAML 1.1 parser reads it
    assert isinstance(legacy, dict) and legacy["spec"]["args"][0]["value"] == version
    assert update_manifest(once.text, t).text == once.text


def test_a_fallback_re_dump_is_confined_to_its_own_document() -> None:
    odd = "kind: Service   # odd spacing kept\nspec:\n    ports:\n    -   port: 80\n"
    flow = f"---\n# flow style forces ruamel's dumper here\nkind: Kustomization\nimages: [{{name: {REPO}}}]\n"
    text = odd + flow + "---\n" + odd
    edit = update_manifest(text, target(tag=None))
    first, rest = edit.text.split("---\n", 1)
    assert first == odd and rest.endswith("---\n" + odd)
    assert rest.startswith("# flow style forces ruamel's dumper here\nkind: Kustomization\n")
    assert load_all(edit.text)[1] == {"kind": "Kustomization", "images": [{"name": REPO, "digest": D1}]}
