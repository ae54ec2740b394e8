//! Analyses per CPU-second of the benchmark experiment (4 variants × 3 metrics), measured
//! with the thread's on-CPU time from `/proc/thread-self/schedstat` (Linux), so that other
//! processes competing for the two cores do not distort the per-core figure the way they
//! distort criterion's wall-clock numbers.
//!
//! `cargo run --release -p verdict-stats --example throughput`

use serde_json::json;
use std::hint::black_box;
use verdict_stats::{analyze, AnalysisInput};

fn on_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

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

fn time(label: &str, n: u32, mut f: impl FnMut()) {
    let a = on_cpu_ns().unwrap_or(0);
    for _ in 0..n {
        f();
    }
    let b = on_cpu_ns().unwrap_or(0);
    println!("{label}: {:.0} ns", (b - a) as f64 / f64::from(n));
}

fn main() {
    if std::env::args().any(|a| a == "parts") {
        use verdict_stats::compare::{conversion, means, Counts, Moments, Settings};
        let s = Settings::default();
        let (c, t) = (
            Counts {
                users: 50_000.0,
                conversions: 5_000.0,
            },
            Counts {
                users: 50_210.0,
                conversions: 5_150.0,
            },
        );
        time("beta_binomial", 100_000, || {
            black_box(verdict_stats::bayes::beta_binomial(
                5000.0,
                50000.0,
                black_box(5150.0),
                50210.0,
            ));
        });
        time("conversion", 100_000, || {
            black_box(conversion(black_box(c), t, &s));
        });
        let (mc, mt) = (
            Moments::from_sums(50_000.0, 250_000.0, 50_000.0 * 425.0),
            Moments::from_sums(50_210.0, 256_071.0, 50_210.0 * 426.01),
        );
        time("means", 100_000, || {
            black_box(means(black_box(mc), mt, None, &s));
        });
        time("t_isf", 100_000, || {
            black_box(verdict_stats::dist::t_isf(black_box(0.025), 99_999.0));
        });
        time("t_sf", 100_000, || {
            black_box(verdict_stats::dist::t_sf(black_box(2.1), 99_999.0));
        });
        time("seq", 100_000, || {
            black_box(verdict_stats::sequential::confidence_sequence(
                black_box(0.01),
                0.004,
                100_000.0,
                0.05,
                5000.0,
            ));
        });
        let input = experiment();
        time("analyze", 100_000, || {
            black_box(analyze(black_box(&input)));
        });
        return;
    }
    let input = experiment();
    let n = 200_000;
    for _ in 0..10_000 {
        black_box(analyze(black_box(&input)));
    }
    let (cpu0, wall0) = (on_cpu_ns(), std::time::Instant::now());
    for _ in 0..n {
        black_box(analyze(black_box(&input)));
    }
    let wall = wall0.elapsed().as_secs_f64();
    match (cpu0, on_cpu_ns()) {
        (Some(a), Some(b)) => {
            let cpu = (b - a) as f64 * 1e-9;
            println!("{n} analyses: {:.2} µs per analysis on CPU, {:.0} analyses per CPU-second (wall {:.2} s)",
                cpu / n as f64 * 1e6, n as f64 / cpu, wall);
        }
        _ => println!(
            "{n} analyses: {:.0} per wall-clock second (no schedstat)",
            n as f64 / wall
        ),
    }
}
