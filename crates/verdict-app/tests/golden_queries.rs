//! Golden answers of the read side: `/results`, `/metrics` and `/timeline` (hourly and
//! daily) of one fixed log, byte for byte. Refactors of the read side (typed queries, the
//! metrics issue) must leave these files unchanged; a change in meaning shows as a diff.
//!
//! The log comes from the real command path (assignment, the builtin models, outcomes)
//! over a stepping clock; the only measured values, latencies, are replaced by figures
//! derived from the user, so the log is the same on every run. A missing golden file fails;
//! `VERDICT_UPDATE_GOLDEN=1 cargo test -p verdict-app --test golden_queries` writes them.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use verdict_app::codec;
use verdict_app::queries::{self, Bucket};
use verdict_app::readmodel::ReadModel;
use verdict_app::service::{
    Clock, CommandService, ConversionRequest, InteractionRequest, PredictRequest,
};
use verdict_core::Event;
use verdict_serve::Registry;
use verdict_store::{EventStore, MemoryStore};

/// Four minutes per reading, from a fixed instant: the traffic spans about a day.
#[derive(Debug)]
struct SteppingClock(AtomicI64);

impl Clock for SteppingClock {
    fn now_micros(&self) -> i64 {
        self.0.fetch_add(4 * 60 * 1_000_000, Ordering::Relaxed)
    }
}

/// A small deterministic generator (no global RNG).
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn fixed_log() -> ReadModel {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let clock = Arc::new(SteppingClock(AtomicI64::new(1_780_000_000_000_000)));
    let commands = CommandService::open(store.clone(), Registry::default(), clock)
        .await
        .unwrap();
    commands
        .create_experiment(
            json!({
                "experiment_id": "golden",
                "name": "golden answers",
                "variants": [
                    {"key": "control", "model": "builtin:a", "weight": 0.5},
                    {"key": "treatment", "model": "builtin:b", "weight": 0.3},
                    {"key": "flaky", "model": "builtin-failing:c", "weight": 0.2}
                ],
                "monitors": {"min_sample": 20}
            }),
            true,
        )
        .await
        .unwrap();
    let mut rng = Lcg(20);
    for i in 0..360 {
        let user = format!("user-{i}");
        let p = commands
            .predict(PredictRequest {
                experiment_id: "golden".into(),
                user_id: user.clone(),
                attributes: Default::default(),
                input: json!({"context": "home"}),
            })
            .await
            .unwrap();
        if rng.unit() < 0.4 {
            commands
                .interaction(InteractionRequest {
                    event_id: None,
                    experiment_id: "golden".into(),
                    user_id: user.clone(),
                    action: "click".into(),
                    item_id: Some("item-1".into()),
                    variant: None,
                    model_version: None,
                })
                .await
                .unwrap();
        }
        let rate = if p.variant == "treatment" { 0.3 } else { 0.2 };
        if rng.unit() < rate {
            commands
                .conversion(ConversionRequest {
                    event_id: None,
                    experiment_id: "golden".into(),
                    user_id: user,
                    conversion_type: "purchase".into(),
                    amount: (10.0 + 90.0 * rng.unit()).round(),
                    variant: None,
                    model_version: None,
                })
                .await
                .unwrap();
        }
    }
    // Fold the log with its measured latencies replaced by fixed ones.
    let mut model = ReadModel::default();
    for recorded in store.read_all(1, usize::MAX).await.unwrap() {
        let mut event = codec::decode(&recorded).unwrap();
        let fixed = 5.0 + (recorded.position % 97) as f64 / 4.0;
        match &mut event {
            Event::PredictionMade(p) => {
                p.latency_ms = fixed;
                p.model_ms = Some(fixed / 2.0);
            }
            Event::PredictionFailed(f) => f.latency_ms = fixed,
            _ => {}
        }
        model.apply(recorded.position, recorded.recorded_at, &event);
    }
    model
}

fn golden(name: &str, answer: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let text = format!("{}\n", serde_json::to_string_pretty(answer).unwrap());
    if std::env::var_os("VERDICT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; VERDICT_UPDATE_GOLDEN=1 writes it", path.display()));
    assert!(
        expected == text,
        "{name}: the answer differs from {} (VERDICT_UPDATE_GOLDEN=1 rewrites it after a deliberate change)\n--- got ---\n{text}",
        path.display()
    );
}

#[tokio::test]
async fn query_answers_of_a_fixed_log_are_unchanged() {
    let model = fixed_log().await;
    // The log is what the golden files describe: a guard against a generator that drifts.
    let view = &model.experiments["golden"];
    let users: u64 = view.variants.iter().map(|v| v.users).sum();
    assert_eq!(users, 360);
    golden("results", &queries::results(&model, "golden").unwrap());
    golden("metrics", &queries::metrics(&model, "golden").unwrap());
    golden(
        "timeline_hour",
        &queries::timeline(&model, "golden", Bucket::Hour).unwrap(),
    );
    golden(
        "timeline_day",
        &queries::timeline(&model, "golden", Bucket::Day).unwrap(),
    );
}
