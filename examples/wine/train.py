"""Train the wine classifier and log it to the MLflow run the pipeline created.

Run by `ci train` with MLFLOW_TRACKING_URI and MLFLOW_RUN_ID set, so `mlflow.start_run()`
resumes the library's run (lineage tags are already on it). Hyper-parameters come from
MACI_PARAMS, a JSON object built from `[model] params` in ci.toml. Run alone
(`python train.py`) it logs a fresh run to whatever MLFLOW_TRACKING_URI points at.

Params: C (inverse regularisation), max_iter, seed (split + solver), test_size,
features (keep only the first N features; a small N is the knob that makes a WORSE model).
Besides the MLflow model it logs `serving/model.json`: scaler + coefficients that the
stdlib-only serving app (app/model.py) evaluates without numpy or scikit-learn.
"""

from __future__ import annotations

import json
import os
from typing import Any

DEFAULTS: dict[str, Any] = {"C": 1.0, "max_iter": 500, "seed": 7, "test_size": 0.3, "features": 0}
SERVING_ARTIFACT = "serving/model.json"
MODEL_FORMAT = "maci-linear/1"


def load_params(environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, Any]:
    """Defaults overlaid with MACI_PARAMS (JSON); unknown params are an error, not ignored."""
    given = json.loads(environ.get("MACI_PARAMS") or "{}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise SystemExit(f"train.py: unknown params {unknown}; known: {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **given}
    return {
        "C": float(params["C"]),
        "max_iter": int(params["max_iter"]),
        "seed": int(params["seed"]),
        "test_size": float(params["test_size"]),
        "features": int(params["features"]),
    }


def serving_model(pipeline: Any, feature_names: list[str], class_names: list[str]) -> dict[str, Any]:
    """The portable model: what app/model.py needs to predict with the stdlib only."""
    scaler = pipeline.named_steps["standardscaler"]
    clf = pipeline.named_steps["logisticregression"]
    return {
        "format": MODEL_FORMAT,
        "features": feature_names,
        "mean": [float(v) for v in scaler.mean_],
        "scale": [float(v) for v in scaler.scale_],
        "coef": [[float(v) for v in row] for row in clf.coef_],
        "intercept": [float(v) for v in clf.intercept_],
        "classes": [int(c) for c in clf.classes_],
        "class_names": [class_names[int(c)] for c in clf.classes_],
    }


def main() -> None:
    params = load_params()

    import mlflow
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_wine(as_frame=True)
    X, y = data.data, data.target
    if params["features"] > 0:
        X = X.iloc[:, : params["features"]]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=params["test_size"], random_state=params["seed"], stratify=y
    )
    pipeline = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=params["C"], max_iter=params["max_iter"], random_state=params["seed"]),
    )
    pipeline.fit(X_train, y_train)
    predicted = pipeline.predict(X_test)

    # Resumes the run named by MLFLOW_RUN_ID (the library created it), else starts one.
    # start_run() consumes MLFLOW_RUN_ID, so read it first.
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))
    with mlflow.start_run():
        if not resumed:
            mlflow.log_params(params)  # under `ci train` the library already logged them
        mlflow.log_params({"n_features": X.shape[1], "n_train": len(X_train), "n_test": len(X_test)})
        mlflow.log_metrics({
            "accuracy": float(accuracy_score(y_test, predicted)),
            "f1_macro": float(f1_score(y_test, predicted, average="macro")),
        })
        mlflow.sklearn.log_model(
            pipeline,
            name="model",
            # Explicit requirements: inferring them costs ~4 s per run.
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            signature=infer_signature(X_test, predicted),
        )
        mlflow.log_dict(
            serving_model(pipeline, list(X.columns), list(data.target_names)), SERVING_ARTIFACT
        )


if __name__ == "__main__":
    main()
