//! The optional ONNX Runtime engine (`--features ort`) on every shipped model, including
//! the tree regressor tract refuses, against onnxruntime's Python outputs to 1e-5.
//! Needs `VERDICT_ORT_LIBRARY` (the wheel's `libonnxruntime.so.*`); `scripts/models/integration`
//! sets it from the models venv.
#![cfg(feature = "ort")]

use serde_json::{json, Value};
use std::path::PathBuf;
use verdict_serve::Registry;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn init() {
    let lib = std::env::var("VERDICT_ORT_LIBRARY")
        .expect("VERDICT_ORT_LIBRARY must name libonnxruntime.so (run scripts/models/integration)");
    verdict_serve::onnx::onnxruntime::init(std::path::Path::new(&lib)).unwrap();
}

/// Row-major values; verdict drops size-1 row dimensions (`[N, 1]` -> one scalar per row).
fn flat(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flat(i, out)),
        other => out.push(other.clone()),
    }
}

fn close(got: &Value, want: &Value) -> bool {
    let (mut g, mut w) = (Vec::new(), Vec::new());
    flat(got, &mut g);
    flat(want, &mut w);
    g.len() == w.len()
        && g.iter()
            .zip(&w)
            .all(|(g, w)| match (g.as_f64(), w.as_f64()) {
                _ if w.is_i64() => g == w,
                (Some(g), Some(w)) => (g - w).abs() <= 1e-5,
                _ => false,
            })
}

#[tokio::test]
async fn every_shipped_model_matches_python_onnxruntime() {
    init();
    let r = Registry::default().with_base_dir(repo());
    for name in ["rec-v1", "rec-v2", "tree-clf", "tree-reg"] {
        let m = r
            .resolve(&format!("onnx:models/{name}.onnx#engine=ort"))
            .unwrap();
        let fx: Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join(format!("models/fixtures/{name}.json"))).unwrap(),
        )
        .unwrap();
        let p = m
            .predict("u", &json!({"features": fx["inputs"]}))
            .await
            .unwrap();
        for (out, want) in fx["outputs"].as_object().unwrap() {
            assert!(
                close(&p.output[out], want),
                "{name} {out}: {} vs {want}",
                p.output[out]
            );
        }
    }
    // tract still refuses the regressor; the error says so.
    let e = r.resolve("onnx:models/tree-reg.onnx").unwrap_err();
    assert!(e.to_string().contains("TreeEnsembleRegressor"), "{e}");
}

#[test]
fn a_missing_library_is_a_clear_error() {
    let e = verdict_serve::onnx::onnxruntime::init(std::path::Path::new(
        "/nonexistent/libonnxruntime.so",
    ))
    .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
}
