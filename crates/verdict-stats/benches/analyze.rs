//! Analyses per second of a 4-variant, 3-metric experiment (conversion, revenue per user,
//! conversions per prediction; plus SRM, Holm/BH and power), the figure in docs/BENCHMARKS.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use verdict_stats::{analyze, AnalysisInput};

fn experiment() -> AnalysisInput {
    let variant = |key: &str, users: f64, conv: f64, rev: f64| {
        json!({
            "key": key, "users": users, "conversions": conv,
            "revenue": {"sum": rev * users, "sum_squares": users * (rev * rev + 400.0)},
            "predictions": {"sum": 3.0 * users, "sum_squares": 12.0 * users, "sum_products": 3.2 * conv}
        })
    };
    let doc = json!({
        "alpha": 0.05, "control": "control", "mde": 0.05,
        "weights": {"control": 0.25, "a": 0.25, "b": 0.25, "c": 0.25},
        "variants": [
            variant("control", 50_000.0, 5_000.0, 5.0),
            variant("a", 50_210.0, 5_150.0, 5.1),
            variant("b", 49_870.0, 4_990.0, 4.95),
            variant("c", 50_020.0, 5_300.0, 5.3),
        ]
    });
    AnalysisInput::from_json(&doc).expect("valid benchmark input")
}

fn bench(c: &mut Criterion) {
    let input = experiment();
    let mut g = c.benchmark_group("analyze");
    g.throughput(Throughput::Elements(1));
    g.bench_function("4 variants x 3 metrics", |b| {
        b.iter(|| analyze(black_box(&input)))
    });
    g.finish();
    // The parts, to see where the time goes.
    let mut p = c.benchmark_group("parts");
    p.bench_function("beta_binomial 5000/50000 vs 5150/50210", |b| {
        b.iter(|| verdict_stats::bayes::beta_binomial(black_box(5000.0), 50000.0, 5150.0, 50210.0))
    });
    p.bench_function("t_isf(0.025, 1e5)", |b| {
        b.iter(|| verdict_stats::dist::t_isf(black_box(0.025), 1e5))
    });
    p.bench_function("t_isf(0.025, 500)", |b| {
        b.iter(|| verdict_stats::dist::t_isf(black_box(0.025), 500.0))
    });
    p.bench_function("t_sf(2.1, 500)", |b| {
        b.iter(|| verdict_stats::dist::t_sf(black_box(2.1), 500.0))
    });
    p.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
