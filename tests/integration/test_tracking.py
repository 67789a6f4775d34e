"""The MLflow adapter's edges: the token is exported and masked, a missing token or a dead
server is a TrackingError naming what to fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ci.adapters.tracking import connect
from ci.core import config as cfg
from ci.core import redact
from ci.core.errors import TrackingError
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.procs import free_port

pytestmark = pytest.mark.integration

TOKEN = "tok-" + "s3cr3t" * 4


def conf(tmp_path: Path, uri: str | None, token_env: str | None = None) -> cfg.Config:
    data: dict = {"project": {"name": "p", "image": "127.0.0.1:5000/p"},
                  "model": {"train_command": ["python", "t.py"], "registered_model": "m"}}
    mlflow: dict = {}
    if uri:
        mlflow["tracking_uri"] = uri
    if token_env:
        mlflow["token_env"] = token_env
    data["mlflow"] = mlflow
    return cfg.validate(data, "ci.toml", str(tmp_path))


def test_token_is_exported_for_mlflow_and_masked(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MY_MLFLOW_TOKEN", TOKEN)
    client = connect(conf(tmp_path, mlflow_server.uri, "MY_MLFLOW_TOKEN"))
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == TOKEN
    assert TOKEN in redact.registered()
    assert redact.redact(f"Bearer {TOKEN}") == "Bearer ***"
    assert client.experiment_id("token-check") == client.experiment_id("token-check")


def test_missing_token_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABSENT_TOKEN_VAR", raising=False)
    with pytest.raises(TrackingError, match="ABSENT_TOKEN_VAR is not set"):
        connect(conf(tmp_path, "http://127.0.0.1:9", "ABSENT_TOKEN_VAR"), environ={})


def test_unreachable_error_never_shows_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_MLFLOW_TOKEN", TOKEN)
    uri = f"http://ci:{TOKEN}@127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as err:
        connect(conf(tmp_path, uri, "MY_MLFLOW_TOKEN"))
    assert TOKEN not in str(err.value)
    assert "unreachable" in str(err.value)


def test_http_defaults_fail_fast_but_respect_the_users_choice(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "42")
    connect(conf(tmp_path, mlflow_server.uri))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"


def test_embedded_store_folder_is_created(tmp_path: Path) -> None:
    client = connect(conf(tmp_path, None))
    assert client.uri == f"sqlite:///{tmp_path / '.maci' / 'mlflow.db'}"
    assert (tmp_path / ".maci").is_dir()
    assert client.version_by_alias("m", "champion") is None
