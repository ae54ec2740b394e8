//! The shipped ONNX models through tract, checked against onnxruntime's outputs for the
//! same inputs (fixtures written by `scripts/models/gen_models.py`), to 1e-5.

use serde_json::{json, Value};
use std::path::PathBuf;
use verdict_serve::onnx::{
    mapping::hashed_features, EngineError, ModelSpec, OnnxModel, TractEngine,
};
use verdict_serve::{Model, Registry, RegistryError};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn load(name: &str) -> OnnxModel {
    let bytes = std::fs::read(repo().join(format!("models/{name}.onnx"))).unwrap();
    let spec: ModelSpec =
        serde_json::from_value(read_json(repo().join(format!("models/{name}.json")))).unwrap();
    OnnxModel::load(&TractEngine, &format!("{name}.onnx"), &bytes, spec).unwrap()
}

/// Asserts `got` matches onnxruntime's `want` (numbers to 1e-5, integers exactly).
fn assert_close(got: &Value, want: &Value, what: &str) {
    match (got, want) {
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: length");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_close(g, w, &format!("{what}[{i}]"));
            }
        }
        (g, w) if w.is_i64() => assert_eq!(g, w, "{what}"),
        (g, w) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-5,
                "{what}: tract {g} vs onnxruntime {w}"
            );
        }
    }
}

fn check_fixture(name: &str) {
    let model = load(name);
    let fx = read_json(repo().join(format!("models/fixtures/{name}.json")));
    let inputs = fx["inputs"].as_array().unwrap();
    let outputs = fx["outputs"].as_object().unwrap();
    assert!(!inputs.is_empty());
    // Row by row.
    for (r, row) in inputs.iter().enumerate() {
        let (p, _) = model
            .predict_blocking("u", &json!({ "features": row }))
            .unwrap();
        for (out, want) in outputs {
            assert_close(&p.output[out], &want[r], &format!("{name} row {r} {out}"));
        }
    }
    // As one batch.
    let (p, _) = model
        .predict_blocking("u", &json!({ "features": inputs }))
        .unwrap();
    for (out, want) in outputs {
        assert_close(&p.output[out], want, &format!("{name} batch {out}"));
    }
}

#[test]
fn rec_v1_logistic_regression_matches_onnxruntime() {
    check_fixture("rec-v1");
}

#[test]
fn rec_v2_mlp_matches_onnxruntime() {
    check_fixture("rec-v2");
}

#[test]
fn tree_classifier_matches_onnxruntime() {
    check_fixture("tree-clf");
}

