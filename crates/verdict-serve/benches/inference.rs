//! In-process inference latency per shipped model through tract: the engine's run alone
//! (`run`), the model call with input/output mapping on the calling thread (`blocking`), the
//! same through the async `Model::predict` path that hops to the dedicated inference pool
//! (`async`, what the server pays), the same hop to tokio's blocking pool instead
//! (`async-spawn-blocking`, the path before the pool, kept as the baseline), and a batch of
//! 64 rows. Group `concurrent`: 64 predictions in flight at once on a 2-worker runtime, pool
//! vs spawn_blocking (throughput under load, per batch of 64). With `--features ort` and `VERDICT_ORT_LIBRARY` set to
//! the wheel's `libonnxruntime.so.*`, the same models also run through ONNX Runtime
//! (group `ort`), side by side.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::{json, Value};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use verdict_serve::onnx::{mapping, ModelSpec, OnnxModel, Session, TractEngine};
use verdict_serve::{Model, Prediction};

/// The path before the dedicated pool: map on the async thread, run on tokio's blocking
/// pool, map back (what `OnnxModel::predict` did).
async fn predict_spawn_blocking(
    session: Arc<dyn Session>,
    spec: &ModelSpec,
    input: &Value,
) -> Prediction {
    let (rows, data, batch) = mapping::to_matrix(spec, session.width(), "u", input).unwrap();
    let outputs = tokio::task::spawn_blocking(move || session.run(rows, data))
        .await
        .unwrap()
        .unwrap();
    Prediction {
        output: mapping::to_json(spec, &outputs, rows, batch).unwrap(),
        model_version: String::new(),
    }
}

fn load(name: &str) -> (OnnxModel, Value) {
    load_with(&TractEngine, name)
}

fn spec(name: &str) -> ModelSpec {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
        .unwrap()
}

/// A session handle of its own for the spawn_blocking baseline (same graph, same engine).
fn session(name: &str) -> Arc<dyn Session> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).unwrap();
    verdict_serve::onnx::Engine::load(&TractEngine, &bytes).unwrap()
}

fn load_with(engine: &dyn verdict_serve::onnx::Engine, name: &str) -> (OnnxModel, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).unwrap();
    let spec: ModelSpec =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("fixtures/{name}.json"))).unwrap(),
    )
    .unwrap();
    let model = OnnxModel::load(engine, name, &bytes, spec).unwrap();
    (model, fixture["inputs"].clone())
}

fn inference(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("tract");
    for name in ["rec-v1", "rec-v2", "tree-clf"] {
        let (model, inputs) = load(name);
        let one = json!({ "features": inputs[0] });
        let rows: Vec<Value> = (0..64)
            .map(|i| inputs[i % inputs.as_array().unwrap().len()].clone())
            .collect();
        let batch = json!({ "features": rows });
        let row: Vec<f32> = serde_json::from_value(inputs[0].clone()).unwrap();
        g.bench_with_input(BenchmarkId::new("run", name), &row, |b, row| {
            b.iter(|| model.session().run(1, black_box(row.clone())).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("blocking", name), &one, |b, input| {
            b.iter(|| model.predict_blocking("u", black_box(input)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("async", name), &one, |b, input| {
            b.to_async(&rt)
                .iter(|| async { model.predict("u", black_box(input)).await.unwrap() })
        });
        let (sess, sp) = (session(name), spec(name));
        g.bench_with_input(
            BenchmarkId::new("async-spawn-blocking", name),
            &one,
            |b, input| {
                b.to_async(&rt).iter(|| async {
                    predict_spawn_blocking(sess.clone(), &sp, black_box(input)).await
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("blocking-batch64", name),
            &batch,
            |b, input| b.iter(|| model.predict_blocking("u", black_box(input)).unwrap()),
        );
    }
    // The seed's payload: hashed user features, ranked items.
    let (model, _) = load("rec-v2");
    let seed = json!({"user_id": "user-123", "context": "homepage"});
    g.bench_function("blocking/rec-v2-hashed", |b| {
        b.iter(|| {
            model
                .predict_blocking("user-123", black_box(&seed))
                .unwrap()
        })
    });
    g.finish();
    concurrent(c);
    #[cfg(feature = "ort")]
    ort_inference(c);
}

/// 64 single-row predictions in flight at once, as a loaded server has them: the pool
/// (one thread per core, bounded queue) against tokio's blocking pool.
fn concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("concurrent64");
    let name = "rec-v2";
    let (model, inputs) = load(name);
    let model = Arc::new(model);
    let one = json!({ "features": inputs[0] });
    let (sess, sp) = (session(name), Arc::new(spec(name)));
    g.bench_function(BenchmarkId::new("pool", name), |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (m, input) = (model.clone(), one.clone());
                    tokio::spawn(async move { m.predict("u", &input).await.unwrap() })
                })
                .collect();
            for t in tasks {
                black_box(t.await.unwrap());
            }
        })
    });
    g.bench_function(BenchmarkId::new("spawn-blocking", name), |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (s, sp, input) = (sess.clone(), sp.clone(), one.clone());
                    tokio::spawn(async move { predict_spawn_blocking(s, &sp, &input).await })
                })
                .collect();
            for t in tasks {
                black_box(t.await.unwrap());
            }
        })
    });
    g.finish();
}

#[cfg(feature = "ort")]
fn ort_inference(c: &mut Criterion) {
    let Ok(lib) = std::env::var("VERDICT_ORT_LIBRARY") else {
        eprintln!("VERDICT_ORT_LIBRARY not set: skipping the ort group");
        return;
    };
    verdict_serve::onnx::onnxruntime::init(std::path::Path::new(&lib)).unwrap();
    let engine = verdict_serve::onnx::onnxruntime::OrtEngine;
    let mut g = c.benchmark_group("ort");
    for name in ["rec-v1", "rec-v2", "tree-clf", "tree-reg"] {
        let (model, inputs) = load_with(&engine, name);
        let one = json!({ "features": inputs[0] });
        let rows: Vec<Value> = (0..64)
            .map(|i| inputs[i % inputs.as_array().unwrap().len()].clone())
            .collect();
        let batch = json!({ "features": rows });
        let row: Vec<f32> = serde_json::from_value(inputs[0].clone()).unwrap();
        g.bench_with_input(BenchmarkId::new("run", name), &row, |b, row| {
            b.iter(|| model.session().run(1, black_box(row.clone())).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("blocking", name), &one, |b, input| {
            b.iter(|| model.predict_blocking("u", black_box(input)).unwrap())
        });
        g.bench_with_input(
            BenchmarkId::new("blocking-batch64", name),
            &batch,
            |b, input| b.iter(|| model.predict_blocking("u", black_box(input)).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, inference);
criterion_main!(benches);
