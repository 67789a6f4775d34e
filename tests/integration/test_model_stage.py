"""The model stage on a REAL MLflow server (and once on the embedded sqlite store).

Each test uses its own registered model name; runs live in one experiment, so identical
inputs are reused across tests (that is the feature, and it keeps the suite fast).
Outcomes are checked with a plain MlflowClient, independent of our adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.adapters import tracking
from ci.core import config as cfg
from ci.core.config import Config
from ci.core.errors import GateFailed, StepFailed, TrackingError
from ci.core.results import SourceInfo
from ci.stages.model import materialize_model, promote, train_and_gate
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.procs import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

WINE = Path(__file__).resolve().parents[2] / "examples" / "wine"
SOURCE = SourceInfo(sha="5" * 40, branch="main", run_id="ci-42", run_url="http://ci.local/42",
                    repository_url="https://git.local/wine.git", provider="local")
BASE = {"C": 1.0, "max_iter": 500, "seed": 7, "features": 0}  # accuracy 0.963
BETTER = {**BASE, "C": 0.01}  # accuracy 1.0
WORSE = {**BASE, "features": 2}  # accuracy 0.722: below the 0.85 floor too


@pytest.fixture(scope="session")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/wine, so state dirs and model/ never land in the repository."""
    dest = tmp_path_factory.mktemp("example") / "wine"
    shutil.copytree(WINE, dest, ignore=shutil.ignore_patterns(".maci", "model", "__pycache__"))
    return dest


def make_config(root: Path, *, uri: str | None, name: str, params: dict[str, Any] | None = None,
                experiment: str = "wine-it", **model: Any) -> Config:
    source = str(root / "ci.toml")
    data = cfg.extract(cfg.parse_toml((root / "ci.toml").read_text(), source), source)
    data["model"] = {**data["model"], "registered_model": name, "experiment": experiment,
                     "params": params or BASE, **model}
    if uri:
        data["mlflow"] = {"tracking_uri": uri}
    return cfg.validate(data, source, str(root))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(mlflow_server: MlflowServer) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)


def alias_version(client: Any, name: str, alias: str = "champion") -> str | None:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}.get(alias)


def stage(conf: Config, run: str = "p1") -> Any:
    return train_and_gate(conf, SOURCE, run, environ=dict(os.environ))


def test_first_model_is_registered_against_absolute_thresholds_only(
    wine: Path, mlflow_server: MlflowServer, client: Any
) -> None:
    name = unique("first")
    result = stage(make_config(wine, uri=mlflow_server.uri, name=name))

    d = result.decision
    assert d.passed and not d.compared_with_champion and d.champion_version is None
    assert d.metrics["accuracy"] == pytest.approx(0.963, abs=1e-3)
    assert any("no model has alias 'champion'" in n for n in d.notes)
    assert result.version == "1" and result.new_version
    assert result.model_uri == f"models:/{name}/1"

    run = client.get_run(result.training.run_id)
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags["maci.gate"] == "passed"
    assert tags["maci.input_hash"] == result.training.input_hash
    assert tags["maci.git.sha"] == tags["mlflow.source.git.commit"] == SOURCE.sha
    assert tags["maci.ci.run_url"] == SOURCE.run_url
    assert tags["maci.train.python"].count(".") == 2
    assert params["C"] == "1.0" and params["n_features"] == "13"
    assert set(run.data.metrics) >= {"accuracy", "f1_macro"}
    assert run.outputs.model_outputs, "the script logged an MLflow model"

    version = client.get_model_version(name, "1")
    assert version.run_id == result.training.run_id
    assert version.tags["maci.gate"] == "passed"
    assert version.tags["maci.source_sha"] == SOURCE.sha
    assert version.tags["maci.input_hash"] == result.training.input_hash
    assert alias_version(client, name) is None, "train_and_gate never moves the alias"


