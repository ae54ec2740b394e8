//! Assignment decisions per second: 2 and 4 variants, with and without a targeting
//! condition. The same workloads run in GrowthBook's JavaScript SDK via
//! `tools/growthbook-js/bench.js`; `scripts/bench-assign` runs both side by side.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Map, Value};
use std::hint::black_box;
use verdict_core::assign::{CompiledExperiment, UserContext};

const USERS: usize = 1000;

fn experiment(variants: usize, condition: bool) -> CompiledExperiment {
    let keys = (0..variants).map(|i| format!("v{i}")).collect();
    let mut e = CompiledExperiment::new("exp-bench", keys);
    if condition {
        let c = json!({"country": {"$in": ["TH", "US"]}, "age": {"$gte": 18}});
        e.condition = c.as_object().cloned().map(Into::into);
    }
    e
}

fn users() -> Vec<(String, Map<String, Value>)> {
    (0..USERS)
        .map(|i| {
            let country = ["TH", "US", "DE"][i % 3];
            let attrs = json!({"country": country, "age": 16 + (i % 50)});
            (
                format!("user-{i}"),
                attrs.as_object().cloned().unwrap_or_default(),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let users = users();
    let mut group = c.benchmark_group("assign");
    group.throughput(Throughput::Elements(USERS as u64));
    for variants in [2, 4] {
        for condition in [false, true] {
            let e = experiment(variants, condition);
            let id = format!(
                "{variants}v_{}",
                if condition { "condition" } else { "plain" }
            );
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    let mut inside = 0usize;
                    for (user, attrs) in &users {
                        let d = e.decide(&UserContext::new(Some(user), attrs));
                        inside += usize::from(d.in_experiment());
                    }
                    black_box(inside)
                })
            });
        }
    }
    // The batch fast path (no condition): the same users, decided together.
    let ids: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
    for variants in [2, 4] {
        let e = experiment(variants, false);
        let mut out = Vec::with_capacity(USERS);
        group.bench_function(
            BenchmarkId::from_parameter(format!("{variants}v_batch")),
            |b| {
                b.iter(|| {
                    e.decide_users(&ids, &mut out);
                    black_box(out.iter().filter(|d| d.in_experiment()).count())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