#[tokio::test]
async fn hashed_user_features_match_python_and_rank_items() {
    for name in ["rec-v1", "rec-v2"] {
        let model = load(name);
        let fx = read_json(repo().join(format!("models/fixtures/{name}.json")));
        let hashed = fx["hashed"].as_array().unwrap();
        let first = fx["inputs"].as_array().unwrap().len() - hashed.len();
        for (i, h) in hashed.iter().enumerate() {
            let user = h["user_id"].as_str().unwrap();
            let ctx = h["context"].as_str().unwrap();
            let want: Vec<f32> = serde_json::from_value(h["features"].clone()).unwrap();
            assert_eq!(hashed_features(&[user, ctx], 8), want, "{user}/{ctx}");
            // The seed's payload shape, through the async path.
            let p = model
                .predict(user, &json!({"user_id": user, "context": ctx}))
                .await
                .unwrap();
            let probs = &fx["outputs"]["probabilities"][first + i];
            assert_close(&p.output["probabilities"], probs, name);
            let items = p.output["items"].as_array().unwrap();
            let scores: Vec<f64> = p.output["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_f64().unwrap())
                .collect();
            assert_eq!(items.len(), 3);
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
            // The top item is the class onnxruntime labels.
            let label = fx["outputs"]["label"][first + i].as_i64().unwrap();
            assert_eq!(items[0], json!(101 + label), "{name} {user}");
        }
    }
}

#[test]
fn tree_regressor_is_refused_by_the_operator_check() {
    let bytes = std::fs::read(repo().join("models/tree-reg.onnx")).unwrap();
    let e =
        OnnxModel::load(&TractEngine, "tree-reg.onnx", &bytes, ModelSpec::default()).unwrap_err();
    assert_eq!(
        e,
        verdict_serve::onnx::LoadError::Engine(EngineError::UnsupportedOperators {
            engine: "tract",
            ops: vec!["ai.onnx.ml:TreeEnsembleRegressor".into()],
        })
    );
    let r = Registry::default().with_base_dir(repo());
    let e = r.resolve("onnx:models/tree-reg.onnx").unwrap_err();
    assert!(e.to_string().contains("TreeEnsembleRegressor"), "{e}");
}

#[tokio::test]
async fn default_registry_serves_onnx_recommenders_from_any_directory() {
    // Tests run in the crate directory, where models/ does not exist: the compiled-in copies
    // serve. From the repository root the files serve; both are the same version.
    assert!(!std::path::Path::new("models/rec-v1.onnx").exists());
    let embedded = Registry::with_defaults();
    let files = Registry::with_defaults().with_base_dir(repo());
    let input = json!({"user_id": "user-123", "context": "homepage"});
    for name in ["rec-v1", "rec-v2"] {
        let a = embedded
            .resolve(name)
            .unwrap()
            .predict("user-123", &input)
            .await
            .unwrap();
        let b = files
            .resolve(name)
            .unwrap()
            .predict("user-123", &input)
            .await
            .unwrap();
        assert_eq!(a, b);
        assert!(
            a.model_version.starts_with(&format!("{name}.onnx@")),
            "{}",
            a.model_version
        );
        assert_eq!(a.output["items"].as_array().unwrap().len(), 3);
    }
    // The two variants are different models.
    let v1 = embedded
        .resolve("rec-v1")
        .unwrap()
        .predict("user-123", &input)
        .await
        .unwrap();
    let v2 = embedded
        .resolve("rec-v2")
        .unwrap()
        .predict("user-123", &input)
        .await
        .unwrap();
    assert_ne!(v1.output["probabilities"], v2.output["probabilities"]);
    // Model time is measured apart from the platform's own time.
    let start = std::time::Instant::now();
    let (p, model_time) = embedded
        .resolve("rec-v1")
        .unwrap()
        .predict_timed("user-123", &input)
        .await
        .unwrap();
    let model_time = model_time.expect("ONNX models measure their run");
    assert!(model_time > std::time::Duration::ZERO && model_time <= start.elapsed());
    assert_eq!(p, v1);
    // builtin: still works, without a model time.
    assert_eq!(
        embedded
            .resolve("builtin:x")
            .unwrap()
            .predict_timed("u", &input)
            .await
            .unwrap()
            .1,
        None
    );
    assert!(embedded
        .resolve("builtin:rec-v1")
        .unwrap()
        .predict("u", &input)
        .await
        .is_ok());
    // Bad input is classified, not a panic.
    let e = embedded
        .resolve("rec-v1")
        .unwrap()
        .predict("u", &json!({"features": [1, 2]}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "invalid_input");
}

#[tokio::test]
async fn named_features_for_the_tree_classifier() {
    let r = Registry::default().with_base_dir(repo());
    let m = r
        .resolve("onnx:models/tree-clf.onnx#timeout_ms=500")
        .unwrap();
    let p = m
        .predict("u", &json!({"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}))
        .await
        .unwrap();
    assert_eq!(p.output["label"], json!(2));
    let e = m
        .predict("u", &json!({"sepal_length": 6.7}))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("petal_length") || e.to_string().contains("sepal_width"),
        "{e}"
    );
}

#[test]
fn unreadable_and_mismatched_models_are_refused_at_resolution() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.onnx"), b"definitely not protobuf").unwrap();
    std::fs::copy(
        repo().join("models/rec-v1.onnx"),
        dir.path().join("wide.onnx"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("wide.json"),
        r#"{"input": {"features": 5}}"#,
    )
    .unwrap();
    std::fs::copy(
        repo().join("models/rec-v1.onnx"),
        dir.path().join("typo.onnx"),
    )
    .unwrap();
    std::fs::write(dir.path().join("typo.json"), r#"{"inptu": {}}"#).unwrap();
    let r = Registry::default().with_base_dir(dir.path());
    for (uri, needle) in [
        ("onnx:junk.onnx", "invalid model"),
        ("onnx:wide.onnx", "5 features"),
        ("onnx:typo.onnx", "inptu"),
    ] {
        match r.resolve(uri) {
            Err(RegistryError::Unloadable { reason, .. }) => {
                assert!(reason.contains(needle), "{uri}: {reason}")
            }
            other => panic!("{uri}: {other:?}"),
        }
    }
}

/// Holds the pool's threads until told to go.
#[derive(Debug)]
struct Gate(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl verdict_serve::onnx::Session for Gate {
    fn width(&self) -> usize {
        1
    }
    fn output_names(&self) -> &[String] {
        &[]
    }
    fn run(&self, _: usize, _: Vec<f32>) -> Result<Vec<verdict_serve::onnx::Output>, String> {
        self.0.lock().unwrap().recv().map_err(|e| e.to_string())?;
        Ok(Vec::new())
    }
}

/// Fills a one-thread, one-slot pool: one gated run held on the thread, one waiting in the
/// slot. Returns the gate (send twice to release both) and whether the held run succeeded.
async fn fill(
    pool: &verdict_serve::onnx::InferencePool,
) -> (
    std::sync::mpsc::Sender<()>,
    impl std::future::Future<Output = bool>,
) {
    let (go, rx) = std::sync::mpsc::channel();
    let gate: std::sync::Arc<dyn verdict_serve::onnx::Session> =
        std::sync::Arc::new(Gate(std::sync::Mutex::new(rx)));
    let running = pool.submit(gate.clone(), 1, vec![0.0]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pool.submit(gate.clone(), 1, vec![0.0]).is_err() {
        // The queue slot frees once the worker has taken the first job.
        assert!(
            std::time::Instant::now() < deadline,
            "pool never took the job"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // The future keeps the gate (and so its receiver) alive until the test is done with it.
    (go, async move {
        let _gate = gate;
        running.await.unwrap().is_ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_inference_pool_refuses_as_overloaded_and_recovers() {
    use verdict_serve::onnx::InferencePool;
    let pool = InferencePool::new(1, 1);
    let model = load("rec-v1").with_pool(pool.clone());
    let input = json!({"user_id": "u1", "context": "home"});
    let (_, model_time) = model.predict_timed("u1", &input).await.unwrap();
    assert!(model_time.is_some(), "in-process models report model time");

    // One run held on the only thread, one waiting in the only queue slot.
    let (go, running) = fill(&pool).await;
    let e = model.predict("u1", &input).await.unwrap_err();
    assert_eq!(e.kind(), "overloaded", "{e}");
    assert!(e.to_string().contains("inference pool full"), "{e}");

    go.send(()).unwrap();
    go.send(()).unwrap();
    assert!(running.await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pool.pending() > 0 {
        assert!(std::time::Instant::now() < deadline, "pool never drained");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(model.predict("u1", &input).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_given_a_pool_runs_its_models_there() {
    use verdict_serve::onnx::InferencePool;
    let pool = InferencePool::new(1, 1);
    let registry = Registry::with_defaults().with_pool(pool.clone());
    let model = registry.resolve("rec-v1").unwrap();
    let input = json!({"user_id": "u1", "context": "home"});
    assert!(model.predict("u1", &input).await.is_ok());

    // Fill that pool (one run held, one queued): the registry's model is refused, so it
    // runs there and not on the process-wide pool.
    let (go, running) = fill(&pool).await;
    let e = model.predict("u1", &input).await.unwrap_err();
    assert_eq!(e.kind(), "overloaded", "{e}");
    go.send(()).unwrap();
    go.send(()).unwrap();
    assert!(running.await);
}
