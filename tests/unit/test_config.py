import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ci.core import config as cfg
from ci.core.errors import ConfigError

MINIMAL = """
[project]
name = "svc"
image = "127.0.0.1:5000/team/svc"
"""

EXAMPLE = Path(__file__).parents[2] / "examples" / "wine" / "ci.toml"


def test_minimal_config_gets_defaults() -> None:
    c = cfg.loads(MINIMAL, root="/srv/app")
    assert c.project.platforms == ["linux/amd64"]
    assert c.emulation.fallback == "qemu"
    assert c.runners == []
    assert c.tracking_uri() == "sqlite:////srv/app/.maci/mlflow.db"
    assert c.publish.tags == ["sha-{sha}", "{branch}", "{semver}"]


def test_example_config_is_valid() -> None:
    c = cfg.load(EXAMPLE, {}, EXAMPLE.parent)
    assert [str(p) for p in c.platforms] == ["linux/amd64", "linux/arm64"]
    assert c.model is not None and c.model.thresholds["accuracy"].greater_is_better
    assert c.root_path == EXAMPLE.parent


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg.loads(text, source="ci.toml", environ=environ)
    return info.value.lines()


def test_misspelled_key_is_one_line_naming_it() -> None:
    lines = problems(MINIMAL + '\n[biuld]\ncontext = "."\n')
    assert lines == ["config error: ci.toml: biuld = {'context': '.'}: unknown key"]


def test_nested_unknown_key_has_dotted_path() -> None:
    lines = problems(MINIMAL + '\n[emulation]\nfalback = "qemu"\n')
    assert lines == ["config error: ci.toml: emulation.falback = 'qemu': unknown key"]


def test_bad_platform_names_index_and_value() -> None:
    text = MINIMAL.replace('"team/svc"', '"team/svc"') + 'platforms = ["linux/amd64"]\n'
    bad = MINIMAL.replace("[project]\n", '[project]\nplatforms = ["linux/amd64", "linux/arm65"]\n')
    lines = problems(bad)
    assert len(lines) == 1
    assert "project.platforms[1] = 'linux/arm65'" in lines[0]
    assert "unknown architecture 'arm65'" in lines[0]
    assert cfg.loads(text).project.platforms == ["linux/amd64"]


def test_every_problem_gets_its_own_line() -> None:
    text = """
[project]
name = "svc"
image = "Bad Image"

[emulation]
fallback = "maybe"

[[runners]]
name = "a"
capacity = 0
"""
    lines = problems(text)
    assert len(lines) == 3
    joined = "\n".join(lines)
    assert "project.image = 'Bad Image'" in joined
    assert "emulation.fallback = 'maybe'" in joined
    assert "runners[0].capacity = 0" in joined


def test_missing_required_field_named() -> None:
    assert problems('[project]\nname = "x"\n') == [
        "config error: ci.toml: project.image: Field required"
    ]


def test_toml_syntax_error_is_one_line() -> None:
    lines = problems("[project\nname=1")
    assert len(lines) == 1 and "invalid TOML" in lines[0]


def test_image_with_tag_is_rejected() -> None:
    lines = problems(MINIMAL.replace("team/svc", "team/svc:1.0"))
    assert "without a tag" in lines[0]


def test_threshold_needs_a_bound() -> None:
    text = MINIMAL + """
[model]
train_command = "python train.py"
registered_model = "m"
[model.thresholds.accuracy]
greater_is_better = true
"""
    lines = problems(text)
    assert "model.thresholds.accuracy" in lines[0] and "at least one" in lines[0]


def test_string_command_is_split() -> None:
    text = MINIMAL + '[model]\ntrain_command = "python train.py --fast"\nregistered_model = "m"\n'
    c = cfg.loads(text)
    assert c.model is not None and c.model.train_command == ["python", "train.py", "--fast"]


def test_env_overrides_use_maci_prefix() -> None:
    env = {
        "MACI_EMULATION__FALLBACK": "fail",
        "MACI_PROJECT__PLATFORMS": "linux/arm64,linux/amd64",
        "MACI_MLFLOW__TRACKING_URI": "http://127.0.0.1:5001",
        "MACI_SMOKE__REQUESTS": "10",
        "MACI_CACHE_DIR": "/var/cache/x",  # a tool setting, not config: ignored
        "CI_EMULATION__FALLBACK": "qemu",  # GitLab's namespace: never read
    }
    c = cfg.loads(MINIMAL, environ=env)
    assert c.emulation.fallback == "fail"
    assert c.project.platforms == ["linux/arm64", "linux/amd64"]
    assert c.tracking_uri() == "http://127.0.0.1:5001"
    assert c.smoke is not None and c.smoke.requests == 10


