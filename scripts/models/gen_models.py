#!/usr/bin/env python3
"""Generates verdict's small test/demo ONNX models and their reference outputs.

Writes into models/ (relative to the repository root):
  rec-v1.onnx        logistic regression over 12 items  (LinearClassifier, Normalizer)
  rec-v2.onnx        small MLP 8-16-12 over the same items (MatMul, Add, Relu, Softmax, ...)
  tree-clf.onnx      random forest classifier on iris (TreeEnsembleClassifier)
  tree-reg.onnx      random forest regressor (TreeEnsembleRegressor: tract cannot run it,
                     so it exercises the operator check and the optional ONNX Runtime engine)
  <name>.json        the model's input/output mapping for verdict (see crates/verdict-serve)
  fixtures/<name>.json  inputs and onnxruntime's outputs, compared by the Rust tests to 1e-5

Usage:  scripts/models/gen_models.py            (creates a venv under ~/.cache if needed)
Everything is seeded; re-running with the pinned versions reproduces the files.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.path.expanduser("~/.cache/verdict-py-serve/venv")


def ensure_venv():
    """Re-executes this script inside a venv that has the pinned packages."""
    if os.environ.get("VERDICT_GEN_IN_VENV") == "1":
        return
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    req = os.path.join(os.path.dirname(__file__), "requirements.txt")
    subprocess.check_call([py, "-m", "pip", "install", "-q", "-r", req])
    env = dict(os.environ, VERDICT_GEN_IN_VENV="1")
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], env)


ensure_venv()

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from sklearn.datasets import load_iris, make_classification, make_regression  # noqa: E402
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

MASK = (1 << 64) - 1
N_FEATURES = 8
# Item ids the recommenders rank; class i of the classifier is item ITEMS[i].
ITEMS = [101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112]


def fnv64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def splitmix64(x: int) -> int:
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def hashed_features(values, dims):
    """Must match verdict-serve's `hashed_features` (src/onnx/mapping.rs) bit for bit."""
    seed = fnv64("\x1f".join(values).encode("utf-8"))
    out = []
    for i in range(dims):
        z = splitmix64((seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK)
        # 24 random bits -> a float32-exact value in [-1, 1).
        out.append(np.float32((z >> 40) / float(1 << 23) - 1.0))
    return np.array(out, dtype=np.float32)


def save(model, x_example, name, options=None):
    onx = to_onnx(model, x_example[:1], options=options or {},
                  target_opset={"": 17, "ai.onnx.ml": 3})
    # Deterministic bytes: skl2onnx stamps nothing time-dependent, but drop the doc string anyway.
    onx.doc_string = ""
    onnx.checker.check_model(onx)
    path = os.path.join(ROOT, "models", f"{name}.onnx")
    onnx.save(onx, path)
    return path


def run_ort(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    return {n: np.asarray(o).tolist() for n, o in zip(names, outs)}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def fixture(name, path, rows, extra=None):
    x = np.asarray(rows, dtype=np.float32)
    fx = {
        "model": f"{name}.onnx",
        "inputs": x.tolist(),
        "outputs": run_ort(path, x),
        "onnxruntime": ort.__version__,
    }
    if extra:
        fx.update(extra)
    write_json(os.path.join(ROOT, "models", "fixtures", f"{name}.json"), fx)


def main():
    os.makedirs(os.path.join(ROOT, "models", "fixtures"), exist_ok=True)
    rng = np.random.default_rng(7)

    # Recommenders: 12 items, 8 features in [-1, 1) like the hashed user features.
    x, y = make_classification(n_samples=1200, n_features=N_FEATURES, n_informative=6,
                               n_redundant=0, n_classes=len(ITEMS), n_clusters_per_class=1,
                               class_sep=1.5, random_state=1)
    x = (x / np.abs(x).max(axis=0)).astype(np.float32)
    rec_probe = rng.uniform(-1, 1, size=(16, N_FEATURES)).astype(np.float32)
    users = [("user-123", "homepage"), ("user-456", "search"), ("user-789", ""),
             ("ünïcødé-👤", "homepage")]
    hashed = [hashed_features([u, c], N_FEATURES) for u, c in users]
    rec_spec = {
        "input": {"features": N_FEATURES, "hash": ["user_id", "context"]},
        "output": {"recommend": {"labels": ITEMS, "k": 3, "scores": "probabilities"}},
    }
    for name, model in [
        ("rec-v1", LogisticRegression(max_iter=500, random_state=0)),
        ("rec-v2", MLPClassifier(hidden_layer_sizes=(16,), max_iter=800, random_state=0)),
    ]:
        model.fit(x, y)
        path = save(model, x, name, options={id(model): {"zipmap": False}})
        write_json(os.path.join(ROOT, "models", f"{name}.json"), rec_spec)
        fixture(name, path, np.vstack([rec_probe, np.array(hashed)]), {
            "hashed": [{"user_id": u, "context": c, "features": h.tolist()}
                       for (u, c), h in zip(users, hashed)],
        })

    # Tree classifier on iris, with named features.
    xi, yi = load_iris(return_X_y=True)
    xi = xi.astype(np.float32)
    clf = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(xi, yi)
    path = save(clf, xi, "tree-clf", options={id(clf): {"zipmap": False}})
    write_json(os.path.join(ROOT, "models", "tree-clf.json"), {
        "input": {"features": ["sepal_length", "sepal_width", "petal_length", "petal_width"]},
        "output": {},
    })
    fixture("tree-clf", path, xi[::10])

    # Tree regressor (tract has no TreeEnsembleRegressor).
    xr, yr = make_regression(n_samples=300, n_features=6, noise=0.1, random_state=3)
    xr = xr.astype(np.float32)
    reg = RandomForestRegressor(n_estimators=5, max_depth=3, random_state=0).fit(xr, yr)
    path = save(reg, xr, "tree-reg")
    write_json(os.path.join(ROOT, "models", "tree-reg.json"), {"input": {"features": 6}, "output": {}})
    fixture("tree-reg", path, xr[:12])

    for f in sorted(os.listdir(os.path.join(ROOT, "models"))):
        p = os.path.join(ROOT, "models", f)
        if os.path.isfile(p):
            m = onnx.load(p) if f.endswith(".onnx") else None
            ops = sorted({n.op_type for n in m.graph.node}) if m else ""
            print(f"{f:16} {os.path.getsize(p):6} B  {' '.join(ops)}")


if __name__ == "__main__":
    main()
