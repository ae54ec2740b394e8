//! Golden files: one stored envelope per event type and schema version, in
//! `tests/golden/<Type>.v<N>.json`. They are written once (run with
//! `VERDICT_WRITE_GOLDEN=1` to create missing ones; existing files are never touched)
//! and must decode forever; the current version must also re-encode byte-for-byte.

use serde_json::{json, Value};
use std::path::PathBuf;
use uuid::Uuid;
use verdict_core::event::*;
use verdict_core::{Envelope, Event, ExperimentSpec};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

/// A representative event of each current type.
fn samples() -> Vec<Event> {
    let definition = ExperimentSpec::from_json(json!({
        "experiment_id": "exp-001",
        "name": "recommendation-model-v2",
        "variants": [
            {"key": "control", "model": "rec-v1", "weight": 0.5},
            {"key": "treatment", "model": "rec-v2", "weight": 0.5}
        ],
        "coverage": 0.8,
        "hash_version": 2,
        "namespace": {"id": "homepage", "range": [0.0, 0.5]},
        "condition": {"country": {"$in": ["TH", "US"]}},
        "forced_variations": {"qa-user": "treatment"},
        "guardrail_metrics": ["error_rate"],
        "baseline_rate": 0.1,
        "planned_duration_days": 14.0
    }))
    .unwrap()
    .validate()
    .unwrap();
    let lc = |reason: Option<&str>| Lifecycle {
        experiment_id: "exp-001".into(),
        reason: reason.map(Into::into),
    };
    vec![
        Event::ExperimentCreated(ExperimentCreated { definition }),
        Event::ExperimentStarted(lc(None)),
        Event::ExperimentPaused(lc(Some("investigating latency"))),
        Event::ExperimentResumed(lc(None)),
        Event::TrafficChanged(TrafficChanged {
            experiment_id: "exp-001".into(),
            weights: Some([("control".to_owned(), 0.7), ("treatment".to_owned(), 0.3)].into()),
            coverage: Some(1.0),
            reason: Some("ramp".into()),
            evidence: None,
        }),
        Event::ExperimentStopped(ExperimentStopped {
            experiment_id: "exp-001".into(),
            reason: Some("error rate 3.2% > 1%".into()),
            winner: Some("control".into()),
            auto: true,
            cause: Some(id(99)),
        }),
        Event::UserAssigned(UserAssigned {
            experiment_id: "exp-001".into(),
            user_id: "user-123".into(),
            variant: "treatment".into(),
            model: "rec-v2".into(),
            bucket: Some(0.6123),
            experiment_version: 2,
            reason: "hashed".into(),
        }),
        Event::PredictionMade(PredictionMade {
            experiment_id: "exp-001".into(),
            user_id: "user-123".into(),
            variant: "treatment".into(),
            model: "rec-v2".into(),
            model_version: "rec-v2@3".into(),
            prediction_id: id(1),
            input: json!({"user_id": "user-123", "context": "homepage"}),
            output: json!({"items": [101, 205, 310]}),
            latency_ms: 45.25,
            model_ms: None,
            shadow: false,
            comparison: None,
        }),
        Event::PredictionFailed(PredictionFailed {
            experiment_id: "exp-001".into(),
            user_id: "user-124".into(),
            variant: "treatment".into(),
            model: "rec-v2".into(),
            prediction_id: id(2),
            error_kind: "timeout".into(),
            message: "no answer within 250 ms".into(),
            latency_ms: 250.0,
            shadow: false,
        }),
        Event::UserInteracted(UserInteracted {
            experiment_id: "exp-001".into(),
            user_id: "user-123".into(),
            action: "click".into(),
            item_id: Some("205".into()),
            variant: Some("treatment".into()),
        }),
        Event::ConversionRecorded(ConversionRecorded {
            experiment_id: "exp-001".into(),
            user_id: "user-123".into(),
            conversion_type: "purchase".into(),
            amount: 1500.0,
            variant: Some("treatment".into()),
        }),
        Event::AlertRaised(AlertRaised {
            alert_id: id(99),
            experiment_id: "exp-001".into(),
            monitor: "error_rate".into(),
            severity: "P1".into(),
            message: "treatment error rate 3.2% > 1%".into(),
            evidence: json!({"variant": "treatment", "errors": 32, "requests": 1000}),
        }),
        Event::AlertResolved(AlertResolved {
            alert_id: id(99),
            experiment_id: "exp-001".into(),
            monitor: "error_rate".into(),
            message: "error rate back under 1%".into(),
            evidence: json!({"errors": 0, "requests": 1000}),
        }),
    ]
}