def test_env_override_errors_name_the_field() -> None:
    lines = problems(MINIMAL, {"MACI_EMULATION__FALBACK": "qemu"})
    assert lines == ["config error: ci.toml: emulation.falback = 'qemu': unknown key"]


def test_pyproject_tool_ci_table(tmp_path: Path) -> None:
    body = MINIMAL.replace("[project]", "[tool.ci.project]")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "pkg"\n' + body)
    sub = tmp_path / "src"
    sub.mkdir()
    c = cfg.load(None, {}, sub)
    assert c.project.name == "svc"
    assert c.root_path == tmp_path


def test_no_config_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no ci\.toml found"):
        cfg.load(None, {}, tmp_path)


def test_duplicate_runner_names() -> None:
    text = MINIMAL + '[[runners]]\nname = "a"\n[[runners]]\nname = "a"\n'
    assert "repeated: a" in problems(text)[0]


def test_bad_webhook_and_tag_template() -> None:
    text = MINIMAL + '[notify]\nwebhooks = ["ftp://x"]\n[publish]\ntags = ["{sah}"]\n'
    joined = "\n".join(problems(text))
    assert "notify.webhooks" in joined and "publish.tags" in joined and "{sah}" in joined


toml_scalars = st.one_of(
    st.text(max_size=12), st.integers(-5, 70000), st.floats(allow_nan=False), st.booleans()
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=3),
    max_leaves=8,
)
sections = st.sampled_from(
    ["project", "runners", "emulation", "build", "test", "model", "publish", "deploy", "smoke",
     "notify", "mlflow", "sign", "root", "bogus"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(sections, toml_values, max_size=6))
def test_fuzzed_structures_never_crash(data: dict[str, object]) -> None:
    try:
        cfg.validate(data)
    except ConfigError as exc:
        assert exc.lines() and all(line.startswith("config error:") for line in exc.lines())
        assert all("\n" not in line for line in exc.lines())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_text_never_crashes(text: str) -> None:
    try:
        cfg.loads(text)
    except ConfigError as exc:
        assert exc.lines()


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=30).map(lambda s: "MACI_" + s),
                       st.text(max_size=20), max_size=5))
def test_fuzzed_environment_never_crashes(environ: dict[str, str]) -> None:
    try:
        c = cfg.loads(MINIMAL, environ=environ)
        json.dumps(c.model_dump(mode="json"))
    except ConfigError as exc:
        assert exc.lines()


MODEL = MINIMAL + '\n[model]\ntrain_command = "python train.py"\nregistered_model = "m"\n'


def test_the_model_artifact_defaults_keep_the_example_working() -> None:
    art = cfg.loads(MODEL).model.artifact  # type: ignore[union-attr]
    assert (art.source, art.artifact_path, art.dest) == ("run", "serving/model.json", "model")
    assert art.describe() == "run:serving/model.json"
    wine = cfg.load(EXAMPLE, {}, EXAMPLE.parent).model
    assert wine is not None and wine.artifact.describe() == "run:serving/model.json"


def test_the_mlflow_model_directory_is_the_whole_model_by_default() -> None:
    art = cfg.loads(MODEL + '[model.artifact]\nsource = "model"\n').model.artifact  # type: ignore[union-attr]
    assert art.artifact_path == "" and art.describe() == "model:"


@pytest.mark.parametrize("dest", ["../model", "/srv/model", "a/../../b", ".", "./"])
def test_an_artifact_dest_outside_the_build_context_is_a_config_error(dest: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.loads(MODEL + f'[model.artifact]\ndest = "{dest}"\n')
    (problem,) = info.value.problems
    assert (problem.path, problem.value) == ("model.artifact.dest", dest)
    assert "build.context" in problem.reason
    assert info.value.exit_code == 2


@pytest.mark.parametrize("path", ["../secrets.txt", "/etc/passwd"])
def test_an_artifact_path_must_stay_in_the_runs_artifacts(path: str) -> None:
    lines = problems(MODEL + f'[model.artifact]\npath = "{path}"\n')
    assert len(lines) == 1 and "model.artifact.path" in lines[0]


def test_a_run_artifact_needs_a_path() -> None:
    lines = problems(MODEL + '[model.artifact]\npath = ""\n')
    assert len(lines) == 1 and "needs a path" in lines[0]


def test_the_artifact_dest_can_be_overridden_from_the_environment() -> None:
    c = cfg.loads(MODEL, environ={"MACI_MODEL__ARTIFACT__DEST": "build/model/"})
    assert c.model is not None and c.model.artifact.dest == "build/model"


def test_model_inputs_accept_env_and_glob_entries() -> None:
    c = cfg.loads(MODEL.replace('registered_model = "m"\n', 'registered_model = "m"\n'
                  'inputs = ["train.py", "data/*.csv", "env:FEATURES", "pkg:scikit-learn"]\n'))
    assert c.model is not None and c.model.inputs[2] == "env:FEATURES"
