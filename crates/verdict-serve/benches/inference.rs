//! In-process inference latency per shipped model through tract: the engine's run alone
//! (`run`), the model call with input/output mapping on the calling thread (`blocking`), the same through the async
//! `Model::predict` path that hops to tokio's blocking pool (`async`, what the server
//! pays), and a batch of 64 rows. With `--features ort` and `VERDICT_ORT_LIBRARY` set to
//! the wheel's `libonnxruntime.so.*`, the same models also run through ONNX Runtime
//! (group `ort`), side by side.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::{json, Value};
use std::hint::black_box;
use std::path::PathBuf;
use verdict_serve::onnx::{ModelSpec, OnnxModel, TractEngine};
use verdict_serve::Model;

fn load(name: &str) -> (OnnxModel, Value) {
    load_with(&TractEngine, name)
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
    #[cfg(feature = "ort")]
    ort_inference(c);
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