def test_promote_moves_the_alias_and_records_the_deploy_commit(
    wine: Path, mlflow_server: MlflowServer, client: Any
) -> None:
    name = unique("promote")
    conf = make_config(wine, uri=mlflow_server.uri, name=name)
    better = make_config(wine, uri=mlflow_server.uri, name=name, params=BETTER)
    result = stage(conf)
    rival = stage(better, "p2")  # gated while there was no champion either
    assert (result.version, rival.version) == ("1", "2")

    promoted = promote(conf, result.version, "c0ffee" * 6 + "abcd")
    assert promoted.previous_version is None and promoted.changed
    assert alias_version(client, name) == "1"
    tags = client.get_model_version(name, "1").tags
    assert tags["maci.deploy_commit"] == "c0ffee" * 6 + "abcd"
    assert tags["maci.promoted_at"]
    again = promote(conf, "1", "c0ffee" * 6 + "abcd")
    assert not again.changed and again.previous_version == "1"

    # Version 2 was gated before version 1 became champion: it must be gated again first.
    with pytest.raises(GateFailed, match="moved to version 1 after version 2 was gated against"):
        promote(better, "2", "e" * 40)
    assert alias_version(client, name) == "1"
    regated = stage(better, "p3")
    assert regated.training.reused and regated.version == "2" and not regated.new_version
    assert regated.decision.champion_version == "1"
    moved = promote(better, "2", "e" * 40)
    assert moved.previous_version == "1" and alias_version(client, name) == "2"
    assert client.get_model_version(name, "2").tags["maci.previous_version"] == "1"

    # A version registered without our gate's tag (by hand, here) is never promoted.
    rogue = tracking.connect(conf).register(name, result.training.run_id, {"origin": "manual"})
    with pytest.raises(GateFailed, match="did not pass the gate"):
        promote(conf, rogue.version, "f" * 40)
    assert alias_version(client, name) == "2"


def test_better_model_passes_against_the_champion(
    wine: Path, mlflow_server: MlflowServer, client: Any
) -> None:
    name = unique("better")
    champion = stage(make_config(wine, uri=mlflow_server.uri, name=name))
    promote(make_config(wine, uri=mlflow_server.uri, name=name), champion.version, "a" * 40)

    result = stage(make_config(wine, uri=mlflow_server.uri, name=name, params=BETTER), "p2")
    d = result.decision
    assert d.passed and d.compared_with_champion and d.champion_version == "1"
    assert d.deltas["accuracy"] == pytest.approx(1.0 - 0.963, abs=1e-3)
    assert result.version == "2" and result.new_version
    assert client.get_model_version(name, "2").tags["maci.gate.champion_version"] == "1"
    assert alias_version(client, name) == "1", "the alias waits for the release"


def test_worse_model_is_rejected_with_the_reason_and_the_alias_untouched(
    wine: Path, mlflow_server: MlflowServer, client: Any
) -> None:
    name = unique("worse")
    conf = make_config(wine, uri=mlflow_server.uri, name=name, params=BETTER)
    champion = stage(conf)
    promote(conf, champion.version, "b" * 40)

    # Still above the absolute floor, but worse than the champion (0.963 < 1.0).
    slightly = stage(make_config(wine, uri=mlflow_server.uri, name=name, params=BASE), "p2")
    assert not slightly.decision.passed and slightly.version is None
    (reason,) = slightly.decision.reasons
    assert "accuracy minimum relative change check failed" in reason
    assert "baseline model accuracy = 1.0" in reason

    # The degrading config (2 features) fails the floor and the comparison.
    worse = stage(make_config(wine, uri=mlflow_server.uri, name=name, params=WORSE), "p3")
    assert not worse.decision.passed
    text = " ".join(worse.decision.reasons)
    assert "accuracy value threshold check failed" in text
    assert "f1_macro value threshold check failed" in text
    run_tags = client.get_run(worse.training.run_id).data.tags
    assert run_tags["maci.gate"] == "failed"
    assert "threshold check failed" in run_tags["maci.gate.reasons"]

    versions = client.search_model_versions(f"name = '{name}'")
    assert [str(v.version) for v in versions] == ["1"], "rejected candidates are not registered"
    assert alias_version(client, name) == "1"


def test_rerun_unchanged_reuses_the_run_without_training(
    wine: Path, mlflow_server: MlflowServer, client: Any
) -> None:
    name = unique("rerun")
    conf = make_config(wine, uri=mlflow_server.uri, name=name, params={**BASE, "seed": 11})
    first = stage(conf)
    assert not first.training.reused and first.training.script_seconds > 0

    second = stage(conf, "p2")
    assert second.training.reused
    assert second.training.run_id == first.training.run_id
    assert second.training.script_seconds == 0
    assert "reused run" in second.training.message and "no retraining" in second.training.message
    assert second.version == first.version and not second.new_version
    runs = client.search_runs(
        [first.training.experiment_id],
        f"tags.`maci.input_hash` = '{first.training.input_hash}'",
    )
    assert len(runs) == 1


