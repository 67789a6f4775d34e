"""The native clients that create the run before the training script (no `import mlflow`):
what they write must be what MLflow's own client reads back, on a REAL MLflow server and a
REAL embedded sqlite store, and MLflow's client takes over once the script starts."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from ci.adapters import mlflow_sqlite, tracking
from ci.adapters.mlflow_rest import RestPreflight
from ci.adapters.mlflow_sqlite import SqlitePreflight, artifact_uri, valid_key
from ci.core import config as cfg
from ci.core.errors import TrackingError
from tests.fixtures.mlflow_server import MlflowServer

pytestmark = pytest.mark.integration

TAGS = {"maci.input_hash": "ab" * 32, "maci.git.sha": "5" * 40, "mlflow.source.type": "JOB",
        "maci.train.command": json.dumps(["python", "train.py"])}
PARAMS = {"C": "1.0", "max_iter": "500", "note": "a b/c:d"}
ROOT = Path(__file__).resolve().parents[2]


def conf(tmp_path: Path, uri: str | None = None) -> cfg.Config:
    data: dict[str, Any] = {"project": {"name": "p", "image": "127.0.0.1:5000/p"},
                            "model": {"train_command": ["python", "t.py"], "registered_model": "m"}}
    if uri:
        data["mlflow"] = {"tracking_uri": uri}
    return cfg.validate(data, "ci.toml", str(tmp_path))


def mlflow_client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def mlflow_store(tmp_path: Path) -> tuple[str, Any, str]:
    """A store MLflow created (schema, experiment with artifacts beside it), as `ci` makes it."""
    uri = conf(tmp_path).tracking_uri()
    client = mlflow_client(uri)
    (tmp_path / ".maci").mkdir(exist_ok=True)
    exp = client.create_experiment("wine", artifact_location=(tmp_path / ".maci" / "mlartifacts")
                                   .as_uri())
    return uri, client, str(exp)


def same_run(native: Any, theirs: Any) -> None:
    """A run written natively reads back like one MLflow's create_run wrote."""
    for field in ("status", "user_id", "lifecycle_stage", "experiment_id", "end_time"):
        assert getattr(native.info, field) == getattr(theirs.info, field), field
    assert native.info.run_name == native.data.tags["mlflow.runName"]
    assert native.info.artifact_uri.removesuffix(f"/{native.info.run_id}/artifacts") == \
        theirs.info.artifact_uri.removesuffix(f"/{theirs.info.run_id}/artifacts")
    assert set(native.data.tags) == set(theirs.data.tags)


# ------------------------------------------------------------------ REST, real server


def test_rest_client_creates_a_run_mlflow_reads_and_registers(mlflow_server: MlflowServer) -> None:
    rest = RestPreflight.for_uri(mlflow_server.uri)
    assert rest is not None
    client = mlflow_client(mlflow_server.uri)
    name = f"rest-{uuid.uuid4().hex[:8]}"
    exp = rest.experiment_id(name)
    assert exp == client.get_experiment_by_name(name).experiment_id == rest.experiment_id(name)
    run_id = rest.create_run(exp, TAGS, "p-ci-1")
    assert run_id is not None and rest.log_params(run_id, PARAMS)
    theirs = client.create_run(exp, tags=TAGS, run_name="p-ci-2")
    native = client.get_run(run_id)
    same_run(native, theirs)
    assert native.info.run_name == "p-ci-1" and native.data.params == PARAMS
    assert {k: native.data.tags[k] for k in TAGS} == TAGS

    client.log_metric(run_id, "accuracy", 0.97)
    client.set_terminated(run_id, "FINISHED")
    found = rest.find_runs(exp, {"maci.input_hash": TAGS["maci.input_hash"]}, "FINISHED", 1)
    assert found is not None and [r.run_id for r in found] == [run_id]
    assert found[0] == tracking.Tracking._record(client.get_run(run_id))
    assert rest.find_runs(exp, {"maci.input_hash": "none"}, "FINISHED", 1) == []

    client.create_registered_model(name)
    version = client.create_model_version(name, native.info.artifact_uri, run_id=run_id)
    assert client.get_model_version(name, version.version).run_id == run_id
    rest.close()