/// The seed's own ExperimentCreated, schema version 1.
fn v1_samples() -> Vec<(&'static str, Value)> {
    vec![(
        "ExperimentCreated",
        json!({
            "experiment_id": "exp-001",
            "name": "recommendation-model-v2",
            "models": {"control": "rec-v1", "treatment": "rec-v2"},
            "traffic_split": {"control": 50, "treatment": 50},
            "start_date": "2025-11-18T09:00:00"
        }),
    )]
}

fn envelope(event_type: &str, version: u32, data: Value, n: u64) -> Envelope {
    Envelope {
        event_id: id(1000 + u128::from(n)),
        stream: if event_type.starts_with("Experiment") || event_type == "TrafficChanged" {
            "experiment-exp-001".into()
        } else {
            "traffic-exp-001".into()
        },
        stream_version: n,
        position: n,
        event_type: event_type.into(),
        schema_version: version,
        recorded_at: "2026-11-25T10:00:00Z".parse().unwrap(),
        data,
        metadata: Metadata {
            correlation_id: Some(id(7)),
            causation_id: None,
            extra: Default::default(),
        },
    }
}

fn write_missing() {
    if std::env::var_os("VERDICT_WRITE_GOLDEN").is_none() {
        return;
    }
    std::fs::create_dir_all(dir()).unwrap();
    let mut all: Vec<Envelope> = samples()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            envelope(
                e.event_type(),
                e.schema_version(),
                e.encode_data(),
                i as u64 + 1,
            )
        })
        .collect();
    all.extend(v1_samples().into_iter().map(|(t, d)| envelope(t, 1, d, 1)));
    for env in all {
        let path = dir().join(format!("{}.v{}.json", env.event_type, env.schema_version));
        if !path.exists() {
            std::fs::write(&path, serde_json::to_string_pretty(&env).unwrap() + "\n").unwrap();
        }
    }
}

fn read(path: &std::path::Path) -> Envelope {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_type_and_version_has_a_golden_file() {
    write_missing();
    for (t, v) in EVENT_TYPES {
        assert!(
            dir().join(format!("{t}.v{v}.json")).exists(),
            "missing golden file for {t} v{v}"
        );
    }
    for (t, _) in v1_samples() {
        assert!(
            dir().join(format!("{t}.v1.json")).exists(),
            "missing golden file for {t} v1"
        );
    }
}

#[test]
fn every_golden_file_decodes() {
    write_missing();
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let env = read(&path);
        let event = env
            .decode()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(event.event_type(), env.event_type);
        n += 1;
    }
    assert!(
        n > EVENT_TYPES.len(),
        "the current versions and at least one old one"
    );
}

#[test]
fn current_versions_reencode_identically() {
    write_missing();
    for (t, v) in EVENT_TYPES {
        let env = read(&dir().join(format!("{t}.v{v}.json")));
        let event = env.decode().unwrap();
        assert_eq!(
            event.encode_data(),
            env.data,
            "{t} v{v} no longer encodes as stored"
        );
    }
}

#[test]
fn the_v1_experiment_created_upcasts_to_what_the_api_would_create() {
    let old = read(&dir().join("ExperimentCreated.v1.json"));
    let Event::ExperimentCreated(c) = old.decode().unwrap() else {
        panic!()
    };
    let via_api = ExperimentSpec::from_json(v1_samples()[0].1.clone())
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(c.definition, via_api);
    assert_eq!(c.definition.variants[1].model, "rec-v2");
}

#[test]
fn the_direct_encoding_equals_the_value_encoding() {
    for e in samples() {
        assert_eq!(
            String::from_utf8(e.encode_data_vec()).unwrap(),
            serde_json::to_string(&e.encode_data()).unwrap(),
            "{}",
            e.event_type()
        );
    }
}
