//! A read model rebuilt from position zero (`verdict replay`) equals the one the live
//! projector built while the commands ran, and a restarted projector resumes from its
//! snapshot without double counting.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use verdict_app::projector::{self, CheckpointPolicy, Projections};
use verdict_app::service::{CommandService, ConversionRequest, PredictRequest, SystemClock};
use verdict_serve::Registry;
use verdict_store::{EventStore, MemoryStore};

#[tokio::test]
async fn replay_equals_the_live_projection_and_snapshots_resume() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let dir = std::env::temp_dir().join(format!("verdict-replay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("projections.json");
    let _ = std::fs::remove_file(&snapshot);
    let registry = Registry::default();
    let commands = CommandService::open(store.clone(), registry, Arc::new(SystemClock))
        .await
        .unwrap();
    let spec =
        json!({"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}});
    commands.create_experiment(spec, true).await.unwrap();

    let live = Projections::load(&snapshot).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let policy = CheckpointPolicy {
        every: Duration::from_millis(1),
        events: 50,
    };
    let task = tokio::spawn(projector::run(
        store.clone(),
        live.clone(),
        policy,
        verdict_app::health::Health::new(),
        rx,
    ));
    let mut last = 0;
    for i in 0..300 {
        let p = commands
            .predict(PredictRequest {
                experiment_id: "e".into(),
                user_id: format!("u{i}"),
                attributes: Default::default(),
                input: json!({}),
            })
            .await
            .unwrap();
        last = p.position;
        if i % 4 == 0 {
            let c = ConversionRequest {
                event_id: None,
                experiment_id: "e".into(),
                user_id: format!("u{i}"),
                conversion_type: "purchase".into(),
                amount: f64::from(i),
                variant: None,
                model_version: None,
            };
            last = commands.conversion(c).await.unwrap().position;
        }
    }
    assert!(live.wait_for(last, Duration::from_secs(10)).await);
    stop.send_replace(true);
    task.await.unwrap().unwrap();

    let mut reported = Vec::new();
    let rebuilt = projector::replay(store.as_ref(), |p, h| reported.push((p, h)))
        .await
        .unwrap();
    assert_eq!(rebuilt.position, last);
    assert_eq!(reported.last(), Some(&(last, last)));
    let value = |m: &verdict_app::readmodel::ReadModel| serde_json::to_value(m).unwrap();
    assert_eq!(value(&rebuilt), value(&*live.read().await));

    // The snapshot on disk carries its own checkpoint; loading it and following the
    // store again applies nothing twice.
    let resumed = Projections::load(&snapshot).unwrap();
    assert_eq!(resumed.position(), last);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(projector::run(
        store.clone(),
        resumed.clone(),
        CheckpointPolicy::default(),
        verdict_app::health::Health::new(),
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    assert_eq!(value(&*resumed.read().await), value(&rebuilt));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Many pages (the replay parses pages on several threads and applies them in order):
/// order-sensitive traffic (conversions before and after their user's exposure, repeat
/// exposures) and an undecodable event give the same model as applying event by event.
#[tokio::test]
async fn a_parallel_replay_of_many_pages_equals_applying_in_order() {
    use verdict_app::readmodel::ReadModel;
    use verdict_store::{EventData, ExpectedVersion};
    let store = MemoryStore::new();
    let definition = verdict_core::ExperimentSpec::from_json(
        json!({"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}}),
    )
    .unwrap()
    .validate()
    .unwrap();
    let created = verdict_app::codec::encode(
        &verdict_core::Event::ExperimentCreated(verdict_core::event::ExperimentCreated {
            definition,
        }),
        uuid::Uuid::now_v7(),
        0,
        &Default::default(),
    );
    let ev = |t: &str, v: u32, payload: String, at: i64| EventData {
        event_id: uuid::Uuid::now_v7(),
        event_type: t.to_owned(),
        schema_version: v,
        payload: payload.into_bytes().into(),
        metadata: Default::default(),
        recorded_at: at,
    };
    store
        .append(
            "experiment-e",
            ExpectedVersion::Any,
            vec![
                created,
                ev("ExperimentStarted", 1, r#"{"experiment_id":"e"}"#.into(), 0),
            ],
        )
        .await
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..40_000u64 {
        let user = format!("u{}", i % 7_001);
        let at = (i as i64) * 60_000_000;
        let variant = if i % 3 == 0 { "control" } else { "treatment" };
        batch.push(match i % 5 {
            0 | 1 => ev(
                "UserAssigned",
                1,
                json!({"experiment_id": "e", "user_id": user, "variant": variant, "model": "m",
                       "experiment_version": 2, "reason": "hashed"})
                .to_string(),
                at,
            ),
            2 => ev(
                "PredictionMade",
                1,
                json!({"experiment_id": "e", "user_id": user, "variant": variant, "model": "m",
                       "model_version": "1", "prediction_id": uuid::Uuid::nil(), "input": {"x": [1, 2]},
                       "output": {"items": [i]}, "latency_ms": (i % 97) as f64 / 3.0})
                .to_string(),
                at,
            ),
            3 => ev(
                "ConversionRecorded",
                1,
                json!({"experiment_id": "e", "user_id": user, "conversion_type": "purchase",
                       "amount": (i % 13) as f64})
                .to_string(),
                at,
            ),
            _ if i == 20_004 => ev("ConversionRecorded", 1, "{not json".into(), at),
            _ => ev(
                "UserInteracted",
                1,
                json!({"experiment_id": "e", "user_id": user, "action": "click"}).to_string(),
                at,
            ),
        });
        if batch.len() == 1000 {
            store
                .append(
                    "traffic-e",
                    ExpectedVersion::Any,
                    std::mem::take(&mut batch),
                )
                .await
                .unwrap();
        }
    }
    let head = store.head().await.unwrap();
    assert!(head > 4 * 8192, "several pages per parser");
    let mut sequential = ReadModel::default();
    for e in store.read_all(1, usize::MAX).await.unwrap() {
        if sequential
            .apply_stored(
                e.position,
                e.recorded_at,
                &e.event_type,
                e.schema_version,
                &e.payload,
            )
            .is_err()
        {
            sequential.skip_undecodable(e.position);
        }
    }
    let replayed = projector::replay(&store, |_, _| {}).await.unwrap();
    assert_eq!(replayed.position, head);
    // A replay also records which event its position holds (the snapshot's proof of
    // history); the fold alone does not.
    let last = store.read_all(head, 1).await.unwrap();
    assert_eq!(replayed.last_event_id, Some(last[0].event_id));
    sequential.last_event_id = replayed.last_event_id;
    assert_eq!(
        replayed.undecodable,
        1,
        "{:?}",
        replayed.experiments.keys().collect::<Vec<_>>()
    );
    let value = |m: &ReadModel| serde_json::to_value(m).unwrap();
    assert_eq!(value(&replayed), value(&sequential));
    let view = &replayed.experiments["e"];
    assert!(view.unattributed_conversions > 0 && view.variants[0].converted_users > 0);
}