def test_failed_training_marks_the_run_failed_and_keeps_the_output(
    wine: Path, mlflow_server: MlflowServer, client: Any
) -> None:
    name = unique("crash")
    conf = make_config(
        wine, uri=mlflow_server.uri, name=name,
        train_command=["python", "-c", "import sys; print('diverged', file=sys.stderr); sys.exit(3)"],
    )
    with pytest.raises(StepFailed) as err:
        stage(conf)
    assert err.value.returncode == 3
    assert "diverged" in err.value.stderr
    assert "diverged" in str(err.value)
    run_id = str(err.value).split(" in run ")[1].split(":")[0]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["maci.train.exit_code"] == "3"
    assert client.search_registered_models(f"name = '{name}'") == []


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server, a firewall)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("kind", ["refused", "hung"])
def test_unreachable_mlflow_fails_closed_quickly(
    wine: Path, mlflow_server: MlflowServer, client: Any, blackhole: int, kind: str
) -> None:
    port = free_port() if kind == "refused" else blackhole
    uri = f"http://127.0.0.1:{port}"
    name = unique("down")
    conf = make_config(wine, uri=uri, name=name, params={**BASE, "seed": 99})
    started = time.monotonic()
    with pytest.raises(TrackingError) as err:
        stage(conf)
    elapsed = time.monotonic() - started
    assert elapsed < 6, f"took {elapsed:.1f} s to give up"
    assert uri in str(err.value) and "unreachable" in str(err.value)
    assert not (wine / "mlruns").exists(), "the training script never ran"
    assert client.search_registered_models(f"name = '{name}'") == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "params.seed = '99'") == []


def test_materialize_puts_exactly_the_registered_version_in_the_build_context(
    wine: Path, mlflow_server: MlflowServer, client: Any, tmp_path: Path
) -> None:
    name = unique("image")
    conf = make_config(wine, uri=mlflow_server.uri, name=name)
    result = stage(conf)
    got = materialize_model(conf, result.version, tmp_path / "model")

    model = json.loads((tmp_path / "model" / "model.json").read_text())
    assert model["format"] == "maci-linear/1" and len(model["features"]) == 13
    registered = json.loads((tmp_path / "model" / "registered.json").read_text())
    assert registered["version"] == got.version == "1"
    assert registered["run_id"] == result.training.run_id
    original = client.download_artifacts(result.training.run_id, "serving/model.json",
                                         str(tmp_path))
    assert Path(original).read_bytes() == (tmp_path / "model" / "model.json").read_bytes()
    sha = hashlib.sha256(Path(original).read_bytes()).hexdigest()
    assert client.get_model_version(name, "1").tags["maci.model.sha256"] == sha == got.sha256
    assert got.build_args() == {"MODEL_NAME": name, "MODEL_VERSION": "1",
                                "MODEL_URI": f"models:/{name}/1", "MODEL_SHA256": sha}
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.json",
                                                                      "registered.json"]


def test_embedded_sqlite_store_works_without_a_server(wine: Path, tmp_path: Path) -> None:
    root = tmp_path / "wine"
    shutil.copytree(wine, root)
    conf = make_config(root, uri=None, name="wine-classifier", experiment="wine")
    assert conf.tracking_uri() == f"sqlite:///{root / '.maci' / 'mlflow.db'}"

    result = stage(conf)
    assert result.passed and result.version == "1"
    assert (root / ".maci" / "mlflow.db").is_file()
    assert any((root / ".maci" / "mlartifacts").rglob("MLmodel"))
    assert not (root / "mlruns").exists(), "artifacts stay in the state dir"

    assert promote(conf, "1", "d" * 40).version == "1"
    again = stage(conf, "p2")
    assert again.training.reused and again.decision.passed
    assert any("already champion" in n for n in again.decision.notes)
    got = materialize_model(conf, "1")
    assert Path(got.directory) == root / "model"
    assert (root / "model" / "model.json").is_file()


def test_ci_train_command_exit_codes_and_json(
    wine: Path, mlflow_server: MlflowServer, client: Any
) -> None:
    """The CLI: exit 0 and a registered version when the gate passes, 1 when it does not."""
    name = unique("cli")
    ci = Path(sys.executable).parent / "ci"
    text = (wine / "ci.toml").read_text().replace('"wine-classifier"', f'"{name}"')
    text = text.replace('experiment = "wine"', 'experiment = "wine-it"')
    (wine / f"{name}.toml").write_text(text + f'\n[mlflow]\ntracking_uri = "{mlflow_server.uri}"\n')
    env = {**os.environ, "MACI_RUN_ID": "cli-1"}

    ok = subprocess.run([str(ci), "train", "--config", f"{name}.toml", "--json"], cwd=wine,
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    body = json.loads(ok.stdout)
    assert body["ok"] and body["version"] == "1" and body["decision"]["passed"]

    table = subprocess.run([str(ci), "train", "--config", f"{name}.toml"], cwd=wine, env=env,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "reused run" in table.stdout and "already registered as" in table.stdout

    bad = env | {"MACI_MODEL__PARAMS": json.dumps(WORSE)}
    rejected = subprocess.run([str(ci), "train", "--config", f"{name}.toml"], cwd=wine, env=bad,
                              capture_output=True, text=True, timeout=120)
    assert rejected.returncode == 1, rejected.stderr
    assert "gate failed" in rejected.stdout and "threshold check failed" in rejected.stdout
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