def test_rest_errors_read_like_mlflows(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    rest = RestPreflight.for_uri(mlflow_server.uri)
    assert rest is not None
    with pytest.raises(TrackingError) as ours:
        rest.log_params("0" * 32, {"a": "1"})
    t = tracking.connect(conf(tmp_path, mlflow_server.uri))
    t.load_while_waiting()  # from here MLflow's client answers
    with pytest.raises(TrackingError) as theirs:
        t.log_params("0" * 32, {"a": "1"})
    assert ours.value.message.split(": ")[:2] == theirs.value.message.split(": ")[:2] == [
        "MLflow log params failed", "RESOURCE_DOES_NOT_EXIST"]


def test_an_unsupported_mlflow_setting_leaves_every_call_to_mlflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "some-plugin")
    assert RestPreflight.for_uri("http://127.0.0.1:5000") is None
    monkeypatch.delenv("MLFLOW_TRACKING_AUTH")
    assert RestPreflight.for_uri("databricks") is None


# ------------------------------------------------------------------ sqlite, real store


def test_sqlite_client_writes_the_run_as_mlflow_would(tmp_path: Path) -> None:
    uri, client, exp = mlflow_store(tmp_path)
    native_store = SqlitePreflight.for_uri(uri)
    assert native_store is not None
    assert native_store.experiment_id("wine") == exp
    assert native_store.experiment_id("absent") is None  # MLflow creates experiments

    run_id = native_store.create_run(exp, TAGS, "p-ci-1")
    assert run_id is not None and native_store.log_params(run_id, PARAMS)
    assert not native_store.log_params(run_id, {"more": "1"}), "later params go to MLflow"
    theirs = client.create_run(exp, tags=TAGS, run_name="p-ci-2")
    native = client.get_run(run_id)
    same_run(native, theirs)
    assert native.info.artifact_uri == f"{(tmp_path / '.maci' / 'mlartifacts').as_uri()}/{run_id}/artifacts"
    assert native.data.params == PARAMS and native.info.run_name == "p-ci-1"

    # MLflow keeps working on the run: metrics (NaN too), artifacts, status
    client.log_metric(run_id, "accuracy", 0.97)
    client.log_metric(run_id, "loss", math.nan)
    client.log_text(run_id, "hi", "notes/hi.txt")
    client.set_terminated(run_id, "FINISHED")
    client.set_terminated(theirs.info.run_id, "FINISHED")
    found = native_store.find_runs(exp, {"maci.input_hash": TAGS["maci.input_hash"]}, "FINISHED", 5)
    expected = client.search_runs([exp], f"tags.`maci.input_hash` = '{TAGS['maci.input_hash']}' "
                                  "and attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=5)
    assert found is not None and [r.run_id for r in found] == [r.info.run_id for r in expected]
    mine = next(r for r in found if r.run_id == run_id)
    assert mine.metrics["accuracy"] == 0.97 and math.isnan(mine.metrics["loss"])
    assert mine.model_dump(exclude={"metrics"}) == tracking.Tracking._record(
        client.get_run(run_id)).model_dump(exclude={"metrics"})
    assert native_store.find_runs(exp, {}, "RUNNING", 1) == []
    client.delete_run(theirs.info.run_id)
    assert [r.run_id for r in native_store.find_runs(exp, {}, "FINISHED", 5) or []] == [run_id]
    native_store.close()


def test_sqlite_client_leaves_what_it_cannot_copy_exactly_to_mlflow(tmp_path: Path) -> None:
    assert SqlitePreflight.for_uri(f"sqlite:///{tmp_path / 'none.db'}").experiment_id("x") is None
    uri, _, exp = mlflow_store(tmp_path)
    native_store = SqlitePreflight.for_uri(uri)
    assert native_store is not None and native_store.experiment_id("wine") == exp
    assert native_store.create_run(exp, {"bad/../key": "v"}, "r") is None
    assert native_store.create_run(exp, {"k": "v" * 8001}, "r") is None
    assert native_store.log_params("0" * 32, {"a": "1"}) is False  # not a run it created
    run_id = native_store.create_run(exp, {}, "r")
    assert run_id is not None and not native_store.log_params(run_id, {"x" * 251: "1"})
    native_store.close()

    db = Path(uri.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert SqlitePreflight.for_uri(uri).experiment_id("wine") is None  # unknown schema


def test_the_installed_mlflow_schema_is_one_the_sql_was_checked_against(tmp_path: Path) -> None:
    """Fails when an MLflow upgrade moves the schema head: check the SQL in mlflow_sqlite
    against the new tables (runs, tags, params, latest_metrics, experiments), then add it."""
    uri, _, _ = mlflow_store(tmp_path)
    db = Path(uri.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        (head,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert head in mlflow_sqlite.SCHEMAS


@pytest.mark.parametrize("location", ["file:///tmp/a/mlartifacts", "/tmp/a/mlruns/1/",
                                      "s3://bucket/x", "file:/tmp/x", "rel/path", "file:///a?x=1"])
def test_artifact_uri_is_mlflows_or_none(location: str) -> None:
    from mlflow.utils.uri import append_to_uri_path

    ours = artifact_uri(location, "r1")
    assert ours is None or ours == append_to_uri_path(location, "r1", "artifacts")
    assert (ours is not None) == location.startswith(("file:///tmp", "/tmp"))


@pytest.mark.parametrize("name", ["C", "max_iter", "a b/c:d", "maci.train.python", "", "a/../b",
                                  "/abs", "a//b", "bad!", "x" * 250, "x" * 251, "./a", "a/"])
def test_valid_key_agrees_with_mlflow(name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_param, _validate_tag

    verdicts = []
    for check in (_validate_param, _validate_tag):
        try:
            check(name, "v")
            verdicts.append(True)
        except MlflowException:
            verdicts.append(False)
    assert verdicts == [valid_key(name)] * 2


# ------------------------------------------------------------------ the adapter


CHILD = """
import json, sys
from ci.adapters import tracking
from ci.core import config as cfg
data = {"project": {"name": "p", "image": "127.0.0.1:5000/p"},
        "model": {"train_command": ["python", "t.py"], "registered_model": "m"}}
if sys.argv[2]:
    data["mlflow"] = {"tracking_uri": sys.argv[2]}
t = tracking.connect(cfg.validate(data, "ci.toml", sys.argv[1]))
exp = t.experiment_id("wine")
t.find_runs(exp, {"maci.input_hash": "x"})
run_id = t.create_run(exp, {"maci.input_hash": "x"}, "p-1")
t.log_params(run_id, {"C": 1.0})
print(json.dumps({"mlflow": "mlflow" in sys.modules, "run_id": run_id}))
"""


@pytest.mark.parametrize("store", ["server", "sqlite"])
def test_the_run_exists_before_mlflow_is_imported(
    store: str, tmp_path: Path, mlflow_server: MlflowServer,
) -> None:
    uri = mlflow_server.uri if store == "server" else ""
    if store == "sqlite":
        mlflow_store(tmp_path)  # an existing store: a new one is MLflow's to create
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    res = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), uri], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["mlflow"] is False
    run = mlflow_client(uri or conf(tmp_path).tracking_uri()).get_run(out["run_id"])
    assert run.data.params == {"C": "1.0"} and run.info.status == "RUNNING"


def test_after_the_handover_mlflows_client_answers(tmp_path: Path) -> None:
    _, client, exp = mlflow_store(tmp_path)
    t = tracking.connect(conf(tmp_path))
    run_id = t.create_run(t.experiment_id("wine"), {"k": "v"}, "p-1")
    t.log_params(run_id, {"C": 1.0})
    assert not t.loader.loaded
    t.load_while_waiting()
    client.log_param(run_id, "seed", "7")  # what a script does meanwhile
    with pytest.raises(TrackingError, match="MLflow log params failed: Changing param values is not allowed"):
        t.log_params(run_id, {"seed": 8})  # MLflow's own rule: params never change
    assert t.loader.loaded and t.run(run_id).params == {"C": "1.0", "seed": "7"}
    assert t.find_runs(exp, {"k": "v"}, status="RUNNING")[0].run_id == run_id


def test_the_import_thread_yields_the_cpu_and_gets_it_back() -> None:
    """`_lower` only lowers a priority it can restore (one step tried first); `_renice`
    restores it, as `Loader.client()` does when a call starts waiting for the import."""
    from ci.adapters import mlflow_loader

    seen: dict[str, int | None] = {}

    def thread() -> None:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        seen["old"] = mlflow_loader._lower(tid)
        seen["low"] = os.getpriority(os.PRIO_PROCESS, tid)
        mlflow_loader._renice(tid, seen["old"])
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["before"] = before

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    if seen["old"] is None:  # no right to raise a priority: left (nearly) as it was
        assert seen["low"] is not None and seen["before"] is not None
        assert seen["low"] <= seen["before"] + 1
    else:
        assert seen["low"] == mlflow_loader.IDLE_NICE and seen["after"] == seen["before"]
    assert os.getpriority(os.PRIO_PROCESS, 0) == seen["before"], "only that thread changed"
