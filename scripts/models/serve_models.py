#!/usr/bin/env python3
"""Writes a small iris classifier for a real model server, for verdict-serve's integration tests.

  serve_models.py mlflow   DIR   an MLflow model directory (mlflow.sklearn.save_model)
  serve_models.py mlserver DIR HTTP GRPC METRICS   an MLServer repository (settings.json, iris/model-settings.json)
  serve_models.py bentoml  DIR   DIR/model.joblib for scripts/models/bentoml_service.py

All write DIR/expected.json: a few input rows and the model's own predictions for them,
which the Rust tests compare with what comes back through verdict's upstream client.
Run with the interpreter of the venv that has the server installed (scripts/models/integration).
"""
import json
import os
import sys

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main():
    kind, out = sys.argv[1], os.path.abspath(sys.argv[2])
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    rows = x[::15]
    expected = {"rows": rows.tolist(), "predictions": model.predict(rows).tolist()}
    os.makedirs(out, exist_ok=True)
    if kind == "mlflow":
        import mlflow.sklearn
        from mlflow.models import infer_signature

        mlflow.sklearn.save_model(
            model, os.path.join(out, "model"), signature=infer_signature(x, model.predict(x))
        )
    elif kind == "mlserver":
        import joblib

        http_port, grpc_port, metrics_port = (int(p) for p in sys.argv[3:6])
        os.makedirs(os.path.join(out, "iris"), exist_ok=True)
        joblib.dump(model, os.path.join(out, "iris", "model.joblib"))
        with open(os.path.join(out, "settings.json"), "w") as f:
            json.dump({"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
                       "host": "127.0.0.1", "parallel_workers": 0}, f)
        with open(os.path.join(out, "iris", "model-settings.json"), "w") as f:
            json.dump({"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
                       "parameters": {"uri": "./model.joblib", "version": "v1"}}, f)
    elif kind == "bentoml":
        import joblib

        joblib.dump(model, os.path.join(out, "model.joblib"))
    else:
        sys.exit(f"unknown kind {kind}")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    np.testing.assert_array_equal(model.predict(np.asarray(expected["rows"])), expected["predictions"])


if __name__ == "__main__":
    main()
